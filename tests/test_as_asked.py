"""What was asked for is what runs: a name is read whole, a file name that a list cannot hold
is refused, and a recipe is checked against the run it drives (refused where it cannot be
meant, warned of once at the start where it may be)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_fixtures import class_tree
from paths import REPO

import create_input_files
from utils.labels.file_list import read_id_csv
from utils.process.errors import USER_ERROR_STATUS
from utils.process.run import run
from utils.recipe.config import ConfigError, load_config, recipe_warnings


def test_a_name_with_an_unquoted_comma_is_read_whole(tmp_path):
    """`0,bag, large` became 'bag': the name is the whole rest of the line."""
    labels = tmp_path / "labels.csv"
    labels.write_text('0,bag, large\n1,"coat, long"\n2,shirt\n')
    assert read_id_csv(str(labels)) == ["bag, large", "coat, long", "shirt"]


def test_a_file_name_with_a_line_break_is_refused_at_the_scan(tmp_path, capsys):
    """It was written into a list that cannot be read back."""
    class_tree(str(tmp_path / "train"), ["cat", "dog"], 2)
    odd = tmp_path / "train" / "dog" / "two\nlines.JPEG"
    shutil.copy(tmp_path / "train" / "dog" / "dog_0.JPEG", odd)
    status = run(lambda: create_input_files.main(
        ["-T", str(tmp_path / "train"), "-o", str(tmp_path / "out"), "--no-progress"]))
    assert status == USER_ERROR_STATUS
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == (f"error: {str(odd)!r}: a file name with a line break cannot be "
                         "written to a list file; rename the file"), lines
    assert not (tmp_path / "out" / "train_label").exists()


def write_recipe(tmp_path: Path, extra: str, epochs: int = 10) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "weight_decay: 1.0e-4\nmomentum: 0.9\n"
        f"epochs: {epochs}\nlabel_smoothing: 0.1\nloss_scaling: 128\nmixup: 0\n"
        "lr_scheduler:\n  type: EpochCosineLearningRateScheduler\n"
        "  args: {base_lr: 0.001, warmup_epochs: 2}\n" + extra)
    return path


@pytest.mark.parametrize("policy, key", [("autoaugment", "n: 3"), ("trivialaugment", "m: 20"),
                                         ("none", "n: 4")])
def test_a_policy_setting_the_policy_ignores_is_refused(tmp_path, policy, key):
    recipe = write_recipe(tmp_path, f"augmentation:\n  policy: {policy}\n  {key}\n")
    with pytest.raises(ConfigError, match=rf"'augmentation.{key[0]}' is a setting of policy "
                                          rf"randaugment; policy {policy} ignores it"):
        load_config(recipe)
    recipe = write_recipe(tmp_path, f"augmentation:\n  policy: randaugment\n  {key}\n")
    assert getattr(load_config(recipe).augmentation, key[0]) == int(key.split()[1])


def test_a_recipe_that_does_not_end_within_the_run_is_warned_of(tmp_path):
    recipe = write_recipe(tmp_path, "progressive_resizing: {start: 128, end: 192, "
                                    "start_epoch: 2, end_epoch: 8}\n")
    assert recipe_warnings(load_config(recipe)) == []
    assert recipe_warnings(load_config(recipe, epochs_override=9)) == []
    short = recipe_warnings(load_config(recipe, epochs_override=2))
    assert short == [
        f"warning: {recipe}: the warm-up of 2 epochs covers the whole run of 2: the learning "
        "rate never leaves it",
        f"warning: {recipe}: progressive resizing reaches 192 px at epoch 8, after the run's "
        "last epoch (1), which trains at 128 px"]
    assert len(recipe_warnings(load_config(recipe, epochs_override=5))) == 1
    long_warmup = tmp_path / "warmup.yaml"
    long_warmup.write_text(recipe.read_text().replace("warmup_epochs: 2", "warmup_epochs: 50"))
    assert recipe_warnings(load_config(long_warmup)) == [
        f"warning: {long_warmup}: the warm-up of 50 epochs covers the whole run of 10: the "
        "learning rate never leaves it"]


def test_the_shipped_recipes_are_not_warned_of():
    for path in sorted((REPO / "cfg").glob("*.yaml")):
        assert recipe_warnings(load_config(path)) == [], path
