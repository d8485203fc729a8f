"""A training run.

Its spec, graph and resumable state, checkpoints, weight EMA, batch mixing and
batch-norm recompute.
"""
