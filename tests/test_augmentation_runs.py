"""Issue 32's data options in the scripts: train.py with random erasing and repeated
augmentation learns and resumes exactly, its recipe's val_resize is checked; validation.py's
--val-resize. The data and recipes are train_fixtures' (two demo classes at 32x32) and
test_validation's (a resnet18 weight file, 13 images)."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from eval_fixtures import DEMO, error_lines, make_weight_file, run_main, write_val_list
from run_fixtures import checkpoint_names
from test_validation import images
from train_fixtures import (
    CONFIG,
    EPOCHS,
    PREEMPTED,
    TIMEOUT,
    assert_resumes_exactly,
    paused_at,
    run_train,
    start_train,
    train_args,
    values,
    wait_for,
)

import validation
from utils.process.errors import USER_ERROR_STATUS

pytestmark = pytest.mark.slow  # every test here runs a script end to end

OPTIONS = ("augmentation:\n  random_erasing: 0.5\n  repeated_augmentation: 2\n"
           "val_resize: 40\n")


def recipe(folder: Path, name: str, base_lr: float, extra: str = OPTIONS) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(CONFIG.format(epochs=EPOCHS, mixup=0, base_lr=base_lr) + extra)
    return path


def test_erasing_and_repeated_augmentation_learn_and_resume_exactly(setup, tmp_path):
    """The same run with a learning rate too small to move a weight sees the same batches,
    erased boxes and crops: the run learns if its last epoch's loss is below that one's."""
    config = recipe(tmp_path, "options", 0.0005)
    reference = tmp_path / "reference"
    result = run_train(*train_args(setup, reference, config=config))
    assert result.returncode == 0, result.stderr
    frozen = tmp_path / "frozen"
    result = run_train(*train_args(setup, frozen, "-v", 0,
                                   config=recipe(tmp_path, "frozen", 1e-20)))
    assert result.returncode == 0, result.stderr
    assert values(reference, "Train-loss")[-1] < values(frozen, "Train-loss")[-1] - 0.05

    monitor = tmp_path / "stopped"
    args = train_args(setup, monitor, config=config)
    log = tmp_path / "first.log"
    process = start_train(args, log, pause="epoch 1 iteration 4")
    wait_for(paused_at(log, "epoch 1 iteration 4"), process, "epoch 1, iteration 4")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    stop = checkpoint_names(monitor)[0]
    assert stop == "checkpoint_e0001_i0000005.npz"  # mid-epoch, 5 of 12 iterations done
    assert_resumes_exactly(args, monitor / "checkpoints" / stop, reference, monitor)


def test_the_recipes_val_resize_is_validated_and_checked(setup, tmp_path):
    small = recipe(tmp_path, "small", 0.0005, "val_resize: 24\n")
    result = run_train(*train_args(setup, tmp_path / "small", config=small, epochs=1))
    assert result.returncode == USER_ERROR_STATUS
    assert error_lines(result.stderr)[-1] == (
        f"error: {small}: val_resize 24 is smaller than the input size 32x32: the centre crop "
        f"needs a shorter side of at least 32")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("val")
    return (make_weight_file(folder / "rn18.h5", "resnet18", num_classes=10),
            write_val_list(folder / "val_label", images()))


def test_val_resize_in_validation_py(weights, tmp_path, capsys):
    def run(*extra):
        args = [weights[0], "-a", "resnet18", "-V", DEMO / "val", "--val-list", weights[1],
                "--spatial-size", "32", "-b", "4", "--json", "-M", tmp_path / "mon", *extra]
        status = run_main(validation.main, *args)
        out, err = capsys.readouterr()
        return status, json.loads(out)["loss"] if status == 0 else error_lines(err)

    default = run()
    assert run("--val-resize", "36") == default  # 32 / 0.875 -> 36, the default's resize
    status, loss = run("--val-resize", "48")
    assert status == 0 and loss != default[1]
    assert run("--val-resize", "30") == (USER_ERROR_STATUS, [
        "error: --val-resize 30 is smaller than the input size 32x32: the centre crop needs "
        "a shorter side of at least 32"])
    with pytest.raises(SystemExit, match="^2$"):
        validation.parse_args([str(weights[0]), "-a", "resnet18", "--val-resize", "232",
                               "--crop-pct", "0.9"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        ": error: --val-resize and --crop-pct exclude each other")
