"""Name -> network builder registry (one decorator per architecture)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import nnabla as nn

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


_ARCHITECTURES: Dict[str, Architecture] = {}


class UnknownArchitectureError(ValueError):
    def __init__(self, name: str):
        super().__init__(
            f"unknown architecture '{name}'; available: {', '.join(available_architectures())}"
        )


def register(
    name: str, family: str, resolution: int = 224, classifier_scope: str = "linear"
) -> Callable[[Builder], Builder]:
    """Register `builder` under `name`; the registration order is the order of --help lists."""

    def decorate(builder: Builder) -> Builder:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture '{name}' is registered twice")
        _ARCHITECTURES[name] = Architecture(name, family, builder, resolution, classifier_scope)
        return builder

    return decorate


def available_architectures() -> List[str]:
    return list(_ARCHITECTURES)


def get_architecture(name: str) -> Architecture:
    try:
        return _ARCHITECTURES[name.lower()]
    except KeyError:
        raise UnknownArchitectureError(name) from None
