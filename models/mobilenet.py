"""MobileNet V1, V2 and V3 (large, small), named as in the published NNabla weight files.

The V2 and V3 blocks are `layers.inverted_residual`; the versions differ in their block
tables, activations and heads. Quirks of the published weights are kept on purpose, since
loading them depends on the exact parameter names and shapes: MobileNetV2's first block
lives under a doubled scope, MobileNetV3 squeezes to expanded // 4 channels without
rounding and gates with nnabla's `F.hard_sigmoid` (clip(0.2x + 0.5, 0, 1)), and its
`last-conv-2` has neither bias nor batch normalisation.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, Sequence, Tuple

import nnabla as nn
import nnabla.functions as F

from . import layers
from .registry import register

BN_DECAY = 0.99
HEAD_DROPOUT = 0.2
Output = Tuple[nn.Variable, Dict[str, nn.Variable]]
_conv_bn = partial(layers.conv_bn, decay_rate=BN_DECAY)

# MobileNetV1: (pointwise width, depthwise stride) of `conv-ds-1` .. `conv-ds-13`.
V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip

# MobileNetV2 stages: (expansion t, output width c, repeats n, stride s of the first block).
V2_STAGES = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)  # fmt: skip

# MobileNetV3 blocks `mbconv-000`, ...: (expanded width, kernel, output width, SE,
# hard-swish (else ReLU), stride). The input width is the previous block's output.
V3Block = Tuple[int, int, int, bool, bool, int]
V3_LARGE_BLOCKS: Sequence[V3Block] = (
    (16, 3, 16, False, False, 1), (64, 3, 24, False, False, 2), (72, 3, 24, False, False, 1),
    (72, 5, 40, True, False, 2), (120, 5, 40, True, False, 1), (120, 5, 40, True, False, 1),
    (240, 3, 80, False, True, 2), (200, 3, 80, False, True, 1), (184, 3, 80, False, True, 1),
    (184, 3, 80, False, True, 1), (480, 3, 112, True, True, 1), (672, 3, 112, True, True, 1),
    (672, 5, 160, True, True, 2), (960, 5, 160, True, True, 1), (960, 5, 160, True, True, 1),
)  # fmt: skip
V3_SMALL_BLOCKS: Sequence[V3Block] = (
    (16, 3, 16, True, False, 2), (72, 3, 24, False, False, 2), (88, 3, 24, False, False, 1),
    (96, 5, 40, True, True, 2), (240, 5, 40, True, True, 1), (240, 5, 40, True, True, 1),
    (120, 5, 48, True, True, 1), (144, 5, 48, True, True, 1), (288, 5, 96, True, True, 2),
    (576, 5, 96, True, True, 1), (576, 5, 96, True, True, 1),
)  # fmt: skip


def _pool_and_classify(x: nn.Variable, num_classes: int, channel_last: bool) -> nn.Variable:
    return layers.affine_classifier(layers.global_average_pool(x, channel_last), num_classes)


@register("mobilenet_v1", "mobilenet")
def mobilenet_v1(x: nn.Variable, num_classes: int, test: bool, channel_last: bool) -> Output:
    """Depthwise-separable convolutions with ReLU; the published model has no dropout."""
    h = _conv_bn(x, "first-conv", 32, 3, test, channel_last, stride=2, act=F.relu)
    for i, (width, stride) in enumerate(V1_BLOCKS, start=1):
        channels = layers.num_channels(h, channel_last)
        with nn.parameter_scope(f"conv-ds-{i}"):
            h = _conv_bn(
                h, "conv-dw", channels, 3, test, channel_last, stride, channels, act=F.relu
            )
            h = _conv_bn(h, "conv-pw", width, 1, test, channel_last, act=F.relu)
    return _pool_and_classify(h, num_classes, channel_last), {}


@register("mobilenet_v2", "mobilenet")
def mobilenet_v2(x: nn.Variable, num_classes: int, test: bool, channel_last: bool) -> Output:
    """Inverted residuals with ReLU6; dropout acts before the pooling, as published."""
    h = _conv_bn(x, "first-conv", 32, 3, test, channel_last, stride=2, act=layers.relu6)
    for i, (t, c, n, s) in enumerate(V2_STAGES):
        for j in range(n):
            scope = f"mbconv-{i:02d}-{j:02d}"
            if t == 1:
                scope = f"{scope}/{scope}"  # the published file nests this block twice
            expanded = layers.num_channels(h, channel_last) * t
            with nn.parameter_scope(scope):
                h = layers.inverted_residual(
                    h, c, expanded, 3, s if j == 0 else 1, layers.relu6, test, channel_last
                )
    h = _conv_bn(h, "last-conv", 1280, 1, test, channel_last, act=layers.relu6)
    h = layers.dropout(h, HEAD_DROPOUT, test)
    return _pool_and_classify(h, num_classes, channel_last), {}


def _mobilenet_v3(
    x: nn.Variable,
    num_classes: int,
    test: bool,
    channel_last: bool,
    blocks: Sequence[V3Block],
    head_widths: Tuple[int, int],
) -> Output:
    """The V3 body; large and small differ only in their block table and head widths."""
    h = _conv_bn(x, "first-conv", 16, 3, test, channel_last, stride=2, act=layers.hard_swish)
    for i, (expanded, kernel, out, se, hswish, stride) in enumerate(blocks):
        with nn.parameter_scope(f"mbconv-{i:03d}"):
            h = layers.inverted_residual(
                h,
                out,
                expanded,
                kernel,
                stride,
                layers.hard_swish if hswish else F.relu,
                test,
                channel_last,
                se_channels=expanded // 4 if se else 0,
                se_act=F.relu,
                se_gate=F.hard_sigmoid,
                decay_rate=BN_DECAY,
            )
    h = _conv_bn(h, "last-conv-1", head_widths[0], 1, test, channel_last, act=layers.hard_swish)
    h = layers.global_average_pool(h, channel_last)
    with nn.parameter_scope("last-conv-2"):
        h = layers.hard_swish(layers.conv(h, head_widths[1], 1, channel_last=channel_last))
    h = layers.dropout(h, HEAD_DROPOUT, test)
    return layers.affine_classifier(h, num_classes), {}


@register("mobilenet_v3_large", "mobilenet")
def mobilenet_v3_large(x: nn.Variable, num_classes: int, test: bool, channel_last: bool) -> Output:
    """MobileNetV3-Large as in the `.v2` files (no `conv-pw` where the expansion is 1)."""
    return _mobilenet_v3(x, num_classes, test, channel_last, V3_LARGE_BLOCKS, (960, 1280))


@register("mobilenet_v3_small", "mobilenet")
def mobilenet_v3_small(x: nn.Variable, num_classes: int, test: bool, channel_last: bool) -> Output:
    """MobileNetV3-Small as in the `.v2` files (no `conv-pw` where the expansion is 1)."""
    return _mobilenet_v3(x, num_classes, test, channel_last, V3_SMALL_BLOCKS, (576, 1024))
