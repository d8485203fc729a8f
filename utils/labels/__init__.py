"""Class ids of images.

List and csv files, the ImageNet-1k facts, class-folder trees, and where a dataset's
labels come from.
"""
