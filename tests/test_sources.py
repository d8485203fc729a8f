"""Constants taken from papers and from the official NNabla example, checked against the
values those sources print (transcribed here from them), not against the code's own tables:
a typo in a table would otherwise be checked against itself.

Sources: the official example's README (the published files' top-1 errors), its
`normalize_config.py` (mean and std), its `cfg/*.yaml` recipes, its `args.py` defaults, its
`resize_by_ratio` and its networks' batch-norm momenta; the EfficientNet paper (Tan & Le,
2019, and its reference code's table for b8 and l2) for the compound scaling and B0's
stages; the ResNet, ResNeXt, SENet and MobileNet V1/V2/V3 papers for their stage tables."""
from __future__ import annotations

import pytest
from paths import REPO

from models import NORMALIZATIONS
from models.efficientnet import SCALINGS
from utils.recipe.config import load_config
from utils.weights.published import PUBLISHED

# The official README's results tables: file -> top-1 error (%).
OFFICIAL_TOP1_ERRORS = {
    "rn18-nhwc.h5": 29.42, "rn18-nhwc_mixup250.h5": 28.25,
    "rn34-nhwc.h5": 26.44, "rn34-nhwc_mixup250.h5": 24.73,
    "rn50-nchw.h5": 23.27, "rn50-nhwc.h5": 23.28, "rn50-nhwc_cos90.h5": 22.98,
    "rn50-nhwc_mixup250.h5": 21.57, "rn101-nhwc.h5": 21.89, "rn152-nhwc_cos90.h5": 21.06,
    "resnext50_nhwc.h5": 22.46, "resnext50_nhwc_cos90.h5": 22.41,
    "resnext50_nhwc_mixup250.h5": 20.98,
    "se_resnet50_nhwc.h5": 22.77, "se_resnet50_nhwc_cos90.h5": 22.58,
    "se_resnet50_nhwc_mixup250.h5": 21.19,
    "se_resnext50_nhwc.h5": 21.72, "se_resnext50_nhwc_cos90.h5": 21.53,
    "se_resnext50_nhwc_mixup250.h5": 20.08,
    "se_resnet50_by_author.h5": 22.42, "se_resnext50_by_author.h5": 20.98,
    "mbnv1_nchw_cos90.h5": 27.77, "mbnv1_nhwc_cos90.h5": 27.63,
    "mbnv2_nchw_cos90.h5": 28.06, "mbnv2_nhwc_cos90.h5": 28.32,
    "mbnv2_nhwc_mixup350.h5": 27.27,
    "mbnv3_large_nchw_cos90.v2.h5": 26.11, "mbnv3_large_nhwc_cos90.v2.h5": 26.09,
    "mbnv3_large_nhwc_mixup350.h5": 24.87,
    "mbnv3_small_nchw_cos90.v2.h5": 33.87, "mbnv3_small_nhwc_cos90.v2.h5": 33.49,
    "mbnv3_small_nhwc_mixup350.h5": 32.91,
    "efficientnet_b0_nhwc_cos340.h5": 23.76, "efficientnet_b0_nhwc_mixup350.h5": 23.73,
    "efficientnet_b1_nhwc_cos350.h5": 22.11, "efficientnet_b1_nhwc_mixup350.h5": 21.91,
    "efficientnet_b2_nhwc_cos350.h5": 21.27, "efficientnet_b2_nhwc_mixup340.h5": 20.92,
    "efficientnet_b3_nhwc_cos350.h5": 20.08, "efficientnet_b3_nhwc_mixup350.h5": 19.42,
}


def test_published_errors_are_the_official_readme_s():
    assert {name: w.top1_error for name, w in PUBLISHED.items()} == OFFICIAL_TOP1_ERRORS


def test_normalisations_are_the_official_presets():
    """`default`: ImageNet's RGB mean and std on the 0..1 scale, times 255; `senet_author`:
    the Caffe model's BGR mean (104, 117, 123) in RGB order, no division."""
    mean, std = NORMALIZATIONS["default"]
    assert mean == pytest.approx([255 * 0.485, 255 * 0.456, 255 * 0.406], abs=1e-9)
    assert std == pytest.approx([255 * 0.229, 255 * 0.224, 255 * 0.225], abs=1e-9)
    mean, std = NORMALIZATIONS["senet_author"]
    assert tuple(mean) == (123, 117, 104) and tuple(std) == (1, 1, 1)
    assert set(NORMALIZATIONS) == {"default", "senet_author"}


