"""The command line.

The flag groups the scripts share, and the shape of every --help.
"""
