"""Every ImageNet network of the collection, built by name in NCHW or NHWC layout.

Importing the family modules registers their architectures.
"""
from __future__ import annotations

import importlib
from typing import Dict, Tuple

import nnabla as nn

from .registry import (
    DEFAULT_CROP_PCT,
    NORMALIZATIONS,
    Architecture,
    UnknownArchitectureError,
    available_architectures,
    get_architecture,
)

# Registration order is the order users see: ResNet family, MobileNets, EfficientNets.
for _family in ("resnet", "mobilenet", "efficientnet"):
    importlib.import_module(f"{__name__}.{_family}")

__all__ = [
    "DEFAULT_CROP_PCT",
    "NORMALIZATIONS",
    "Architecture",
    "UnknownArchitectureError",
    "available_architectures",
    "build_network",
    "get_architecture",
    "supports_stochastic_depth",
]


def build_network(
    x: nn.Variable,
    num_classes: int = 1000,
    arch: str = "resnet50",
    test: bool = False,
    channel_last: bool = False,
    drop_path_rate: float = 0.0,
) -> Tuple[nn.Variable, Dict[str, nn.Variable]]:
    """Build `arch` on input `x` (B, C, H, W), or (B, H, W, C) with `channel_last`.

    Returns the logits (B, num_classes) and a dict of hidden features (the ResNet family
    gives its stage outputs r0..r4). `test=True` uses batch-norm running statistics and
    disables dropout and drop-connect. C may be 3, or 4 for mixed-precision input.
    `drop_path_rate` > 0: stochastic depth in training, up to that rate at the last residual
    block (the ResNet family only, `supports_stochastic_depth`).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    architecture = get_architecture(arch)
    if drop_path_rate <= 0:
        return architecture.builder(x, num_classes, test, channel_last)
    if not supports_stochastic_depth(arch):
        raise ValueError(f"stochastic depth is built for the ResNet family, not {arch}")
    return architecture.builder(x, num_classes, test, channel_last,
                                drop_path_rate=drop_path_rate)


def supports_stochastic_depth(arch: str) -> bool:
    """Whether `build_network` takes a `drop_path_rate` for `arch`."""
    return get_architecture(arch).family == "resnet"