# (width, depth, resolution, dropout) of the compound scaling
PAPER_SCALINGS = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5), "b8": (2.2, 3.6, 672, 0.5),
    "l2": (4.3, 5.3, 800, 0.5),
}


def test_efficientnet_scalings_are_the_paper_s():
    assert {v: tuple(s) for v, s in SCALINGS.items()} == PAPER_SCALINGS


# The official recipes: weight decay, momentum, epochs, label smoothing, loss scaling, mixup,
# scheduler, base learning rate per example, warm-up epochs.
OFFICIAL_RECIPES = {
    "step90": (1e-4, 0.9, 90, 0.1, 256, 0, "EpochStep", 0.1 / 256, 5),
    "cos90": (2**-15, 0.875, 90, 0.1, 128, 0, "EpochCosine", 0.256 / 256, 16),
    "cos350": (2**-15, 0.875, 350, 0.1, 128, 0, "EpochCosine", 0.256 / 256, 16),
    "mixup90": (2**-15, 0.875, 90, 0.1, 128, 0.2, "EpochCosine", 0.256 / 256, 16),
    "mixup250": (2**-15, 0.875, 250, 0.1, 128, 0.2, "EpochCosine", 0.256 / 256, 16),
    "mixup350": (2**-15, 0.875, 350, 0.1, 128, 0.2, "EpochCosine", 0.256 / 256, 16),
    "finetune10": (2**-15, 0.875, 10, 0.1, 128, 0, "EpochCosine", 0.256 / 256, 0),
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_RECIPES))
def test_recipes_carry_the_official_values(name):
    config = load_config(REPO / "cfg" / f"{name}.yaml")
    schedule = config.lr_scheduler
    found = (config.weight_decay, config.momentum, config.epochs, config.label_smoothing,
             config.loss_scaling, config.mixup,
             schedule.type.replace("LearningRateScheduler", ""), schedule.args.base_lr,
             schedule.args.warmup_epochs)
    assert found == OFFICIAL_RECIPES[name]
    if name == "step90":
        assert (schedule.args.decay_at, schedule.args.decay_rate) == ((30, 60, 80), 0.1)
        assert schedule.args.legacy_warmup is True


# The official README's training command lines and args.py defaults (transcribed).
def test_command_line_defaults_are_the_official_ones():
    import infer
    import train
    import validation

    trained = train.parse_args(["-a", "resnet50"])
    assert (trained.batch_size, trained.val_interval, trained.model_save_interval,
            trained.spatial_size, trained.num_classes, trained.dali_num_threads,
            trained.dali_prefetch_queue, trained.train_dir, trained.train_list,
            trained.val_dir, trained.val_list, trained.type_config, trained.epochs) == \
        (128, 10, 10, (224, 224), 1000, 4, 2, "./", "train_label", "./", "val_label", "float",
         None)
    validated = validation.parse_args(["w.h5", "-a", "resnet50"])
    assert (validated.batch_size, validated.monitor_path, validated.norm_config,
            validated.val_list) == (100, "tmp.val", "default", "val_label")
    inferred = infer.parse_args(["x.jpg", "w.h5", "-a", "resnet50"])
    assert inferred.norm_config == "default"
    # (the nvJPEG padding is 64 MiB here; the official default was 64 bytes by a slip:
    # docs/differences.md)
    assert inferred.dali_nvjpeg_memory_padding == 64 << 20


def test_validation_resize_is_the_official_resize_by_ratio():
    """The official `resize_by_ratio`: 256/224 of the crop, rounded to an even size."""
    from utils.data.pipelines import resize_for_crop

    official = {224: 256, 240: 274, 260: 298, 300: 342, 380: 434, 456: 522, 528: 604,
                600: 686, 672: 768, 800: 914}
    assert {size: resize_for_crop(size) for size in official} == official


# ResNet (He et al. 2016, table 1), ResNeXt-50 32x4d (Xie et al. 2017, table 1), SENet
# (Hu et al. 2018: reduction 16), and the official example's Caffe-style variants:
# (blocks per stage, bottleneck, bottleneck width divisor, groups, SE, stride on the first
# 1x1, ceil-mode stem pooling).
PAPER_RESNETS = {
    "resnet18": ((2, 2, 2, 2), False, 4, 1, False, False, False),
    "resnet34": ((3, 4, 6, 3), False, 4, 1, False, False, False),
    "resnet50": ((3, 4, 6, 3), True, 4, 1, False, False, False),
    "resnet101": ((3, 4, 23, 3), True, 4, 1, False, False, False),
    "resnet152": ((3, 8, 36, 3), True, 4, 1, False, False, False),
    "resnext50": ((3, 4, 6, 3), True, 2, 32, False, False, True),
    "se_resnet50": ((3, 4, 6, 3), True, 4, 1, True, True, True),
    "se_resnext50": ((3, 4, 6, 3), True, 2, 32, True, False, True),
}


