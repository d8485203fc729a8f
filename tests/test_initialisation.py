"""The initial distributions of the official builders, and EfficientNet's drop-connect rule.

Classifiers: the ResNet family's `fc` 1x1 convolution draws weight and bias from
uniform(+-1/sqrt(C)); the MobileNets' and EfficientNets' `linear/affine` weight from
N(0, 0.01) with a zero bias. Convolutions are He-normal (std sqrt(2 / (k*k*C_in))). In
training every EfficientNet residual block keeps its branch with probability 0.8.
Graphs are built, not run.
"""
from __future__ import annotations

import math

import nnabla as nn
import numpy as np
import pytest
from marks import marking_slow

from models import available_architectures, build_network, get_architecture

AFFINE_FAMILIES = ("mobilenet", "efficientnet")
ONE_PER_FAMILY = ("resnet50", "se_resnext50", "mobilenet_v1", "mobilenet_v2",
                  "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0",
                  "efficientnet_b3")


def build(arch: str, test: bool = True, size: int = 32) -> nn.Variable:
    nn.seed(0)
    x = nn.Variable((2, 3, size, size))
    logits, _ = build_network(x, 1000, arch, test=test)
    return logits


def classifier(arch: str):
    params = nn.get_parameters(grad_only=False)
    scope = get_architecture(arch).classifier_scope + "/"
    weight = next(v.d for k, v in params.items() if k.startswith(scope) and k.endswith("/W"))
    bias = next(v.d for k, v in params.items() if k.startswith(scope) and k.endswith("/b"))
    return weight, bias


@pytest.mark.parametrize("arch", ONE_PER_FAMILY)
def test_classifier_initial_distribution(arch):
    build(arch)
    weight, bias = classifier(arch)
    if get_architecture(arch).family in AFFINE_FAMILIES:
        assert weight.std() == pytest.approx(0.01, rel=0.02)  # ~1e6 draws: 0.2 % noise
        assert abs(weight.mean()) < 1e-4
        assert (bias == 0).all()
    else:
        fan_in = weight.size // 1000
        bound = 1 / math.sqrt(fan_in)
        for values in (weight, bias):
            assert np.abs(values).max() <= bound
        assert weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform
        assert bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.2)  # 1000 draws


def test_convolutions_are_he_normal():
    build("mobilenet_v2")
    w = nn.get_parameters()["mbconv-01-00/conv-pw/conv/W"].d  # (96, 16, 1, 1)
    assert w.std() == pytest.approx(math.sqrt(2 / 16), rel=0.1)


def drop_connect_keeps(logits: nn.Variable):
    """The keep probability of every drop-connect in the graph: floor(rand + keep) / keep."""
    keeps = []

    def visit(f):
        if f.info.type_name == "AddScalar" and f.inputs[0].parent is not None and \
                f.inputs[0].parent.info.type_name == "Rand":
            keeps.append(f.info.args["val"])

    logits.visit(visit)
    return keeps


@pytest.mark.parametrize("arch", marking_slow(
    [a for a in available_architectures() if a.startswith("efficientnet")],
    [f"efficientnet_b{i}" for i in range(3, 9)] + ["efficientnet_l2"]))
def test_every_efficientnet_residual_block_keeps_its_branch_with_probability_0_8(arch):
    logits = build(arch, test=False)
    keeps = drop_connect_keeps(logits)
    blocks = sorted({k.split("/")[0] for k in nn.get_parameters() if k.startswith("mbconv-")})
    stages = [int(b.split("-")[1]) for b in blocks]
    # the first block of each stage changes width or stride; the others add their input
    assert len(keeps) == len(blocks) - len(set(stages))
    assert keeps == [pytest.approx(0.8)] * len(keeps)
    assert drop_connect_keeps(build(arch, test=True)) == []
