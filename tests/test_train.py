"""train.py as a user runs it, on a tiny real-image set: learning, outputs, mpirun, the pure
pieces of the script, the weight EMA and the batch-norm recompute (resume and fine-tuning:
test_resume.py).

The data are demo Fashion-MNIST photographs (28x28 greyscale JPEGs) of two classes, bag (0)
and trouser (1): 90 training images (with batch 8 the 12th batch has 6 padded slots) and 24
validation images, at 32x32 (train_fixtures). Two classes let a small network show a falling
loss within 36 steps of random-resized crops. The networks are mobilenet_v3_small (dropout
included, so the per-iteration reseeding is exercised) and resnet18; one CPU run takes a few
seconds.

Rank 1 writes no files, so the mpirun test runs train.py's main through
`train_rank_digests.py`, which reports every rank's parameters once main has returned.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from chart_checks import assert_curves_drawn
from eval_fixtures import run_script
from paths import DEMO, REPO
from run_fixtures import SERIES, checkpoint_names, param_files
from train_fixtures import (
    EPOCHS,
    ITERATIONS,
    TIMEOUT,
    indices,
    run_train,
    train_args,
    values,
)
from train_rank_digests import MARKER, parameter_digest

import train
from models import get_architecture
from utils.data.batch_plan import Shard
from utils.data.pipelines import ImageFormat, InputPipeline
from utils.outputs.monitor import read_series, timer_path
from utils.recipe.config import load_config
from utils.train.checkpoint import load_checkpoint
from utils.train.run import PREEMPTED_EXIT_STATUS
from utils.train.spec import RunSpec
from utils.train.step import iteration_seed
from utils.weights.files import read_parameters

pytestmark = pytest.mark.slow  # every test here runs scripts end to end


# --------------------------------------------------------------------------- learning, outputs


def untrained_loss(setup, tmp_path, **run) -> float:
    """The last epoch's training loss of the same run with a learning rate too small to move
    any weight: the same batches, crops and dropout, so only learning differs. Comparing
    with it needs no threshold tuned to a CPU (their float rounding differs)."""
    monitor = tmp_path / "frozen"
    result = run_train(*train_args(setup, monitor, "-v", 0, config=setup.frozen, **run))
    assert result.returncode == 0, result.stderr
    return values(monitor, "Train-loss")[-1]


def test_mobilenet_learns_and_writes_every_output(setup, mobilenet_run, tmp_path):
    monitor, result = mobilenet_run
    loss, error = values(monitor, "Train-loss"), values(monitor, "Train-error")
    assert indices(monitor, "Train-loss") == indices(monitor, "Train-error") == [0, 1, 2]
    assert loss[-1] < loss[0] and loss[-1] < untrained_loss(setup, tmp_path), loss
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
    for png, curves in (("loss.png", 2), ("error.png", 2), ("top5-error.png", 1)):
        assert_curves_drawn(monitor / png, curves)  # training (not top-5) and validation
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
    # (images/s in the bar, which tqdm knows only after a second: test_progress.py)


def test_resnet18_learns(setup, tmp_path):
    monitor = tmp_path / "resnet18"
    result = run_train(*train_args(setup, monitor, "-v", 2, arch="resnet18", epochs=2,
                               train_list=setup.small_list))
    assert result.returncode == 0, result.stderr
    loss, error = values(monitor, "Train-loss"), values(monitor, "Train-error")
    assert len(loss) == 2 and loss[1] < loss[0], loss
    assert loss[1] < untrained_loss(setup, tmp_path, arch="resnet18", epochs=2,
                                    train_list=setup.small_list), loss
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


# --------------------------------------------------------------------------- pure pieces


def test_iteration_seed_is_a_function_of_the_position():
    """Valid NNabla seeds; the ranks of one step differ; so do the steps of one rank over 90
    epochs of up to 5000 iterations (ImageNet at a global batch of 256)."""
    seed = iteration_seed
    # The same in another process (a resumed run is one): nothing salted per process.
    other = subprocess.run(
        [sys.executable, "-c", "import sys; from utils.train.step import iteration_seed; "
         "print(iteration_seed(3, 1, 7, 11), iteration_seed(12345, 0, 89, 4999))"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "7"})
    assert other.stdout.split() == [str(seed(3, 1, 7, 11)), str(seed(12345, 0, 89, 4999))], \
        other.stderr
    assert len({seed(s, 1, 7, 11) for s in range(1000)}) == 1000  # --seed changes them all
    assert 0 <= seed(10**9, 10**3, 10**6, 10**7) < 2**31 - 1
    for s in (0, 1, 12345):
        assert len({seed(s, r, 5, 17) for r in range(256)}) == 256
        steps = {seed(s, 3, e, i) for e in range(90) for i in range(5000)}
        assert len(steps) == 90 * 5000 and all(0 <= v < 2**31 - 1 for v in steps)


def identity_of(*argv: str, ranks: int = 1) -> dict:
    args = train.parse_args(["-a", "resnet18", "--spatial-size", "32", *argv])
    inputs = InputPipeline(ImageFormat(tuple(args.spatial_size)), shard=Shard(0, ranks))
    return RunSpec.from_args(args, load_config(args.train_config, args.epochs), inputs,
                             "out").identity()


def test_the_run_identity_holds_what_a_resume_must_keep():
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
    with pytest.raises(SystemExit, match="^2$"):  # a usage error
        train.parse_args(["-a", "resnet18", "--finetune"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        ": error: --finetune needs --model-load-path")
    with pytest.raises(SystemExit, match="^2$"):  # a usage error
        train.parse_args(["-a", "resnet18", "-b", "0"])
    assert capsys.readouterr().err.endswith(
        ": error: argument -b/--batch-size: must be a positive integer, got 0\n")


@pytest.mark.parametrize("flag", ["-s", "--keep-checkpoints"])
def test_save_interval_and_kept_checkpoints_must_be_positive(flag, capsys):
    """-s 0 used to end the first epoch with ZeroDivisionError; --keep-checkpoints 0 deleted
    every checkpoint, the one just written included."""
    names = {"-s": "-s/--model-save-interval", "--keep-checkpoints": "--keep-checkpoints"}
    for value in ("0", "-1"):
        with pytest.raises(SystemExit, match="^2$"):  # a usage error
            train.parse_args(["-a", "resnet18", flag, value])
        assert capsys.readouterr().err.splitlines()[-1].endswith(  # (after the program)
            f": error: argument {names[flag]}: must be a positive integer, got {value}")


# --------------------------------------------------------------------------- weight EMA


def test_ema_decay_must_be_below_one(capsys):
    with pytest.raises(SystemExit, match="^2$"):  # a usage error
        train.parse_args(["-a", "resnet18", "--ema-decay", "1"])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        ": error: --ema-decay must be in [0, 1), got 1.0")


def test_accumulating_more_batches_than_an_epoch_has_is_refused(setup, tmp_path):
    """Every update would be a short one at the full global batch's learning rate (a nan
    loss, once): one line before any work, naming the most the epoch allows."""
    result = run_train(*train_args(setup, tmp_path / "mon", "--accumulate-steps", 1000))
    iterations = ITERATIONS
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        f"error: --accumulate-steps 1000 is more than the {iterations} batches of an epoch: "
        f"use at most {iterations}, or a smaller -b")
    assert not (tmp_path / "mon" / "checkpoints").exists() or \
        not any((tmp_path / "mon" / "checkpoints").iterdir())


# --------------------------------------------------------------------------- batch-norm recompute


def test_recomputed_batch_norm_statistics_validate_like_training(setup, tmp_path):
    """A 24-step MobileNetV2 (batch-norm decay 0.99): its running statistics have not settled,
    so it classifies its own 90 training images (centre crops) at chance; recomputed from 8
    training batches, it does no worse than training did (on random crops). Measured
    (training error, stale, recomputed): 0.322, 0.500, 0.222 on an AMD EPYC, 0.322, 0.500,
    0.311 on an Intel Xeon (float rounding differs between the two CPUs' kernels)."""
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
    assert stale - fresh >= 0.15
    recomputed_in_train = tmp_path / "mbv2-recompute"
    result = run_train(*train_args(setup, recomputed_in_train, "--recompute-bn", 8,
                                   *on_training_images, arch="mobilenet_v2", epochs=2))
    assert result.returncode == 0, result.stderr
    # its own 8 batches (another seed): measured 0.378 (AMD EPYC), 0.278 (Intel Xeon); left
    # stale, the statistics classify at chance (0.5): below that on any CPU
    assert values(recomputed_in_train, "Validation-error")[-1] < stale


# --------------------------------------------------------------------------- the stop message


@pytest.mark.parametrize("monitor_given", [True, False], ids=["with-m", "without-m"])
def test_the_stop_message_says_how_to_resume(setup, tmp_path, monitor_given):
    """Stopped by SIGTERM mid-epoch, the run says how to resume, and doing as it says
    resumes: with -m the same command; without it (a new tmp.monitor.<time> folder each run,
    as the official example) the same command with -m <that folder>."""
    import signal

    from train_fixtures import epoch_bar_shown, wait_for

    args = train_args(setup, tmp_path / "given", epochs=1)
    if not monitor_given:
        at = args.index("-m")
        del args[at:at + 2]
    log = tmp_path / "first.log"
    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, str(REPO / "train.py"), *args],
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                   env={**os.environ, "MPLBACKEND": "Agg"})
    wait_for(epoch_bar_shown(log, 0), process, "epoch 0")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED_EXIT_STATUS, log.read_text()
    stopped = re.search(r"stopped by SIGTERM at epoch 0, iteration \d+; saved (\S+); (.*)",
                        log.read_text())
    assert stopped, log.read_text()
    if monitor_given:
        monitor = tmp_path / "given"
        assert stopped.group(2) == "run the same command again to resume"
        again = args
    else:
        (monitor,) = tmp_path.glob("tmp.monitor.*")
        name = monitor.name
        assert re.fullmatch(r"tmp\.monitor\.\d{14}", name)
        assert stopped.group(2) == (
            f"to resume, run the same command with -m {name} added (or --resume -m {name}): "
            "without -m it starts a new run in a new folder")
        again = [*args, "-m", name]
    shown = monitor if monitor_given else monitor.name  # as -m gave it
    assert stopped.group(1).startswith(f"{shown}/checkpoints/checkpoint_e0000_i")
    resumed = subprocess.run([sys.executable, str(REPO / "train.py"), *again], cwd=tmp_path,
                             capture_output=True, text=True, timeout=TIMEOUT,
                             env={**os.environ, "MPLBACKEND": "Agg"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {stopped.group(1)} (epoch 0, iteration" in resumed.stderr
    assert sorted(p.name for p in tmp_path.glob("tmp.monitor.*")) == \
        ([] if monitor_given else [monitor.name])  # no second, fresh run
