"""train.py as a user runs it, on a tiny real-image set: learning, outputs, mpirun, exact resume
after SIGTERM and kill -9, refused resumes and fine-tuning.

The data are demo Fashion-MNIST photographs (28x28 greyscale JPEGs) of two classes, bag (0)
and trouser (1): 90 training images (with batch 8 the 12th batch has 6 padded slots) and 24
validation images, at 32x32. Two classes let a small network show a falling loss within 36
steps of random-resized crops. The networks are mobilenet_v3_small (dropout included, so the
per-iteration reseeding is exercised) and resnet18; one CPU run takes a few seconds.

Rank 1 writes no files, so the mpirun test runs train.py's main through
`train_rank_digests.py`, which reports every rank's parameters once main has returned.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import h5py
import nnabla as nn
import numpy as np
import pytest
from eval_fixtures import error_lines, run_script
from paths import DEMO, REPO
from train_rank_digests import MARKER, parameter_digest

import train
from models import build_network, get_architecture
from utils.atomic import LOCK_NAME
from utils.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from utils.config import load_config
from utils.lr_schedules import build_schedule
from utils.monitor import read_series, series_path, timer_path
from utils.runtime import USER_ERROR_STATUS
from utils.weights import read_parameters

pytestmark = pytest.mark.slow  # every test here runs scripts end to end

CLASSES = ("bag", "trouser")
TRAIN_IMAGES_PER_CLASS = 45  # 90 images: 12 batches of 8, the last with 2 real samples
BATCH = 8
ITERATIONS = 12
EPOCHS = 3
PREEMPTED = train.PREEMPTED_EXIT_STATUS
SERIES = ("Train-loss", "Train-error", "Validation-loss", "Validation-error",
          "Validation-top5-error")
TIMEOUT = 300

CONFIG = """\
weight_decay: 5.0e-05
momentum: 0.9
epochs: {epochs}
label_smoothing: 0.1
loss_scaling: 128
mixup: {mixup}
lr_scheduler:
  type: EpochCosineLearningRateScheduler
  args:
    base_lr: {base_lr}
    warmup_epochs: 0
    epochs:
  per_iteration: true
