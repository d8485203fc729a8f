"""train.py's resume as a user meets it: exact after SIGTERM and kill -9 (also across a
resolution change, with every modern option and with the weight EMA), a finished run re-run
or extended, the resumes it refuses, and fine-tuning from a weight file. The data and recipes
are train_fixtures' (two demo classes at 32x32)."""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import h5py
import nnabla as nn
import numpy as np
import pytest
from conftest import built_once
from eval_fixtures import error_lines
from run_fixtures import checkpoint_names, param_files
from train_fixtures import (
    CONFIG,
    EPOCHS,
    ITERATIONS,
    PREEMPTED,
    TIMEOUT,
    Setup,
    assert_resumes_exactly,
    indices,
    paused_at,
    run_train,
    start_train,
    train_args,
    values,
    wait_for,
)

from models import build_network, get_architecture
from utils.outputs.monitor import read_series, timer_path
from utils.process.atomic import LOCK_NAME
from utils.process.errors import USER_ERROR_STATUS
from utils.recipe.config import load_config
from utils.recipe.schedules import build_schedule
from utils.weights.files import read_parameters

pytestmark = pytest.mark.slow  # every test here runs train.py end to end


# --------------------------------------------------------------------------- exact resume


@pytest.fixture(scope="session")
def mixup_reference(setup: Setup, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch mobilenet_v3_small run with mixup (dropout and mixup RNGs),
    made once however the tests are spread over workers."""
    def train(monitor: Path) -> Path:
        result = run_train(*train_args(setup, monitor, config=setup.mixup))
        assert result.returncode == 0, result.stderr
        return monitor

    return built_once(tmp_path_factory, "mixup-reference", train)


def test_resume_after_sigterm_mid_epoch_is_exact(setup, mixup_reference, tmp_path):
    monitor = tmp_path / "stopped"
    args = train_args(setup, monitor, config=setup.mixup)
    log = tmp_path / "first.log"
    process = start_train(args, log, pause="epoch 1 iteration 4")
    wait_for(paused_at(log, "epoch 1 iteration 4"), process, "epoch 1, iteration 4")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    assert "stopped by SIGTERM at epoch 1, iteration 5; saved" in log.read_text()
    stop = checkpoint_names(monitor)[0]
    assert stop == "checkpoint_e0001_i0000005.npz"  # mid-epoch, 5 of 12 iterations done

    assert_resumes_exactly(args, monitor / "checkpoints" / stop, mixup_reference, monitor)


def test_modern_options_resume_exactly_across_a_resolution_change(setup, tmp_path):
    """CutMix with mixup, a TrivialAugment policy and progressive resizing 16 -> 32 px over
    epochs 0-2: stopped mid-epoch 1 (24 px) and resumed, the run equals an uninterrupted one.
    On the 48-image list (6 iterations an epoch): the augmentations take time on the CPU."""
    config = tmp_path / "modern.yaml"
    config.write_text(CONFIG.format(epochs=EPOCHS, mixup=0.2, base_lr=0.0005)
                      + "cutmix: 1.0\naugmentation:\n  policy: trivialaugment\n"
                        "progressive_resizing: {start: 16, end: 32, start_epoch: 0, "
                        "end_epoch: 2}\n")
    reference = tmp_path / "reference"
    result = run_train(*train_args(setup, reference, config=config, train_list=setup.small_list))
    assert result.returncode == 0, result.stderr
    for epoch, size in enumerate((16, 24, 32)):
        assert f"epoch {epoch}: training at {size}x{size}" in result.stderr
    monitor = tmp_path / "stopped"
    args = train_args(setup, monitor, config=config, train_list=setup.small_list)
    log = tmp_path / "first.log"
    process = start_train(args, log, pause="epoch 1 iteration 2")
    wait_for(paused_at(log, "epoch 1 iteration 2"), process, "epoch 1, iteration 2")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    stop = checkpoint_names(monitor)[0]
    assert stop == "checkpoint_e0001_i0000003.npz"  # mid-epoch 1 (3 of 6 iterations)
    assert_resumes_exactly(args, monitor / "checkpoints" / stop, reference, monitor)


def test_resume_after_kill_9_is_exact(setup, mixup_reference, tmp_path):
    """Killed during epoch 1 after the epoch-0 checkpoint: epoch 1 is redone from its start."""
    monitor = tmp_path / "killed"
    args = train_args(setup, monitor, config=setup.mixup)
    log = tmp_path / "first.log"
    process = start_train(args, log, pause="epoch 1 iteration 6")
    first = monitor / "checkpoints" / "checkpoint_e0001_i0000000.npz"
    wait_for(paused_at(log, "epoch 1 iteration 6"), process, "epoch 1, iteration 6")
    process.kill()
    assert process.wait(TIMEOUT) == -signal.SIGKILL
    assert checkpoint_names(monitor)[0] == first.name

    assert_resumes_exactly(args, first, mixup_reference, monitor)


def test_rerunning_a_finished_run_changes_nothing(setup, mobilenet_run, tmp_path):
    monitor = tmp_path / "finished"
    shutil.copytree(mobilenet_run[0], monitor)
    before = {p.name: p.read_bytes() for p in monitor.glob("*.txt") if p.name != "Arguments.txt"}
    result = run_train(*train_args(setup, monitor))
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "epoch 0:" not in result.stderr
    after = {p.name: p.read_bytes() for p in monitor.glob("*.txt") if p.name != "Arguments.txt"}
    assert after == before


def test_stale_series_of_a_run_killed_before_its_first_checkpoint_are_dropped(setup, tmp_path):
    """A run killed between writing epoch 0's series and its first checkpoint (e.g. during
    validation) starts again from scratch; the series must not keep the killed run's lines."""
    monitor = tmp_path / "restart"
    monitor.mkdir()
    (monitor / "Train-loss.series.txt").write_text("0 9.99\n")
    (monitor / "Train-error.series.txt").write_text("0 0.99\n")
    (monitor / "Epoch-time.timer.txt").write_text("0 1 12 12\n")
    result = run_train(*train_args(setup, monitor, "-v", 0, epochs=1,
                               train_list=setup.three_list, classes=3))
    assert result.returncode == 0, result.stderr
    assert indices(monitor, "Train-loss") == [0] and values(monitor, "Train-loss") != [9.99]
    assert indices(monitor, "Train-error") == [0]
    assert [row[0] for row in read_series(timer_path(str(monitor), "Epoch-time"))] == [0]


