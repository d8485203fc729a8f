"""ResNet, ResNeXt and SE-ResNe(X)t: one configurable residual network for eight architectures.

Scope names, creation order and shapes reproduce the published weight files, so that
`nn.load_parameters` reads them into these graphs. NNabla lists parameters in the order their
scopes were first entered, which is why a block builds its main branch before its shortcut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Tuple

import nnabla as nn
import nnabla.functions as F
import nnabla.initializer as I
import nnabla.parametric_functions as PF

from . import layers
from .registry import register

STAGE_CHANNELS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
SE_REDUCTION = 16


@dataclass(frozen=True)
class ResNetConfig:
    """What distinguishes the members of the family."""

    depths: Tuple[int, int, int, int]  # blocks per stage
    bottleneck: bool = True  # 1x1-3x3-1x1 blocks (else two 3x3 convolutions)
    mid_divisor: int = 4  # bottleneck width = block output channels // mid_divisor
    groups: int = 1  # groups of the bottleneck 3x3 convolution (ResNeXt: 32)
    se: bool = False  # squeeze-and-excitation before the residual addition
    stride_on_reduce: bool = False  # stride on the first 1x1 (Caffe SE-ResNet), not the 3x3
    ceil_mode_pool: bool = False  # Caffe-style stem pooling: no padding, partial windows kept


CONFIGS: Dict[str, ResNetConfig] = {
    "resnet18": ResNetConfig((2, 2, 2, 2), bottleneck=False),
    "resnet34": ResNetConfig((3, 4, 6, 3), bottleneck=False),
    "resnet50": ResNetConfig((3, 4, 6, 3)),
    "resnet101": ResNetConfig((3, 4, 23, 3)),
    "resnet152": ResNetConfig((3, 8, 36, 3)),
    "resnext50": ResNetConfig((3, 4, 6, 3), mid_divisor=2, groups=32, ceil_mode_pool=True),
    "se_resnet50": ResNetConfig((3, 4, 6, 3), se=True, stride_on_reduce=True, ceil_mode_pool=True),
    "se_resnext50": ResNetConfig(
        (3, 4, 6, 3), mid_divisor=2, groups=32, se=True, ceil_mode_pool=True
    ),
}


def _conv_bn(
    x: nn.Variable,
    scope: str,
    outmaps: int,
    kernel: int,
    stride: int,
    test: bool,
    channel_last: bool,
    group: int = 1,
    relu: bool = True,
) -> nn.Variable:
    """`<scope>/conv` then `<scope>/bn`, the BN fused with the ReLU when one follows."""
    with nn.parameter_scope(scope):
        h = layers.conv(x, outmaps, kernel, stride, group=group, channel_last=channel_last)
        return layers.batch_norm(h, test, channel_last, fused_relu=relu)


def _block_units(
    out_channels: int, stride: int, config: ResNetConfig
) -> Tuple[str, Tuple[Tuple[int, int, int, int], ...]]:
    """Scope prefix and (kernel, channels, stride, groups) of each convolution of the branch."""
    if not config.bottleneck:
        return "basicblock", ((3, out_channels, stride, 1), (3, out_channels, 1, 1))
    mid = out_channels // config.mid_divisor
    reduce_stride, spatial_stride = (stride, 1) if config.stride_on_reduce else (1, stride)
    return "bottleneck", (
        (1, mid, reduce_stride, 1),
        (3, mid, spatial_stride, config.groups),
        (1, out_channels, 1, 1),
    )


def _shortcut(
    x: nn.Variable, scope: str, out_channels: int, stride: int, test: bool, channel_last: bool
) -> nn.Variable:
    """Identity, or a strided 1x1 projection + BN ('type B') where the shape changes."""
    if layers.num_channels(x, channel_last) == out_channels and stride == 1:
        return x
    with nn.parameter_scope(scope):
        return _conv_bn(x, "shortcut_conv", out_channels, 1, stride, test, channel_last, relu=False)


def block_drop_rates(depths: Tuple[int, ...], drop_path_rate: float) -> List[float]:
    """Stochastic depth's drop rate of each residual block in build order: linear from 0 at
    the first block to `drop_path_rate` at the last (timm's ResNet rule)."""
    blocks = sum(depths)
    return [drop_path_rate * i / max(blocks - 1, 1) for i in range(blocks)]


def residual_block(
    x: nn.Variable,
    out_channels: int,
    stride: int,
    config: ResNetConfig,
    test: bool,
    channel_last: bool,
    drop_rate: float = 0.0,
) -> nn.Variable:
    """One residual block, built inside the caller's `resN/layerM` scope; in training its
    branch is dropped per sample with `drop_rate` (stochastic depth, `layers.drop_path`)."""
    dropping = drop_rate > 0 and not test
    prefix, units = _block_units(out_channels, stride, config)
    h = x
    for i, (kernel, channels, s, group) in enumerate(units[:-1], start=1):
        h = _conv_bn(h, f"{prefix}{i}", channels, kernel, s, test, channel_last, group)

    # The last conv enters its scope before the shortcut's (the published order); its BN
    # joins that scope afterwards, once the residual it adds exists.
    last = f"{prefix}{len(units)}"
    kernel, channels, s, group = units[-1]
    with nn.parameter_scope(last):
        h = layers.conv(h, channels, kernel, s, group=group, channel_last=channel_last)
    if config.se:
        with nn.parameter_scope(last):
            h = layers.batch_norm(h, test, channel_last)
        with nn.parameter_scope("se"):
            h = layers.squeeze_excite(
                h, out_channels // SE_REDUCTION, channel_last, F.relu, F.sigmoid
            )
        residual = _shortcut(x, f"{prefix}_s", out_channels, stride, test, channel_last)
        return F.relu(layers.drop_path(h, drop_rate, test) + residual)
    residual = _shortcut(x, f"{prefix}_s", out_channels, stride, test, channel_last)
    with nn.parameter_scope(last):
        if dropping:  # the branch alone is dropped: the BN cannot fuse the addition
            h = layers.batch_norm(h, test, channel_last)
            return F.relu(layers.drop_path(h, drop_rate, test) + residual)
        return layers.batch_norm(h, test, channel_last, residual=residual, fused_relu=True)


def _stem(x: nn.Variable, config: ResNetConfig, test: bool, channel_last: bool) -> nn.Variable:
    """7x7/2 conv + BN + ReLU, then 3x3/2 max pooling: 224 -> 56 either way of pooling."""
    h = _conv_bn(x, "conv1", STAGE_CHANNELS[0], 7, 2, test, channel_last)
    if config.ceil_mode_pool:
        return F.max_pooling(h, (3, 3), (2, 2), ignore_border=False, channel_last=channel_last)
    return F.max_pooling(h, (3, 3), (2, 2), pad=(1, 1), channel_last=channel_last)


def _classifier(x: nn.Variable, num_classes: int, channel_last: bool) -> nn.Variable:
    """Global average pool and a biased 1x1 conv (`fc/fc/conv`), uniform(+-1/sqrt(fan_in))."""
    h = layers.global_average_pool(x, channel_last)
    bound = 1.0 / math.sqrt(layers.num_channels(h, channel_last))
    init = I.UniformInitializer((-bound, bound))
    with nn.parameter_scope("fc"):
        h = PF.convolution(
            h, num_classes, (1, 1), w_init=init, b_init=init, channel_last=channel_last, name="fc"
        )
    return F.reshape(h, (h.shape[0], num_classes))


def resnet(
    x: nn.Variable, num_classes: int, config: ResNetConfig, test: bool, channel_last: bool,
    drop_path_rate: float = 0.0,
) -> Tuple[nn.Variable, Dict[str, nn.Variable]]:
    """Any family member; hidden `r0` is the pooled stem output, `r1`..`r4` the stage outputs.
    `drop_path_rate`: stochastic depth's rate at the last block (see `block_drop_rates`)."""
    expansion = BOTTLENECK_EXPANSION if config.bottleneck else 1
    rates = iter(block_drop_rates(config.depths, drop_path_rate))
    h = _stem(x, config, test, channel_last)
    hidden = {"r0": h}
    for stage, (width, depth) in enumerate(zip(STAGE_CHANNELS, config.depths), start=1):
        for block in range(1, depth + 1):
            stride = 2 if stage > 1 and block == 1 else 1
            with nn.parameter_scope(f"res{stage}/layer{block}"):
                h = residual_block(h, width * expansion, stride, config, test, channel_last,
                                   next(rates))
        hidden[f"r{stage}"] = h
    return _classifier(h, num_classes, channel_last), hidden


def _register(name: str, config: ResNetConfig) -> None:
    """Register `config` under `name` with the registry's fixed builder signature."""
    def build(
        x: nn.Variable, num_classes: int, test: bool, channel_last: bool,
        drop_path_rate: float = 0.0,
    ) -> Tuple[nn.Variable, Dict[str, nn.Variable]]:
        return resnet(x, num_classes, config, test, channel_last, drop_path_rate)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"{name} ({config})."
    register(name, family="resnet", resolution=224, classifier_scope="fc")(build)


for _name, _config in CONFIGS.items():
    _register(_name, _config)
