"""Every architecture creates exactly the parameters of the published weight files.

The published names, order and shapes come from tests/data/param-spec. Parameter counts and
output shapes are pinned below for every architecture. Building a graph runs no forward
pass, so NHWC networks are checked on CPU too.
"""
import json

import nnabla as nn
import numpy as np
import pytest
from marks import marking_slow, slow
from paths import PARAM_SPEC_DIR

from models import available_architectures, build_network, get_architecture

ARCHS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50",
    "se_resnet50", "se_resnext50", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
    "mobilenet_v3_small", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6",
    "efficientnet_b7", "efficientnet_b8", "efficientnet_l2",
]  # fmt: skip

# arch: (tensors, values incl. BN statistics, trainable values), NCHW, 3 channels, 1000 classes.
COUNTS = {
    "resnet18": (102, 11699112, 11689512),
    "resnet34": (182, 21814696, 21797672),
    "resnet50": (267, 25610152, 25557032),
    "resnet101": (522, 44654504, 44549160),
    "resnet152": (777, 60344232, 60192808),
    "resnext50": (267, 25097128, 25028904),
    "se_resnet50": (331, 28141144, 28088024),
    "se_resnext50": (331, 27628120, 27559896),
    "mobilenet_v1": (137, 4253864, 4231976),
    "mobilenet_v2": (262, 3538984, 3504872),
    "mobilenet_v3_large": (265, 5504318, 5479918),
    "mobilenet_v3_small": (209, 2548326, 2536214),
    "efficientnet_b0": (311, 5330564, 5288548),
    "efficientnet_b1": (439, 7856232, 7794184),
    "efficientnet_b2": (439, 9177562, 9109994),
    "efficientnet_b3": (496, 12320528, 12233232),
    "efficientnet_b4": (610, 19466816, 19341616),
    "efficientnet_b5": (738, 30562520, 30389784),
    "efficientnet_b6": (852, 43265136, 43040704),
    "efficientnet_b7": (1037, 66658680, 66347960),
    "efficientnet_b8": (1151, 87793174, 87413142),
    "efficientnet_l2": (1654, 481399996, 480309308),
}
# Trainable parameters as published (1000 classes): exactly, by torchvision's model pages
# (`num_params`) for the networks NNabla's files share with it, ...
PUBLISHED_PARAMETERS = {
    "resnet18": 11689512, "resnet34": 21797672, "resnet50": 25557032,
    "resnet101": 44549160, "resnet152": 60192808, "resnext50": 25028904,
    "mobilenet_v2": 3504872,
    "efficientnet_b0": 5288548, "efficientnet_b1": 7794184, "efficientnet_b2": 9109994,
    "efficientnet_b3": 12233232, "efficientnet_b4": 19341616, "efficientnet_b5": 30389784,
    "efficientnet_b6": 43040704, "efficientnet_b7": 66347960,
}
# ... and in millions, as the papers round them: MobileNetV1 4.2 (Howard et al. 2017),
# MobileNetV3 5.4 and 2.5 (Howard et al. 2019; NNabla's SE widths are not rounded to 8,
# hence a little more), SE-ResNet-50 28.1 and SE-ResNeXt-50 27.6 (Hu et al. 2018),
# EfficientNet-L2 480 (Xie et al. 2020).
PAPER_MILLIONS = {
    "mobilenet_v1": 4.2, "mobilenet_v3_large": 5.4, "mobilenet_v3_small": 2.5,
    "se_resnet50": 28.1, "se_resnext50": 27.6, "efficientnet_l2": 480,
}


def test_the_pinned_counts_are_the_published_ones():
    """COUNTS (checked against the built networks below) against the published counts."""
    assert {a: COUNTS[a][2] for a in PUBLISHED_PARAMETERS} == PUBLISHED_PARAMETERS
    for arch, millions in PAPER_MILLIONS.items():
        assert COUNTS[arch][2] / 1e6 == pytest.approx(millions, rel=0.015), arch


RESOLUTIONS = {
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 260,
    "efficientnet_b3": 300, "efficientnet_b4": 380, "efficientnet_b5": 456,
    "efficientnet_b6": 528, "efficientnet_b7": 600, "efficientnet_b8": 672,
    "efficientnet_l2": 800,
}  # fmt: skip
RESNET_STAGE_CHANNELS = {"resnet18": (64, 64, 128, 256, 512), "resnet34": (64, 64, 128, 256, 512)}


def build_params(arch, channel_last, channels, size=32, test=True, num_classes=1000):
    """Build `arch` on a (1, C, size, size) input; return [(name, shape)] and the outputs."""
    shape = (1, size, size, channels) if channel_last else (1, channels, size, size)
    pred, hidden = build_network(nn.Variable(shape), num_classes, arch, test, channel_last)
    params = [(k, list(v.shape)) for k, v in nn.get_parameters(grad_only=False).items()]
    return params, pred, hidden


