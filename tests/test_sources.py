"""Constants taken from papers and from the official NNabla example, checked against the
values those sources print (transcribed here from them), not against the code's own tables:
a typo in a table would otherwise be checked against itself.

Sources: the official example's README (the published files' top-1 errors), its
`normalize_config.py` (mean and std) and its `cfg/*.yaml` recipes; the EfficientNet paper
(Tan & Le, 2019, and its reference code's table for b8 and l2) for the compound scaling."""
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
