"""Every ImageNet network of the collection, built by name in NCHW or NHWC layout.

Importing the family modules registers their architectures.
"""
from __future__ import annotations

from typing import Dict, Tuple

import nnabla as nn

from . import efficientnet, mobilenet, resnet  # noqa: F401  (registration side effect)
from .registry import (
    Architecture,
    UnknownArchitectureError,
    available_architectures,
    get_architecture,
)

__all__ = [
    "Architecture",
    "UnknownArchitectureError",
    "available_architectures",
    "build_network",
    "get_architecture",
]


def build_network(
    x: nn.Variable,
    num_classes: int = 1000,
    arch: str = "resnet50",
    test: bool = False,
    channel_last: bool = False,
) -> Tuple[nn.Variable, Dict[str, nn.Variable]]:
    """Build `arch` on input `x` (B, C, H, W), or (B, H, W, C) with `channel_last`.

    Returns the logits (B, num_classes) and a dict of hidden features (the ResNet family
    gives its stage outputs r0..r4). `test=True` uses batch-norm running statistics and
    disables dropout and drop-connect. C may be 3, or 4 for mixed-precision input.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    return get_architecture(arch).builder(x, num_classes, test, channel_last)