# --------------------------------------------------------------------------- refused resumes


def outputs(monitor: Path) -> dict:
    """The monitor folder's files and contents, but the lock (which names the last run)."""
    return {p.name: p.read_bytes() for p in monitor.iterdir() if p.is_file()
            and p.name != LOCK_NAME}


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == USER_ERROR_STATUS, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("change, words", [
    (dict(arch="mobilenet_v2"), ["arch", "'mobilenet_v3_small'", "'mobilenet_v2'"]),
    (dict(classes=3, train_list=None), ["num_classes", "2", "3"]),
])
def test_resume_of_another_run_is_refused(setup, mobilenet_run, tmp_path, change, words):
    monitor = tmp_path / "other"
    shutil.copytree(mobilenet_run[0], monitor)
    before = outputs(monitor)
    line = assert_one_line_error(run_train(*train_args(setup, monitor, **change)))
    assert "cannot resume" in line and "--monitor-path" in line
    for word in words:
        assert word in line, line
    assert outputs(monitor) == before  # nothing written


def test_resume_flag_needs_a_checkpoint(setup, tmp_path):
    line = assert_one_line_error(run_train(*train_args(setup, tmp_path / "empty", "--resume")))
    assert "no intact checkpoint" in line


def test_resume_config_difference_names_the_key(setup, mobilenet_run, tmp_path):
    """The refusal should say which config key differs, not print both whole configs."""
    monitor = tmp_path / "other"
    shutil.copytree(mobilenet_run[0], monitor)
    line = assert_one_line_error(run_train(*train_args(setup, monitor, config=setup.frozen)))
    assert "config.lr_scheduler.args.base_lr: 0.0005 in the checkpoint, 1e-20 now" in line
    assert "weight_decay" not in line, line


