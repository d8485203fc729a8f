"""Behaviour of the MobileNet and EfficientNet families on CPU.

Forward passes use small inputs (any spatial size must work, not only the native one); NHWC
graphs are only built, because CPU NNabla cannot run channel-last convolutions.
"""
import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from models import build_network, layers
from models.efficientnet import SCALINGS, round_filters

MOBILE = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"]


def _build(arch, shape, test, num_classes=10, channel_last=False, seed=0):
    nn.seed(seed)
    np.random.seed(seed)
    x = nn.Variable(shape)
    pred, hidden = build_network(x, num_classes, arch, test, channel_last)
    return x, pred, hidden


def _images(shape, seed=1):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def _forward_twice(pred):
    pred.forward()
    first = pred.d.copy()
    pred.forward()
    return first, pred.d.copy()


def _functions(output, type_name):
    found = []
    output.visit(lambda f: found.append(f) if f.info.type_name == type_name else None)
    return found


@pytest.mark.parametrize(
    "arch, shape",
    [(a, (2, 3, 32, 32)) for a in MOBILE + ["efficientnet_b0"]]
    + [("efficientnet_b1", (2, 3, 16, 16))],
)
def test_forward_gives_finite_logits(arch, shape):
    x, pred, hidden = _build(arch, shape, test=False, num_classes=7)
    x.d = _images(shape)
    pred.forward(clear_buffer=True)
    assert pred.shape == (2, 7)
    assert hidden == {}
    assert np.all(np.isfinite(pred.d))
    assert np.abs(pred.d).max() > 0


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0"])
def test_dropout_acts_in_training_only(arch):
    x, pred, _ = _build(arch, (2, 3, 32, 32), test=True)
    x.d = _images(x.shape)
    first, second = _forward_twice(pred)
    np.testing.assert_array_equal(first, second)

    # Same parameters, training graph: dropout (and EfficientNet's drop-connect) resample.
    train_pred, _ = build_network(x, 10, arch, test=False)
    first, second = _forward_twice(train_pred)
    assert not np.allclose(first, second)


def test_mobilenet_v1_has_no_dropout():
    x, pred, _ = _build("mobilenet_v1", (2, 3, 32, 32), test=False)
    x.d = _images(x.shape)
    first, second = _forward_twice(pred)
    np.testing.assert_array_equal(first, second)
    assert not _functions(pred, "Dropout")


@pytest.mark.parametrize("arch, se_blocks", [("mobilenet_v3_large", 8), ("mobilenet_v3_small", 9)])
def test_mobilenet_v3_se_gate_is_nnabla_hard_sigmoid(arch, se_blocks):
    """The published weights were trained with clip(0.2x + 0.5, 0, 1), not relu6(x + 3) / 6."""
    x, pred, _ = _build(arch, (1, 3, 32, 32), test=True)
    gates = _functions(pred, "HardSigmoid")
    assert len(gates) == se_blocks
    assert not _functions(pred, "Sigmoid")

    # Drive one gate with known pre-activations: zero fc2 weights leave only its bias.
    params = nn.get_parameters()
    scope = "mbconv-003/squeeze-and-excite/fc2/conv"
    bias = np.linspace(-4.0, 4.0, params[f"{scope}/b"].shape[0]).astype(np.float32)
    params[f"{scope}/W"].d = 0.0
    params[f"{scope}/b"].d = bias
    x.d = _images(x.shape)
    pred.forward()
    expected = np.clip(0.2 * bias + 0.5, 0.0, 1.0)
    driven = [g for g in gates if np.array_equal(g.inputs[0].d.reshape(-1), bias)]
    assert len(driven) == 1
    np.testing.assert_allclose(driven[0].outputs[0].d.reshape(-1), expected, atol=1e-6)
    assert expected.min() == 0.0 and expected.max() == 1.0


def test_hard_swish_values():
    x = nn.Variable.from_numpy_array(np.array([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 4.0]))
    y = layers.hard_swish(x)
    y.forward()
    np.testing.assert_allclose(y.d, [0.0, 0.0, -1 / 3, 0.0, 2 / 3, 3.0, 4.0], atol=1e-6)


@pytest.mark.parametrize("stride, out_channels", [(1, 8), (2, 8), (1, 16)])
def test_inverted_residual_shortcut_only_when_shape_is_kept(stride, out_channels):
    """With the projection's BN zeroed, a residual block is the identity, others give 0."""
    x = nn.Variable.from_numpy_array(_images((2, 8, 6, 6)))
    y = layers.inverted_residual(x, out_channels, 48, 3, stride, layers.relu6, test=True)
    for name, p in nn.get_parameters(grad_only=False).items():
        if name.startswith("conv-pw-linear/bn/") and name.split("/")[-1] in ("beta", "gamma"):
            p.d = 0.0
    y.forward()
    if stride == 1 and out_channels == 8:
        np.testing.assert_allclose(y.d, x.d, atol=1e-6)
    else:
        assert y.shape != x.shape
        np.testing.assert_allclose(y.d, 0.0, atol=1e-6)


def test_inverted_residual_skips_expansion_at_factor_one():
    x = nn.Variable((1, 16, 8, 8))
    layers.inverted_residual(x, 16, 16, 3, 1, F.relu, test=True, se_channels=4)
    scopes = {name.split("/")[0] for name in nn.get_parameters()}
    assert scopes == {"conv-dw", "squeeze-and-excite", "conv-pw-linear"}


def test_efficientnet_width_rounding():
    stem_head = {v: (round_filters(32, s.width), round_filters(1280, s.width))
                 for v, s in SCALINGS.items()}  # fmt: skip
    assert stem_head == {
        "b0": (32, 1280), "b1": (32, 1280), "b2": (32, 1408), "b3": (40, 1536),
        "b4": (48, 1792), "b5": (48, 2048), "b6": (56, 2304), "b7": (64, 2560),
        "b8": (72, 2816), "l2": (136, 5504),
    }  # fmt: skip
    widths = [round_filters(c, SCALINGS["b3"].width) for c in (16, 24, 40, 80, 112, 192, 320)]
    assert widths == [24, 32, 48, 96, 136, 232, 384]


@pytest.mark.parametrize("arch", MOBILE + ["efficientnet_b0"])
def test_nhwc_four_channel_graph_builds(arch):
    _, pred, _ = _build(arch, (2, 32, 32, 4), test=False, num_classes=5, channel_last=True)
    assert pred.shape == (2, 5)
    first = next(iter(nn.get_parameters().values()))
    assert first.shape[-1] == 4
