"""Layer helpers shared by every family, written once for both memory layouts.

Parameter scopes follow the published weight files: a convolution creates `<scope>/conv/W`
(and `/b`), a batch normalisation `<scope>/bn/{beta,gamma,mean,var}`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import nnabla.parametric_functions as PF

IntPair = Union[int, Tuple[int, int]]
Activation = Callable[[nn.Variable], nn.Variable]


def _pair(v: IntPair) -> Tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def channel_axis(channel_last: bool) -> int:
    return 3 if channel_last else 1


def num_channels(x: nn.Variable, channel_last: bool) -> int:
    return x.shape[channel_axis(channel_last)]


def spatial_shape(x: nn.Variable, channel_last: bool) -> Tuple[int, int]:
    return tuple(x.shape[1:3]) if channel_last else tuple(x.shape[2:4])


def conv(
    x: nn.Variable,
    outmaps: int,
    kernel: IntPair,
    stride: IntPair = 1,
    group: int = 1,
    channel_last: bool = False,
    with_bias: bool = False,
    pad: Optional[IntPair] = None,
) -> nn.Variable:
    """Convolution with 'same' padding and He-normal initialisation (fan-in of all inputs)."""
    kh, kw = _pair(kernel)
    in_channels = num_channels(x, channel_last)
    pad = ((kh - 1) // 2, (kw - 1) // 2) if pad is None else _pair(pad)
    w_init = I.NormalInitializer(math.sqrt(2.0 / (kh * kw * in_channels)))
    return PF.convolution(
        x,
        outmaps,
        (kh, kw),
        pad=pad,
        stride=_pair(stride),
        group=group,
        channel_last=channel_last,
        w_init=w_init,
        with_bias=with_bias,
    )


def batch_norm(
    x: nn.Variable,
    test: bool,
    channel_last: bool = False,
    decay_rate: float = 0.9,
    residual: Optional[nn.Variable] = None,
    fused_relu: bool = False,
) -> nn.Variable:
    """Batch normalisation; with `fused_relu`, one fused BN (+ residual add) + ReLU kernel."""
    axes = [channel_axis(channel_last)]
    if fused_relu:
        return PF.fused_batch_normalization(
            x, residual, axes=axes, decay_rate=decay_rate, batch_stat=not test
        )
    if residual is not None:
        raise ValueError("a residual is only fused together with the ReLU")
    return PF.batch_normalization(x, axes=axes, decay_rate=decay_rate, batch_stat=not test)


def global_average_pool(x: nn.Variable, channel_last: bool = False) -> nn.Variable:
    """Mean over the spatial axes, keeping them as 1x1 (B, C, 1, 1) or (B, 1, 1, C)."""
    return F.average_pooling(x, spatial_shape(x, channel_last), channel_last=channel_last)


def relu6(x: nn.Variable) -> nn.Variable:
    return F.clip_by_value(x, 0.0, 6.0)


def hard_swish(x: nn.Variable) -> nn.Variable:
    """x * relu6(x + 3) / 6 (MobileNetV3)."""
    return x * F.clip_by_value(x + 3.0, 0.0, 6.0) / 6.0


def swish(x: nn.Variable) -> nn.Variable:
    return x * F.sigmoid(x)


# The official MobileNet and EfficientNet classifiers start from N(0, 0.01) weights, zero bias.
CLASSIFIER_INIT_STD = 0.01


def affine_classifier(x: nn.Variable, num_classes: int) -> nn.Variable:
    """Flatten then `linear/affine/{W,b}`, the head of the MobileNet and EfficientNet files."""
    with nn.parameter_scope("linear"):
        return PF.affine(x, num_classes, w_init=I.NormalInitializer(CLASSIFIER_INIT_STD),
                         b_init=I.ConstantInitializer(0.0))


def squeeze_excite(
    x: nn.Variable,
    mid_channels: int,
    channel_last: bool,
    inner_act,
    gate_act,
) -> nn.Variable:
    """Squeeze-and-excitation: global pool, 1x1 conv `fc1` + act, 1x1 conv `fc2` + gate, scale.

    Called inside the block's SE scope (`se` or `squeeze-and-excite`).
    """
    channels = num_channels(x, channel_last)
    s = global_average_pool(x, channel_last)
    with nn.parameter_scope("fc1"):
        s = inner_act(conv(s, mid_channels, 1, channel_last=channel_last, with_bias=True))
    with nn.parameter_scope("fc2"):
        s = gate_act(conv(s, channels, 1, channel_last=channel_last, with_bias=True))
    return x * s


def drop_path(x: nn.Variable, drop_rate: float, test: bool) -> nn.Variable:
    """Stochastic depth ('drop-connect'): zero a whole sample's branch, rescale the kept ones."""
    if test or drop_rate <= 0.0:
        return x
    keep = 1.0 - drop_rate
    mask_shape: Sequence[int] = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = F.floor(F.rand(0.0, 1.0, shape=mask_shape) + keep)
    return x * mask / keep


