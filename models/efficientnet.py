"""EfficientNet B0-B8 and L2, named as in the published NNabla weight files.

One baseline (B0) table, scaled by width (channels, rounded to multiples of 8) and depth
(block repeats, rounded up). The blocks are `layers.inverted_residual` with swish. Kept as
in the published weights: the stem `first-conv` has batch normalisation but no activation,
and every block has squeeze-and-excitation to (block input channels) // 4. The native input
size is only the registry's `resolution`; any size builds.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Dict, NamedTuple, Tuple

import nnabla as nn
import nnabla.functions as F

from . import layers
from .registry import register

BN_DECAY = 0.99
# Every residual block drops its branch with this probability in training (the official
# rule; the TensorFlow reference instead grows the rate linearly over the blocks).
DROP_CONNECT_RATE = 0.2
Output = Tuple[nn.Variable, Dict[str, nn.Variable]]
_conv_bn = partial(layers.conv_bn, decay_rate=BN_DECAY)

# B0 stages: (expansion t, output width c, kernel k, repeats n, stride s of the first block).
B0_STAGES = (
    (1, 16, 3, 1, 1), (6, 24, 3, 2, 2), (6, 40, 5, 2, 2), (6, 80, 3, 3, 2),
    (6, 112, 5, 3, 1), (6, 192, 5, 4, 2), (6, 320, 3, 1, 1),
)  # fmt: skip


class Scaling(NamedTuple):
    width: float
    depth: float
    resolution: int
    dropout: float


SCALINGS = {
    "b0": Scaling(1.0, 1.0, 224, 0.2),
    "b1": Scaling(1.0, 1.1, 240, 0.2),
    "b2": Scaling(1.1, 1.2, 260, 0.3),
    "b3": Scaling(1.2, 1.4, 300, 0.3),
    "b4": Scaling(1.4, 1.8, 380, 0.4),
    "b5": Scaling(1.6, 2.2, 456, 0.4),
    "b6": Scaling(1.8, 2.6, 528, 0.5),
    "b7": Scaling(2.0, 3.1, 600, 0.5),
    "b8": Scaling(2.2, 3.6, 672, 0.5),
    "l2": Scaling(4.3, 5.3, 800, 0.5),
}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a width and round it to a multiple of `divisor`, never more than 10% down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count, rounding up so that no stage shrinks."""
    return int(math.ceil(repeats * depth))


def efficientnet(
    x: nn.Variable, num_classes: int, test: bool, channel_last: bool, scaling: Scaling
) -> Output:
    """Build one scaled EfficientNet; the stage/block scopes are `mbconv-<stage>-<block>`."""
    h = _conv_bn(x, "first-conv", round_filters(32, scaling.width), 3, test, channel_last, stride=2)
    stages = [
        (t, round_filters(c, scaling.width), k, round_repeats(n, scaling.depth), s)
        for t, c, k, n, s in B0_STAGES
    ]
    for i, (t, width, kernel, repeats, stride) in enumerate(stages):
        for j in range(repeats):
            in_channels = layers.num_channels(h, channel_last)
            with nn.parameter_scope(f"mbconv-{i:02d}-{j:02d}"):
                h = layers.inverted_residual(
                    h,
                    width,
                    in_channels * t,
                    kernel,
                    stride if j == 0 else 1,
                    layers.swish,
                    test,
                    channel_last,
                    se_channels=in_channels // 4,
                    se_act=layers.swish,
                    se_gate=F.sigmoid,
                    decay_rate=BN_DECAY,
                    drop_rate=DROP_CONNECT_RATE,
                )
    head_width = round_filters(1280, scaling.width)
    h = _conv_bn(h, "last-conv", head_width, 1, test, channel_last, act=layers.swish)
    h = layers.dropout(h, scaling.dropout, test)
    h = layers.global_average_pool(h, channel_last)
    return layers.affine_classifier(h, num_classes), {}


def _register(variant: str) -> None:
    scaling = SCALINGS[variant]

    def build(x: nn.Variable, num_classes: int, test: bool, channel_last: bool) -> Output:
        return efficientnet(x, num_classes, test, channel_last, scaling)

    build.__name__ = build.__qualname__ = f"efficientnet_{variant}"
    build.__doc__ = f"EfficientNet-{variant.upper()} (native input {scaling.resolution})."
    register(f"efficientnet_{variant}", "efficientnet", scaling.resolution, "linear")(build)


for _variant in SCALINGS:
    _register(_variant)
