"""What a run leaves on disk.

Series files, TensorBoard, PNG curves and batch grids, in one place per event.
"""