def test_registry_lists_every_architecture_in_order():
    assert available_architectures() == ARCHS


def test_unknown_architecture_lists_the_available_names():
    with pytest.raises(ValueError) as err:
        get_architecture("resnet51")
    message = str(err.value)
    assert "resnet51" in message
    for name in ARCHS:
        assert name in message


@pytest.mark.parametrize("arch", ARCHS)
def test_native_resolution(arch):
    assert get_architecture(arch).resolution == RESOLUTIONS.get(arch, 224)


SLOW_SPECS = ("efficientnet_b6", "efficientnet_b7", "efficientnet_b8", "efficientnet_l2",
              "resnet152")


@pytest.mark.parametrize("arch, layout", [
    pytest.param(arch, layout, marks=[slow] if arch in SLOW_SPECS else [])
    for arch in ARCHS for layout in ("nchw3", "nhwc4")
    # EfficientNet-L2's NHWC file: 22 s of building 481M parameters twice, for the same
    # layout rule that B0-B8's NHWC files check
    if (arch, layout) != ("efficientnet_l2", "nhwc4")])
def test_parameters_match_published_spec(arch, layout):
    """In the NCHW 3-channel layout, COUNTS too: EfficientNet-L2 (481M parameters, seconds to
    build) is counted here only, from the same build."""
    spec_file = PARAM_SPEC_DIR / f"{arch}_{layout}.json"
    expected = [(name, shape) for name, shape in json.loads(spec_file.read_text())]
    channel_last = layout == "nhwc4"
    # The training graph creates the parameters; the inference graph must reuse them all.
    train_params, _, _ = build_params(arch, channel_last, 4 if channel_last else 3, test=False)
    test_params, _, _ = build_params(arch, channel_last, 4 if channel_last else 3, test=True)
    assert test_params == train_params
    names = [n for n, _ in train_params]
    expected_names = [n for n, _ in expected]
    for i, (got, want) in enumerate(zip(train_params, expected)):
        assert got == want, f"parameter #{i}: got {got}, published {want}"
    assert names == expected_names
    if layout == "nchw3":
        params = nn.get_parameters(grad_only=False)
        assert count_values(params, nn.get_parameters(grad_only=True)) == COUNTS[arch]


def count_values(params, trainable):
    """(tensors, values incl. BN statistics, trainable values), as COUNTS lists them."""
    return (len(params), sum(int(np.prod(v.shape)) for v in params.values()),
            sum(int(np.prod(v.shape)) for v in trainable.values()))


@pytest.mark.parametrize("arch", marking_slow([a for a in ARCHS if a != "efficientnet_l2"],
                                              ("efficientnet_b7", "efficientnet_b8",
                                               "resnet152")))
def test_parameter_counts_and_output_shape(arch):
    """Checked at the native input size, with a 3-channel NCHW input (EfficientNet-L2's
    counts: in test_parameters_match_published_spec, at 32x32)."""
    size = get_architecture(arch).resolution
    _, pred, hidden = build_params(arch, False, 3, size=size)
    params = nn.get_parameters(grad_only=False)
    assert count_values(params, nn.get_parameters(grad_only=True)) == COUNTS[arch]
    assert pred.shape == (1, 1000)
    if get_architecture(arch).family == "resnet":
        widths = RESNET_STAGE_CHANNELS.get(arch, (64, 256, 512, 1024, 2048))
        sizes = (56, 56, 28, 14, 7)
        assert {k: v.shape for k, v in hidden.items()} == {
            f"r{i}": (1, c, s, s) for i, (c, s) in enumerate(zip(widths, sizes))
        }
    else:
        assert hidden == {}


@pytest.mark.parametrize("arch", ["resnet50", "mobilenet_v3_small", "efficientnet_b0"])
@pytest.mark.parametrize("channel_last", [False, True])
def test_any_number_of_classes(arch, channel_last):
    _, pred, _ = build_params(arch, channel_last, 4 if channel_last else 3, num_classes=37)
    assert pred.shape == (1, 37)
    scope = get_architecture(arch).classifier_scope
    head = [v.shape for k, v in nn.get_parameters().items() if k.startswith(scope + "/")]
    assert head[-1] == (37,)


def test_register_records_every_fact_of_an_architecture(monkeypatch):
    """The facts the data pipeline asks for are given where the network is registered."""
    from models import registry

    monkeypatch.setattr(registry, "_ARCHITECTURES", dict(registry._ARCHITECTURES))

    @registry.register("tiny_test_net", "test", resolution=96, classifier_scope="head",
                       norm="senet_author", crop_pct=0.95)
    def tiny(x, num_classes, test, channel_last):
        raise AssertionError("not built here")

    arch = get_architecture("tiny_test_net")
    assert (arch.resolution, arch.classifier_scope, arch.norm, arch.crop_pct) == \
        (96, "head", "senet_author", 0.95)
    assert arch.builder is tiny
