"""Name -> network builder registry (one decorator per architecture), with each network's
preprocessing facts: native resolution, input normalisation and validation crop ratio, as
timm registers a model's pretrained configuration beside it. The data pipeline and the
scripts read them from here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import nnabla as nn

# Pixel-scale (0..255) RGB mean and std of each normalisation preset.
NORMALIZATIONS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "default": (
        tuple(255 * v for v in (0.485, 0.456, 0.406)),
        tuple(255 * v for v in (0.229, 0.224, 0.225)),
    ),
    # The SENet authors' Caffe weights: BGR mean (104, 117, 123) in RGB order, no std.
    "senet_author": ((123.0, 117.0, 104.0), (1.0, 1.0, 1.0)),
}
# Validation resizes the shorter side to size / crop_pct, then takes the centre crop of the
# input size (the official 256 -> 224).
DEFAULT_CROP_PCT = 224 / 256

# A builder maps (input, num_classes, test, channel_last) to (logits (B, K), hidden features).
Builder = Callable[[nn.Variable, int, bool, bool], Tuple[nn.Variable, Dict[str, nn.Variable]]]


@dataclass(frozen=True)
class Architecture:
    """What the scripts need to know about a network besides how to build it."""

    name: str
    family: str
    builder: Builder
    resolution: int
    classifier_scope: str  # parameter-name prefix of the final classifier (replaced by fine-tuning)
    norm: str = "default"  # the key of NORMALIZATIONS the official recipes train with
    crop_pct: float = DEFAULT_CROP_PCT


_ARCHITECTURES: Dict[str, Architecture] = {}


class UnknownArchitectureError(ValueError):
    def __init__(self, name: str):
        super().__init__(
            f"unknown architecture '{name}'; available: {', '.join(available_architectures())}"
        )


def register(
    name: str, family: str, resolution: int = 224, classifier_scope: str = "linear",
    norm: str = "default", crop_pct: float = DEFAULT_CROP_PCT,
) -> Callable[[Builder], Builder]:
    """Register `builder` under `name` with its facts (see `Architecture`); the registration
    order is the order of --help lists."""

    def decorate(builder: Builder) -> Builder:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture '{name}' is registered twice")
        _ARCHITECTURES[name] = Architecture(name, family, builder, resolution, classifier_scope,
                                            norm, crop_pct)
        return builder

    return decorate


def available_architectures() -> List[str]:
    return list(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    try:
        return _ARCHITECTURES[name.lower()]
    except KeyError:
        raise UnknownArchitectureError(name) from None