def test_a_finished_run_trains_longer_and_never_shorter(setup, mobilenet_run, tmp_path):
    """-e 4 on a finished 3-epoch run: one more epoch, at the learning rate of a 4-epoch
    schedule; -e 2 would drop epochs already done and is refused."""
    monitor = tmp_path / "longer"
    shutil.copytree(mobilenet_run[0], monitor)
    result = run_train(*train_args(setup, monitor, epochs=4))
    assert result.returncode == 0, result.stderr
    assert "extending 3 -> 4 epochs; the schedule is re-evaluated for 4 epochs from epoch 3" \
        in result.stderr
    assert indices(monitor, "Train-loss") == [0, 1, 2, 3]
    assert values(monitor, "Train-loss")[:3] == values(mobilenet_run[0], "Train-loss")
    schedule = build_schedule(load_config(setup.plain, 4).lr_scheduler, ITERATIONS)
    logged = re.search(r"epoch 3: train loss \S+, error \S+, lr (\S+) ", result.stderr)
    assert float(logged.group(1)) == pytest.approx(schedule(3, ITERATIONS - 1), rel=1e-5)
    assert float(logged.group(1)) != pytest.approx(
        build_schedule(load_config(setup.plain, 3).lr_scheduler, ITERATIONS)(3, ITERATIONS - 1))
    line = assert_one_line_error(run_train(*train_args(setup, monitor, epochs=2)))
    assert "4 epochs are done; -e 2 would shorten the run below them" in line, line


# --------------------------------------------------------------------------- fine-tuning


def test_finetune_replaces_the_classifier_and_loads_the_rest(setup, mobilenet_run, tmp_path):
    """From the 2-class file of a previous run to 3 classes, with a learning rate too small to
    move any float32 weight: every trained parameter but the classifier must then still equal
    the file's (batch-norm statistics do move: they are running averages)."""
    source = mobilenet_run[0] / "param_003.h5"
    monitor = tmp_path / "finetune"
    result = run_train(*train_args(setup, monitor, "--finetune", "--model-load-path", source,
                               "-v", 0, config=setup.frozen, train_list=setup.three_list,
                               classes=3, epochs=1))
    assert result.returncode == 0, result.stderr
    assert f"loaded {source} (new classifier)" in result.stderr
    before, after = read_parameters(str(source)), read_parameters(str(monitor / "param_001.h5"))
    classifier = get_architecture("mobilenet_v3_small").classifier_scope + "/"
    assert set(before) == set(after)
    replaced = [n for n in after if n.startswith(classifier)]
    assert replaced and all(after[n].data.shape[-1] == 3 for n in replaced if n.endswith("/b"))
    for name in replaced:
        assert after[name].data.shape != before[name].data.shape
    kept = [n for n in after if not n.startswith(classifier)
            and not n.endswith(("/mean", "/var"))]
    assert len(kept) > 50
    for name in kept:
        np.testing.assert_allclose(after[name].data, before[name].data, rtol=0, atol=1e-12,
                                   err_msg=name)
    first_conv = next(n for n, p in before.items() if p.data.ndim == 4)
    assert first_conv in kept
    assert values(monitor, "Train-loss") and np.isfinite(values(monitor, "Train-loss")).all()


def test_resume_of_a_finetune_run_does_not_need_the_source_file(setup, mobilenet_run,
                                                                tmp_path):
    """The checkpoint holds every parameter: a resumed fine-tune must not re-read (or need) the
    file it started from, which may be gone days later."""
    source = tmp_path / "start.h5"
    shutil.copy(mobilenet_run[0] / "param_003.h5", source)
    args = train_args(setup, tmp_path / "finetune", "--finetune", "--model-load-path", source,
                      "-v", 0, config=setup.frozen, train_list=setup.three_list, classes=3,
                      epochs=1)
    assert run_train(*args).returncode == 0
    source.unlink()
    result = run_train(*args)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr


def expected_first_mismatch(weight_file: Path, arch: str, classes: int) -> str:
    """Name of the first parameter of `arch` (creation order) that the file lacks or shapes
    differently, the classifier excluded."""
    nn.clear_parameters()
    build_network(nn.Variable((1, 3, 32, 32)), classes, arch, test=True)
    skip = get_architecture(arch).classifier_scope + "/"
    with h5py.File(weight_file, "r") as f:
        for name, v in nn.get_parameters(grad_only=False).items():
            if not name.startswith(skip) and (name not in f or f[name].shape != v.shape):
                return name
    raise AssertionError("no mismatch")


def test_finetune_from_another_architecture_is_refused(setup, mobilenet_run, tmp_path):
    source = mobilenet_run[0] / "param_003.h5"
    line = assert_one_line_error(run_train(*train_args(
        setup, tmp_path / "m", "--finetune", "--model-load-path", source, arch="mobilenet_v2",
        classes=3, train_list=setup.three_list)))
    name = expected_first_mismatch(source, "mobilenet_v2", 3)
    assert str(source) in line and "mobilenet_v2" in line and f"'{name}'" in line, line


def test_loading_another_class_count_without_finetune_is_refused(setup, mobilenet_run,
                                                                  tmp_path):
    source = mobilenet_run[0] / "param_003.h5"
    line = assert_one_line_error(run_train(*train_args(
        setup, tmp_path / "m", "--model-load-path", source, classes=3,
        train_list=setup.three_list)))
    classifier = get_architecture("mobilenet_v3_small").classifier_scope
    assert str(source) in line and f"'{classifier}/" in line, line


# --------------------------------------------------------------------------- weight EMA


def test_ema_weights_are_validated_saved_and_resumed_exactly(setup, tmp_path):
    """--ema-decay: a shadow average that differs from the raw weights, is validated and
    saved beside them, and survives a mid-epoch stop and resume bit for bit (on the 48-image
    list)."""
    reference = tmp_path / "ema"
    args = train_args(setup, reference, "--ema-decay", "0.8", train_list=setup.small_list)
    result = run_train(*args)
    assert result.returncode == 0, result.stderr
    assert {"param_ema_002.h5", "param_ema_003.h5"} <= set(param_files(reference))
    assert indices(reference, "Validation-EMA-error") == [1, 2, 3]
    raw = read_parameters(str(reference / "param_003.h5"))
    ema = read_parameters(str(reference / "param_ema_003.h5"))
    assert list(ema) == list(raw)
    trainable = [k for k, p in raw.items() if p.need_grad]
    assert all(not np.array_equal(ema[k].data, raw[k].data) for k in trainable)
    assert all(np.array_equal(ema[k].data, raw[k].data) for k in raw if k not in trainable)

    stopped = tmp_path / "stopped"
    args = train_args(setup, stopped, "--ema-decay", "0.8", train_list=setup.small_list)
    log = tmp_path / "first.log"
    process = start_train(args, log, pause="epoch 1 iteration 1")
    wait_for(paused_at(log, "epoch 1 iteration 1"), process, "epoch 1, iteration 1")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    assert checkpoint_names(stopped)[0] == "checkpoint_e0001_i0000002.npz"
    result = run_train(*args)
    assert result.returncode == 0, result.stderr
    for name in ("param_ema_003.h5", "param_003.h5"):
        a, b = read_parameters(str(reference / name)), read_parameters(str(stopped / name))
        for key in a:
            np.testing.assert_array_equal(b[key].data, a[key].data, err_msg=f"{name} {key}")
    assert values(stopped, "Validation-EMA-error") == values(reference, "Validation-EMA-error")
