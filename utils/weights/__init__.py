"""Weight files.

Checked reading and writing, layout conversion, the published files and their download,
a network's size.
"""
