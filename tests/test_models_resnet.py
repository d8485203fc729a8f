"""Behaviour of the ResNet family on CPU: forward passes, batch-norm modes, strides, layouts.

Small inputs keep the forward passes cheap; NHWC graphs are only built, because CPU NNabla
cannot run channel-last convolutions.
"""
import math

import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest
from marks import marking_slow

from models import build_network, get_architecture

RESNETS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50",
    "se_resnet50", "se_resnext50",
]  # fmt: skip


def _build(arch, shape, test, num_classes=10, channel_last=False, seed=0):
    nn.seed(seed)
    x = nn.Variable(shape)
    pred, hidden = build_network(x, num_classes, arch, test, channel_last)
    return x, pred, hidden


def _images(shape, seed=1):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _bn_statistics():
    return {
        k: v.d.copy()
        for k, v in nn.get_parameters(grad_only=False).items()
        if k.endswith("/bn/mean") or k.endswith("/bn/var")
    }


def _function_args(output, type_name, weight_name=None):
    """Arguments of every `type_name` function in the graph (only those fed `weight_name`)."""
    weight = nn.get_parameters()[weight_name] if weight_name else None
    found = []

    def visit(f):
        if f.info.type_name == type_name and (weight is None or f.inputs[1] == weight):
            found.append(f.info.args)

    output.visit(visit)
    return found


@pytest.mark.parametrize("arch", marking_slow(RESNETS, ["resnet152"]))
def test_forward_gives_finite_logits(arch):
    x, pred, _ = _build(arch, (2, 3, 32, 32), test=False, num_classes=7)
    x.d = _images(x.shape)
    pred.forward(clear_buffer=True)
    assert pred.shape == (2, 7)
    assert np.all(np.isfinite(pred.d))
    assert np.abs(pred.d).max() > 0


def test_registry_entries():
    for arch in RESNETS:
        entry = get_architecture(arch)
        assert (entry.family, entry.resolution, entry.classifier_scope) == ("resnet", 224, "fc")


def _outputs_before_and_after_changing_sample_1(arch, test):
    x, pred, _ = _build(arch, (2, 3, 32, 32), test=test)
    images = _images(x.shape)
    x.d = images
    pred.forward()
    first = pred.d.copy()
    images[1] = _images(images[1].shape, seed=2)
    x.d = images
    pred.forward()
    return first, pred.d.copy()


