"""The recipes of published procedures (cfg/torchvision_new_recipe.yaml, cfg/rsb_a2.yaml):
they load with the values their comments cite, and a one-epoch demo run of each completes;
and the rule of the new loss keys."""
from __future__ import annotations

import pytest
from fault_fixtures import run
from marks import slow
from paths import CFG
from train_fixtures import train_args, values

from utils.recipe.config import ConfigError, load_config


def test_torchvision_new_recipe():
    config = load_config(CFG / "torchvision_new_recipe.yaml")
    schedule = config.lr_scheduler.args
    assert (config.epochs, config.weight_decay, config.momentum) == (600, 2e-5, 0.9)
    assert schedule.base_lr * 1024 == 0.5 and schedule.warmup_epochs == 5
    assert (config.label_smoothing, config.mixup, config.cutmix) == (0.1, 0.2, 1.0)
    assert config.augmentation.policy == "trivialaugment"
    augmentation = config.augmentation
    assert (augmentation.random_erasing, augmentation.erasing_area, augmentation.erasing_aspect,
            augmentation.repeated_augmentation, config.val_resize) == (
                0.1, (0.02, 0.33), (0.3, 3.3), 4, 232)
    assert config.solver.type == "momentum" and config.solver.exclude_from_decay == "batchnorm"
    assert config.loss == "cross_entropy"


def test_resnet_strikes_back_a2():
    config = load_config(CFG / "rsb_a2.yaml")
    assert (config.epochs, config.weight_decay, config.lr_scheduler.args.base_lr) == \
        (300, 0.02, 5e-3)
    assert config.solver.type == "lamb" and config.solver.exclude_from_decay == "1d"
    assert (config.loss, config.bce_target_threshold, config.label_smoothing) == \
        ("bce", 0.2, 0.0)
    assert (config.mixup, config.cutmix, config.drop_path_rate) == (0.1, 1.0, 0.05)
    assert (config.augmentation.policy, config.augmentation.n) == ("randaugment", 2)
    assert config.augmentation.repeated_augmentation == 3


def test_a_threshold_needs_the_bce_loss(tmp_path):
    text = (CFG / "rsb_a2.yaml").read_text().replace("loss: bce", "loss: cross_entropy")
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(ConfigError, match=r"r.yaml, line 20: 'bce_target_threshold' is a "
                                          r"setting of loss bce"):
        load_config(tmp_path / "r.yaml")


@slow
@pytest.mark.parametrize("recipe", ["torchvision_new_recipe", "rsb_a2"])
def test_one_epoch_of_each_recipe_on_the_demo_set(recipe, setup, tmp_path):
    monitor = tmp_path / "run"
    done = run(["train.py", *train_args(setup, monitor, "-v", 1, "--no-tensorboard",
                                        arch="resnet18", config=CFG / f"{recipe}.yaml",
                                        train_list=setup.small_list, epochs=1)],
               tmp_path, recipe)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(values(monitor, "Train-loss")) == 1
    assert (monitor / "param_001.h5").exists()