def conv_bn(
    x: nn.Variable,
    scope: str,
    outmaps: int,
    kernel: IntPair,
    test: bool,
    channel_last: bool = False,
    stride: IntPair = 1,
    group: int = 1,
    act: Optional[Activation] = None,
    decay_rate: float = 0.9,
) -> nn.Variable:
    """Convolution (no bias) + batch normalisation [+ activation] under `scope`.

    This is the `<scope>/conv/W`, `<scope>/bn/*` unit the MobileNet and EfficientNet files
    are made of; `group == outmaps` gives a depthwise convolution.
    """
    with nn.parameter_scope(scope):
        h = conv(x, outmaps, kernel, stride, group, channel_last)
        h = batch_norm(h, test, channel_last, decay_rate)
    return h if act is None else act(h)


def inverted_residual(
    x: nn.Variable,
    out_channels: int,
    expanded_channels: int,
    kernel: int,
    stride: int,
    act: Activation,
    test: bool,
    channel_last: bool = False,
    se_channels: int = 0,
    se_act: Activation = F.relu,
    se_gate: Activation = F.sigmoid,
    decay_rate: float = 0.99,
    drop_rate: float = 0.0,
) -> nn.Variable:
    """Inverted-residual ('MBConv') block of MobileNetV2/V3 and EfficientNet.

    `conv-pw` 1x1 expansion (absent when `expanded_channels` equals the input width, i.e.
    expansion factor 1), `conv-dw` kxk depthwise with the stride, optional
    `squeeze-and-excite` (when `se_channels` > 0), `conv-pw-linear` 1x1 projection without
    activation. The identity shortcut is added iff stride 1 and the width is unchanged; the
    branch is then dropped per sample with `drop_rate` in training (drop-connect).
    Called inside the block's scope; the parameter order is the one of the published files.
    """
    in_channels = num_channels(x, channel_last)
    h = x
    if expanded_channels != in_channels:
        h = conv_bn(
            h, "conv-pw", expanded_channels, 1, test, channel_last, act=act, decay_rate=decay_rate
        )
    h = conv_bn(
        h,
        "conv-dw",
        expanded_channels,
        kernel,
        test,
        channel_last,
        stride=stride,
        group=expanded_channels,
        act=act,
        decay_rate=decay_rate,
    )
    if se_channels > 0:
        with nn.parameter_scope("squeeze-and-excite"):
            h = squeeze_excite(h, se_channels, channel_last, se_act, se_gate)
    h = conv_bn(h, "conv-pw-linear", out_channels, 1, test, channel_last, decay_rate=decay_rate)
    if stride == 1 and in_channels == out_channels:
        h = x + drop_path(h, drop_rate, test)
    return h


def dropout(x: nn.Variable, p: float, test: bool) -> nn.Variable:
    """Dropout in training only (identity at test time or for p == 0)."""
    return x if test or p <= 0.0 else F.dropout(x, p)
