"""Inference-only models.

NNP and ONNX export, each file checked, and ONNX Runtime as the CPU's fast path.
"""
