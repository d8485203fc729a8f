"""Evaluation.

The one evaluation loop, losses and metrics, evaluation sets and per-class tallies.
"""