@pytest.mark.parametrize("arch", ["resnet18", "se_resnet50"])
def test_inference_treats_samples_independently(arch):
    before, after = _outputs_before_and_after_changing_sample_1(arch, test=True)
    np.testing.assert_allclose(after[0], before[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after[1], before[1])


@pytest.mark.parametrize("arch", ["resnet18", "se_resnet50"])
def test_training_normalises_with_batch_statistics(arch):
    before, after = _outputs_before_and_after_changing_sample_1(arch, test=False)
    assert not np.allclose(after[0], before[0], rtol=1e-3, atol=1e-3)


def test_inference_leaves_running_statistics_unchanged():
    x, pred, _ = _build("resnet18", (2, 3, 32, 32), test=True)
    x.d = _images(x.shape)
    before = _bn_statistics()
    assert len(before) == 2 * 20  # conv1, 16 block convolutions, 3 shortcut projections
    pred.forward()
    for name, value in _bn_statistics().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


@pytest.mark.parametrize("arch", ["resnet18", "se_resnet50"])
def test_training_updates_running_statistics_with_decay_0_9(arch):
    x, pred, _ = _build(arch, (2, 3, 32, 32), test=False)
    x.d = _images(x.shape)
    initial = _bn_statistics()
    pred.forward()
    once = _bn_statistics()
    for name, value in once.items():
        assert not np.array_equal(value, initial[name]), f"{name} was not updated"
    pred.forward()
    twice = _bn_statistics()
    # Same batch twice: the running mean goes 0 -> 0.1 m -> 0.19 m, the variance 1 + 0.1 (v - 1)
    # -> 1 + 0.19 (v - 1).
    mean1, mean2 = once["conv1/bn/mean"], twice["conv1/bn/mean"]
    np.testing.assert_allclose(mean2, 1.9 * mean1, rtol=1e-4, atol=1e-6)
    var1, var2 = once["conv1/bn/var"] - 1.0, twice["conv1/bn/var"] - 1.0
    np.testing.assert_allclose(var2, 1.9 * var1, rtol=1e-4, atol=1e-5)


def test_backward_gives_finite_gradients_for_every_trainable_parameter():
    x, pred, _ = _build("se_resnet50", (2, 3, 32, 32), test=False)
    x.d = _images(x.shape)
    label = nn.Variable((2, 1))
    label.d = [[3], [8]]
    loss = F.mean(F.softmax_cross_entropy(pred, label))
    params = nn.get_parameters()
    for p in params.values():
        p.grad.zero()
    loss.forward()
    loss.backward()
    assert np.isfinite(loss.d)
    for name, p in params.items():
        assert np.all(np.isfinite(p.g)), name
        assert np.abs(p.g).max() > 0, f"{name} gets no gradient"


@pytest.mark.parametrize(
    "arch, widths",
    [
        ("resnet18", (64, 64, 128, 256, 512)),
        ("resnet50", (64, 256, 512, 1024, 2048)),
        ("se_resnext50", (64, 256, 512, 1024, 2048)),
    ],
)
def test_hidden_stage_outputs(arch, widths):
    _, _, hidden = _build(arch, (2, 3, 64, 64), test=True)
    sizes = (16, 16, 8, 4, 2)
    assert {k: v.shape for k, v in hidden.items()} == {
        f"r{i}": (2, c, s, s) for i, (c, s) in enumerate(zip(widths, sizes))
    }


# arch: (main-branch convolution that strides, groups of the 3x3 convolutions, stem pool pad)
BLOCK_LAYOUTS = {
    "resnet18": ("basicblock1", 1, 1),
    "resnet50": ("bottleneck2", 1, 1),
    "resnext50": ("bottleneck2", 32, 0),
    "se_resnet50": ("bottleneck1", 1, 0),
    "se_resnext50": ("bottleneck2", 32, 0),
}


@pytest.mark.parametrize("arch", sorted(BLOCK_LAYOUTS))
def test_stride_position_groups_and_stem_pooling(arch):
    """Checked on the graph's functions in the first block of res2, which downsamples."""
    strided, groups, pool_pad = BLOCK_LAYOUTS[arch]
    _, pred, _ = _build(arch, (1, 3, 32, 32), test=True)
    block = "res2/layer1/"
    weights = {
        k[len(block) : -len("/conv/W")]: v.shape
        for k, v in nn.get_parameters().items()
        if k.startswith(block) and k.endswith("/conv/W") and "/se/" not in k
    }
    assert len(weights) == (3 if arch == "resnet18" else 4)  # main branch + projection
    for scope, shape in weights.items():
        [args] = _function_args(pred, "Convolution", f"{block}{scope}/conv/W")
        stride = 2 if scope == strided or scope.endswith("_s/shortcut_conv") else 1
        group = groups if shape[2] == 3 else 1
        assert (tuple(args["stride"]), args["group"]) == ((stride, stride), group), scope
    [pool] = _function_args(pred, "MaxPooling")
    assert tuple(pool["pad"]) == (pool_pad, pool_pad)
    assert pool["ignore_border"] == (pool_pad == 1)  # Caffe ceil mode keeps partial windows


@pytest.mark.parametrize("arch", ["resnet18", "resnext50", "se_resnet50"])
def test_channel_last_graph_with_four_input_channels(arch):
    _, pred, hidden = _build(arch, (2, 64, 64, 4), test=False, num_classes=5, channel_last=True)
    assert pred.shape == (2, 5)
    params = nn.get_parameters(grad_only=False)
    assert params["conv1/conv/W"].shape == (64, 7, 7, 4)
    assert params["conv1/bn/mean"].shape == (1, 1, 1, 64)
    assert hidden["r0"].shape == (2, 16, 16, 64)
    assert hidden["r4"].shape[:3] == (2, 2, 2)


def test_classifier_initialisation():
    _build("resnet18", (1, 3, 32, 32), test=True, num_classes=37)
    params = nn.get_parameters()
    bound = 1.0 / math.sqrt(512)
    for name in ("fc/fc/conv/W", "fc/fc/conv/b"):
        value = params[name].d
        assert np.abs(value).max() <= bound, name
        assert value.std() > 0.4 * bound, name  # uniform: std = bound / sqrt(3)