def test_resnet_stages_are_the_papers():
    from models import resnet

    assert {name: (c.depths, c.bottleneck, c.mid_divisor, c.groups, c.se, c.stride_on_reduce,
                   c.ceil_mode_pool) for name, c in resnet.CONFIGS.items()} == PAPER_RESNETS
    assert resnet.STAGE_CHANNELS == (64, 128, 256, 512)  # the 3x3 widths of ResNet-50
    assert resnet.BOTTLENECK_EXPANSION == 4 and resnet.SE_REDUCTION == 16
    # ResNeXt-50's first stage: 32 groups of 4 channels, a 128-wide grouped 3x3
    assert 256 // PAPER_RESNETS["resnext50"][2] == 32 * 4


# MobileNetV1 (Howard et al. 2017, table 1): the 13 depthwise-separable layers as
# (pointwise width, depthwise stride).
PAPER_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
    [(1024, 2), (1024, 1)]
# MobileNetV2 (Sandler et al. 2018, table 2): (t, c, n, s).
PAPER_V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
# MobileNetV3 (Howard et al. 2019, tables 1 and 2): columns exp size, kernel, #out, SE,
# NL (True: h-swish), stride.
PAPER_V3_LARGE = list(zip(
    (16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960),
    (3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5),
    (16, 24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112, 160, 160, 160),
    (False, False, False, True, True, True, False, False, False, False, True, True, True,
     True, True),
    (False,) * 6 + (True,) * 9,
    (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1)))
PAPER_V3_SMALL = list(zip(
    (16, 72, 88, 96, 240, 240, 120, 144, 288, 576, 576),
    (3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5),
    (16, 24, 24, 40, 40, 40, 48, 48, 96, 96, 96),
    (True, False, False, True, True, True, True, True, True, True, True),
    (False,) * 3 + (True,) * 8,
    (2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1)))
# EfficientNet-B0 (Tan & Le 2019, table 1): (expansion, channels, kernel, layers, stride).
PAPER_B0 = [(1, 16, 3, 1, 1), (6, 24, 3, 2, 2), (6, 40, 5, 2, 2), (6, 80, 3, 3, 2),
            (6, 112, 5, 3, 1), (6, 192, 5, 4, 2), (6, 320, 3, 1, 1)]


def test_mobile_network_tables_are_the_papers():
    from models import efficientnet, mobilenet

    assert [tuple(b) for b in mobilenet.V1_BLOCKS] == PAPER_V1
    assert [tuple(s) for s in mobilenet.V2_STAGES] == PAPER_V2
    assert [tuple(b) for b in mobilenet.V3_LARGE_BLOCKS] == PAPER_V3_LARGE
    assert [tuple(b) for b in mobilenet.V3_SMALL_BLOCKS] == PAPER_V3_SMALL
    assert [tuple(s) for s in efficientnet.B0_STAGES] == PAPER_B0
    # The official example's training constants of the mobile families: BN momentum 0.99,
    # dropout 0.2 before the MobileNetV2/V3 classifier, a fixed drop-connect rate of 0.2.
    assert (mobilenet.BN_DECAY, mobilenet.HEAD_DROPOUT) == (0.99, 0.2)
    assert (efficientnet.BN_DECAY, efficientnet.DROP_CONNECT_RATE) == (0.99, 0.2)


@pytest.mark.parametrize("arch, decay", [("resnet18", 0.9), ("se_resnext50", 0.9),
                                         ("mobilenet_v3_small", 0.99),
                                         ("efficientnet_b0", 0.99)])
def test_batch_norm_momentum_in_the_built_graph_is_the_official_one(arch, decay):
    """ResNets 0.9, the mobile families 0.99, read from every BN function of the graph."""
    import nnabla as nn

    from models import build_network

    nn.clear_parameters()
    logits, _ = build_network(nn.Variable((1, 3, 32, 32)), 10, arch, test=False)
    found = []

    def visit(function):
        if "BatchNormalization" in function.info.type_name:
            found.append(function.info.args["decay_rate"])

    logits.visit(visit)
    nn.clear_parameters()
    assert len(found) > 10 and found == pytest.approx([decay] * len(found))