"""


@dataclass(frozen=True)
class Setup:
    folder: Path
    train_list: Path  # 90 images, 2 classes
    small_list: Path  # 48 images, 2 classes (resnet18)
    three_list: Path  # 24 images, 3 classes (fine-tuning to another class count)
    val_list: Path  # 24 images, 2 classes
    plain: Path  # config: no mixup
    mixup: Path  # config: mixup 0.2
    frozen: Path  # config: a learning rate too small to change any float32 weight


def demo_class_ids() -> Dict[str, int]:
    """Class ids of the demo set (sorted folder names, as create_input_files.py numbers them)."""
    return {name: i for i, name in enumerate(sorted(os.listdir(DEMO / "train")))}


def class_images(name: str, count: int) -> List[str]:
    return [f"{name}/{f}" for f in sorted(os.listdir(DEMO / "train" / name))[:count]]


def write_list(path: Path, rows: Sequence[tuple]) -> Path:
    path.write_text("".join(f"{p} {c}\n" for p, c in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    folder = tmp_path_factory.mktemp("train")
    train_rows = [(p, c) for c, name in enumerate(CLASSES)
                  for p in class_images(name, TRAIN_IMAGES_PER_CLASS)]
    small_rows = [(p, c) for c, name in enumerate(CLASSES) for p in class_images(name, 24)]
    three_rows = [(p, c) for c, name in enumerate(("bag", "sneaker", "trouser"))
                  for p in class_images(name, 8)]
    ids = [demo_class_ids()[name] for name in CLASSES]
    truth = [int(v) for v in (DEMO / "val_ground_truth.txt").read_text().split()]
    val_rows = [(f"ILSVRC2012_val_{i:08d}.JPEG", ids.index(t))
                for i, t in enumerate(truth, start=1) if t in ids][:24]
    configs = {}
    for name, base_lr, mixup in (("plain", 0.0005, 0), ("mixup", 0.0005, 0.2),
                                 ("frozen", 1e-20, 0)):
        configs[name] = folder / f"{name}.yaml"
        configs[name].write_text(CONFIG.format(epochs=EPOCHS, mixup=mixup, base_lr=base_lr))
    return Setup(folder, write_list(folder / "train_label", train_rows),
                 write_list(folder / "small_label", small_rows),
                 write_list(folder / "three_label", three_rows),
                 write_list(folder / "val_label", val_rows), **configs)


def train_args(setup: Setup, monitor: Path, *extra: object, arch: str = "mobilenet_v3_small",
               config: Optional[Path] = None, train_list: Optional[Path] = None,
               epochs: int = EPOCHS, classes: int = 2) -> List[str]:
    """A complete train.py command line (after the script) for the demo subset."""
    args = ["-a", arch, "-b", BATCH, "--spatial-size", 32, "-C", config or setup.plain,
            "-e", epochs, "-T", DEMO / "train", "--train-list", train_list or setup.train_list,
            "-V", DEMO / "val", "--val-list", setup.val_list, "-m", monitor,
            "--num-classes", classes, "-v", 1, "-s", 2, "--keep-checkpoints", 2,
            "--dali-num-threads", 1, *extra]
    return [str(a) for a in args]


def run_train(*args: str, mpi_ranks: int = 0) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, mpi_ranks=mpi_ranks)


def start_train(args: Sequence[str], log: Path) -> subprocess.Popen:
    """train.py in the background, its stderr (log and progress bars) going to `log`."""
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "MPLBACKEND": "Agg"})


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"train.py ended ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def epoch_bar_shown(log: Path, epoch: int):
    """Whether the progress bar of `epoch` has started (tqdm draws it at 0 % first)."""
    pattern = re.compile(rf"epoch {epoch}: +0%")
    return lambda: bool(pattern.search(log.read_text(errors="replace")))


def values(monitor: Path, name: str) -> List[float]:
    return [v for _, v in read_series(series_path(str(monitor), name))]


def indices(monitor: Path, name: str) -> List[int]:
    return [i for i, _ in read_series(series_path(str(monitor), name))]


def param_files(monitor: Path) -> List[str]:
    return sorted(p.name for p in monitor.glob("param_*.h5"))


def checkpoint_names(monitor: Path) -> List[str]:
    return [os.path.basename(p) for p in list_checkpoints(checkpoint_dir(str(monitor)))]


def assert_same_run(expected: Path, actual: Path) -> None:
    """Identical series, weight files and final checkpoint (parameters and solver state)."""
    for name in SERIES:
        assert (actual / f"{name}.series.txt").read_text() == \
            (expected / f"{name}.series.txt").read_text(), name
    timer = [row[0] for row in read_series(timer_path(str(actual), "Epoch-time"))]
    assert timer == list(range(EPOCHS))
    assert param_files(actual) == param_files(expected)
    for name in param_files(expected):
        a, b = read_parameters(str(expected / name)), read_parameters(str(actual / name))
        assert list(a) == list(b)
        for key in a:
            np.testing.assert_array_equal(b[key].data, a[key].data, err_msg=f"{name} {key}")
    assert checkpoint_names(actual) == checkpoint_names(expected)
    newest = checkpoint_names(expected)[0]
    a = load_checkpoint(str(expected / "checkpoints" / newest))
    b = load_checkpoint(str(actual / "checkpoints" / newest))
    for part in ("params", "solver", "extra"):
        x, y = getattr(a, part), getattr(b, part)
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(y[key], x[key], err_msg=f"{part} {key}")
    assert b.meta["train_data"] == a.meta["train_data"]


def assert_resumes_exactly(args: Sequence[str], checkpoint: Path, reference: Path,
                           monitor: Path) -> None:
    """Running the command again resumes from `checkpoint` and ends as `reference` did."""
    result = run_train(*args)
    assert result.returncode == 0, result.stderr
    assert f"resuming from {checkpoint}" in result.stderr
    assert_same_run(reference, monitor)


# --------------------------------------------------------------------------- learning, outputs


@pytest.fixture(scope="module")
def mobilenet_run(setup: Setup):
    monitor = setup.folder / "mobilenet"
    result = run_train(*train_args(setup, monitor))
    assert result.returncode == 0, result.stderr
    return monitor, result


def test_mobilenet_learns_and_writes_every_output(setup, mobilenet_run):
    monitor, result = mobilenet_run
    loss, error = values(monitor, "Train-loss"), values(monitor, "Train-error")
    assert indices(monitor, "Train-loss") == indices(monitor, "Train-error") == [0, 1, 2]
    assert loss[-1] < 0.9 * loss[0], loss  # 0.63 at seed 0, 0.65 and 0.77 at seeds 1, 2
    assert error[-1] < error[0], error
    assert all(0 <= e <= 1 for e in error) and max(error) > 0, error
    # 90 images: an error rate is a multiple of 1/90, not of 1/96 (padding excluded).
    for e in error:
        assert abs(e * 90 - round(e * 90)) < 1e-3, error
    for name in SERIES[2:]:
        assert indices(monitor, name) == [1, 2, 3], name  # -v 1: after every epoch
    assert all(0 <= e <= 1 for e in values(monitor, "Validation-error"))
    assert values(monitor, "Validation-top5-error") == [0, 0, 0]  # two classes
    for v in values(monitor, "Validation-error"):
        assert abs(v * 24 - round(v * 24)) < 1e-3

    timer = [[float(v) for v in line.split()]
             for line in (monitor / "Epoch-time.timer.txt").read_text().splitlines()]
    assert [row[0] for row in timer] == [0, 1, 2] and all(row[1] > 0 for row in timer)
    assert [row[2] for row in timer] == [1, 1, 1]  # MonitorTimeElapsed's, one add an epoch
    assert [row[3] for row in timer] == pytest.approx(np.cumsum([row[1] for row in timer]),
                                                      rel=1e-4)
    per_iteration = values(monitor, "Iteration-time")
    assert [row[1] / s for row, s in zip(timer, per_iteration)] == \
        pytest.approx([ITERATIONS] * 3, rel=1e-4)

    arguments = dict(line.split("=", 1)
                     for line in (monitor / "Arguments.txt").read_text().splitlines())
    assert arguments["arch"] == "mobilenet_v3_small" and arguments["batch_size"] == "8"
    assert arguments["monitor_path"] == str(monitor)
    saved = load_config(monitor / "cfg" / setup.plain.name)  # where the official puts it
    assert saved == load_config(setup.plain, EPOCHS)

    # -s 2 and 3 epochs: after epoch 2 and at the end; the newest 2 checkpoints kept.
    assert param_files(monitor) == ["param_002.h5", "param_003.h5"]
    assert checkpoint_names(monitor) == ["checkpoint_e0003_i0000000.npz",
                                         "checkpoint_e0002_i0000000.npz"]
    for png in ("loss.png", "error.png", "top5-error.png"):
        assert (monitor / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    weights = read_parameters(str(monitor / "param_003.h5"))
    final = load_checkpoint(str(monitor / "checkpoints" / "checkpoint_e0003_i0000000.npz"))
    assert list(weights) != [] and set(weights) == set(final.params)
    for name, p in weights.items():
        np.testing.assert_array_equal(p.data, final.params[name])
    classifier = get_architecture("mobilenet_v3_small").classifier_scope + "/"
    assert [p.data.shape for n, p in weights.items() if n.startswith(classifier)
            and p.data.ndim == 1] == [(2,)]

    # Progress on stderr: a bar per epoch with the metrics, and the epoch summaries.
    for epoch in range(EPOCHS):
        assert f"epoch {epoch}: train loss" in result.stderr
        assert re.search(rf"epoch {epoch}: 100%.*loss=.*error=.*lr=", result.stderr)
    assert "img/s=" in result.stderr


def test_resnet18_learns(setup, tmp_path):
    monitor = tmp_path / "resnet18"
    result = run_train(*train_args(setup, monitor, "-v", 2, arch="resnet18", epochs=2,
                               train_list=setup.small_list))
    assert result.returncode == 0, result.stderr
    loss, error = values(monitor, "Train-loss"), values(monitor, "Train-error")
    assert len(loss) == 2 and loss[1] < 0.95 * loss[0], loss  # 0.81 at seed 0, 0.90 at 2
    assert error[1] < error[0], error
    assert all(0 <= e <= 1 for e in error) and max(error) > 0, error
    assert indices(monitor, "Validation-error") == [2]
    assert param_files(monitor) == ["param_002.h5"]


# --------------------------------------------------------------------------- mpirun


def test_two_ranks_hold_identical_parameters(setup, tmp_path):
    monitor = tmp_path / "two"
    command = [str(Path(sys.executable).parent / "mpirun"), "-n", "2", sys.executable,
               str(REPO / "tests" / "train_rank_digests.py"),
               *train_args(setup, monitor, epochs=2)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    report = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    assert len(report) == 1, result.stdout  # rank 0 only
    found = json.loads(report[0][len(MARKER):])
    assert found["status"] == 0 and len(found["digests"]) == 2
    assert found["trainable"][0] == found["trainable"][1]  # the all-reduced gradients
    # Batch-norm running statistics too: each rank validates its shard with them, and the
    # file (and checkpoint) written by rank 0 must hold what every rank holds.
    assert found["differing"] == [], found["differing"][:5]
    assert found["digests"][0] == found["digests"][1]
    # ... and the file rank 0 wrote holds those parameters.
    saved = read_parameters(str(monitor / "param_002.h5"))
    assert parameter_digest({k: p.data for k, p in saved.items()}) == found["digests"][0]

    assert "2 ranks" in result.stderr
    assert result.stderr.count("epoch 1: train loss") == 1  # rank 0 logs
    assert indices(monitor, "Train-loss") == [0, 1]  # written once, by rank 0
    # 90 images over 2 ranks x 8: 6 iterations of 16, the last with 10 real samples.
    epoch_seconds = [row[1] for row in read_series(timer_path(str(monitor), "Epoch-time"))]
    assert [s / t for s, t in zip(epoch_seconds, values(monitor, "Iteration-time"))] == \
        pytest.approx([6, 6], rel=1e-4)
    for e in values(monitor, "Train-error"):
        assert abs(e * 90 - round(e * 90)) < 1e-3
    ckpt = load_checkpoint(str(monitor / "checkpoints" / checkpoint_names(monitor)[0]))
    assert ckpt.meta["identity"]["num_ranks"] == 2


def test_train_py_runs_under_mpirun_directly(setup, tmp_path):
    """The script itself (not through the probe) under mpirun: one rank writes, both finish."""
    monitor = tmp_path / "direct"
    result = run_train(*train_args(setup, monitor, "-v", 0, epochs=1), mpi_ranks=2)
    assert result.returncode == 0, result.stderr
    assert indices(monitor, "Train-loss") == [0]
    assert param_files(monitor) == ["param_001.h5"]
    assert not (monitor / "Validation-loss.series.txt").exists()


# --------------------------------------------------------------------------- exact resume


@pytest.fixture(scope="module")
def mixup_reference(setup: Setup) -> Path:
    """An uninterrupted 3-epoch mobilenet_v3_small run with mixup (dropout and mixup RNGs)."""
    monitor = setup.folder / "reference"
    result = run_train(*train_args(setup, monitor, config=setup.mixup))
    assert result.returncode == 0, result.stderr
    return monitor


def test_resume_after_sigterm_mid_epoch_is_exact(setup, mixup_reference, tmp_path):
    monitor = tmp_path / "stopped"
    args = train_args(setup, monitor, config=setup.mixup)
    log = tmp_path / "first.log"
    process = start_train(args, log)
    wait_for(epoch_bar_shown(log, 1), process, "epoch 1")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    assert re.search(r"stopped by .* at epoch 1, iteration \d+", log.read_text())
    stop = checkpoint_names(monitor)[0]
    match = re.fullmatch(r"checkpoint_e0001_i(\d+)\.npz", stop)
    assert match and 0 < int(match.group(1)) < ITERATIONS, stop  # mid-epoch

    assert_resumes_exactly(args, monitor / "checkpoints" / stop, mixup_reference, monitor)


def test_modern_options_resume_exactly_across_a_resolution_change(setup, tmp_path):
    """CutMix with mixup, a TrivialAugment policy and progressive resizing 16 -> 32 px over
    epochs 0-2: stopped mid-epoch 1 (24 px) and resumed, the run equals an uninterrupted one."""
    config = tmp_path / "modern.yaml"
    config.write_text(CONFIG.format(epochs=EPOCHS, mixup=0.2, base_lr=0.0005)
                      + "cutmix: 1.0\naugmentation:\n  policy: trivialaugment\n"
                        "progressive_resizing: {start: 16, end: 32, start_epoch: 0, "
                        "end_epoch: 2}\n")
    reference = tmp_path / "reference"
    result = run_train(*train_args(setup, reference, config=config))
    assert result.returncode == 0, result.stderr
    for epoch, size in enumerate((16, 24, 32)):
        assert f"epoch {epoch}: training at {size}x{size}" in result.stderr
    monitor = tmp_path / "stopped"
    args = train_args(setup, monitor, config=config)
    log = tmp_path / "first.log"
    process = start_train(args, log)
    wait_for(epoch_bar_shown(log, 1), process, "epoch 1")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    stop = checkpoint_names(monitor)[0]
    assert re.fullmatch(r"checkpoint_e0001_i0*[1-9]\d*\.npz", stop), stop  # mid-epoch 1
    assert_resumes_exactly(args, monitor / "checkpoints" / stop, reference, monitor)


def test_resume_after_kill_9_is_exact(setup, mixup_reference, tmp_path):
    """Killed during epoch 1 after the epoch-0 checkpoint: epoch 1 is redone from its start."""
    monitor = tmp_path / "killed"
    args = train_args(setup, monitor, config=setup.mixup)
    log = tmp_path / "first.log"
    process = start_train(args, log)
    first = monitor / "checkpoints" / "checkpoint_e0001_i0000000.npz"
    wait_for(first.exists, process, "the first checkpoint")
    wait_for(epoch_bar_shown(log, 1), process, "epoch 1")
    time.sleep(0.3)
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


# --------------------------------------------------------------------------- pure pieces


def test_iteration_seed_is_a_function_of_the_position():
    """Valid NNabla seeds; the ranks of one step differ; so do the steps of one rank over 90
    epochs of up to 5000 iterations (ImageNet at a global batch of 256)."""
    seed = train.iteration_seed
    assert seed(3, 1, 7, 11) == seed(3, 1, 7, 11)
    assert 0 <= seed(10**9, 10**3, 10**6, 10**7) < 2**31 - 1
    for s in (0, 1, 12345):
        assert len({seed(s, r, 5, 17) for r in range(256)}) == 256
        steps = {seed(s, 3, e, i) for e in range(90) for i in range(5000)}
        assert len(steps) == 90 * 5000 and all(0 <= v < 2**31 - 1 for v in steps)


def identity_of(*argv: str, ranks: int = 1) -> dict:
    args = train.parse_args(["-a", "resnet18", "--spatial-size", "32", *argv])
    return train.run_identity(args, load_config(args.train_config, args.epochs), ranks)


def test_run_identity_holds_what_a_resume_must_keep():
    base = identity_of()
    assert base == identity_of("-m", "elsewhere", "-v", "3", "-s", "7", "--keep-checkpoints",
                               "9", "--dali-num-threads", "1", "--resume")
    for argv, key in ((["-a", "resnet34"], "arch"), (["--num-classes", "10"], "num_classes"),
                      (["-b", "64"], "batch_size"), (["--spatial-size", "64"], "spatial_size"),
                      (["-e", "5"], "config"), (["-C", "cfg/step90.yaml"], "config"),
                      (["--seed", "1"], "seed"), (["--finetune", "--model-load-path", "x.h5"],
                                                  "finetune")):
        changed = identity_of(*argv)
        assert changed[key] != base[key], argv
    assert identity_of(ranks=2)["num_ranks"] == 2
    assert json.loads(json.dumps(base)) == base  # stored in the checkpoint's JSON record


def test_parse_args_defaults_and_errors(capsys):
    args = train.parse_args(["-a", "mobilenet_v2"])
    assert os.path.isfile(args.train_config) and args.spatial_size == (224, 224)
    assert args.monitor_path is None and args.batch_size == 128
    with pytest.raises(SystemExit):
        train.parse_args(["-a", "resnet18", "--finetune"])
    assert "--finetune needs --model-load-path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["-a", "resnet18", "-b", "0"])


@pytest.mark.parametrize("flag", ["-s", "--keep-checkpoints"])
def test_save_interval_and_kept_checkpoints_must_be_positive(flag, capsys):
    """-s 0 used to end the first epoch with ZeroDivisionError; --keep-checkpoints 0 deleted
    every checkpoint, the one just written included."""
    for value in ("0", "-1"):
        with pytest.raises(SystemExit):
            train.parse_args(["-a", "resnet18", flag, value])
        assert flag in capsys.readouterr().err


# --------------------------------------------------------------------------- weight EMA


def test_ema_weights_are_validated_saved_and_resumed_exactly(setup, tmp_path):
    """--ema-decay: a shadow average that differs from the raw weights, is validated and
    saved beside them, and survives a mid-epoch stop and resume bit for bit."""
    reference = tmp_path / "ema"
    args = train_args(setup, reference, "--ema-decay", "0.8")
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
    args = train_args(setup, stopped, "--ema-decay", "0.8")
    log = tmp_path / "first.log"
    process = start_train(args, log)
    wait_for(epoch_bar_shown(log, 1), process, "epoch 1")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    result = run_train(*args)
    assert result.returncode == 0, result.stderr
    for name in ("param_ema_003.h5", "param_003.h5"):
        a, b = read_parameters(str(reference / name)), read_parameters(str(stopped / name))
        for key in a:
            np.testing.assert_array_equal(b[key].data, a[key].data, err_msg=f"{name} {key}")
    assert values(stopped, "Validation-EMA-error") == values(reference, "Validation-EMA-error")


def test_ema_decay_must_be_below_one(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["-a", "resnet18", "--ema-decay", "1"])
    assert "--ema-decay must be in [0, 1)" in capsys.readouterr().err


# --------------------------------------------------------------------------- batch-norm recompute


def test_recomputed_batch_norm_statistics_validate_like_training(setup, tmp_path):
    """A 24-step MobileNetV2 (batch-norm decay 0.99): its running statistics have not settled,
    so it classifies its own 90 training images (centre crops) at chance; recomputed from 8
    training batches, it does no worse than training did (on random crops). Measured
    (training error, stale, recomputed): 0.322, 0.500, 0.222."""
    monitor = tmp_path / "mbv2"
    result = run_train(*train_args(setup, monitor, arch="mobilenet_v2", epochs=2))
    assert result.returncode == 0, result.stderr
    weights = monitor / "param_002.h5"
    train_error = values(monitor, "Train-error")[-1]
    on_training_images = ("-V", DEMO / "train", "--val-list", setup.train_list)
    recompute = ("--recompute-bn", 8, "-T", DEMO / "train", "--train-list", setup.train_list)

    def top1(*extra: object) -> float:
        result = run_script("validation.py", str(weights), "-a", "mobilenet_v2",
                            "--spatial-size", "32", "-b", "8", "-M", str(tmp_path / "val"),
                            "--json", "--dali-num-threads", "1",
                            *map(str, on_training_images + extra))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["top1_error"]

    stale, fresh = top1(), top1(*recompute)
    print(f"train error {train_error:.3f}, stale {stale:.3f}, recomputed {fresh:.3f}")
    assert stale >= 0.4  # two classes: chance is 0.5
    assert fresh <= train_error + 0.05
    assert stale - fresh >= 0.2
    recomputed_in_train = tmp_path / "mbv2-recompute"
    result = run_train(*train_args(setup, recomputed_in_train, "--recompute-bn", 8,
                                   *on_training_images, arch="mobilenet_v2", epochs=2))
    assert result.returncode == 0, result.stderr
    # its own 8 batches (another seed): measured 0.378
    assert values(recomputed_in_train, "Validation-error")[-1] <= stale - 0.1
