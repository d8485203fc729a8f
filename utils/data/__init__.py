"""Input data.

Which images make each batch, the DALI pipelines, augmentation and image probing.
"""
