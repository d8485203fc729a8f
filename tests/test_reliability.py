"""Fault tests: every script run as a user would (subprocess, mpirun), then hurt on purpose.

Preemption (SIGTERM, SIGINT, SIGUSR1; one process and `mpirun -n 2`), `kill -9` at random
moments and during a checkpoint write, a rank dying or failing alone under mpirun,
divergence and loss-scale overflow, an unwritable or full monitor path (the bad inputs of
every script: test_bad_input.py). Every process runs under a deadline and is killed with its
process group if it overruns, so a hang fails a test instead of holding CI.

Train-time faults (one test each, below): a corrupt image only in rank 1's shard under
mpirun (the job stops with "[rank 1] error: cannot decode ...", status 2), an unwritable
monitor path (under a file, under /proc, a read-only mount), too little space or a too
small `ulimit -f` (each an error before training starts), a disk that fills mid-run
(an error naming the file; no temporary file left; the run resumes once there is room),
and a second run started into the monitor path of a running one (refused, naming it).
"""
from __future__ import annotations

import os
import random
import re
import resource
import signal
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import pytest
from fault_fixtures import (
    DEADLINE,
    Process,
    alive,
    leftovers,
    one_error,
    paused,
    rank_pids,
    run,
    tmpfs,
    write_config,
)
from paths import DEMO
from run_fixtures import assert_same_run, checkpoint_names, train_command

from utils.data.batch_plan import batch_positions, epoch_order
from utils.train.checkpoint import list_checkpoints, load_checkpoint
from utils.weights.files import read_parameters

pytestmark = pytest.mark.slow  # every test here runs scripts end to end

ARCH = "mobilenet_v3_small"
BATCH = 8
PREEMPTED = 75
HUNG = 124
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
FIRST_STEP = "epoch 0 iteration 0"  # a pause point: a signal there stops after iteration 1


# --------------------------------------------------------------------------- set-up


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def data(work) -> Dict[str, Path]:
    """List files over the demo set: 24 training images (3 iterations of 8), the first 8
    of them (1 iteration), 8 validation images; and the recipes."""
    classes = sorted(p.name for p in (DEMO / "train").iterdir() if p.is_dir())
    rows = []
    for label, name in enumerate(classes[:8]):
        files = sorted((DEMO / "train" / name).iterdir())[:3]
        rows += [f"{name}/{f.name} {label}\n" for f in files]
    rows = [rows[i] for i in np.random.RandomState(0).permutation(len(rows))]
    truth = (DEMO / "val_ground_truth.txt").read_text().split()
    out = {"train24": work / "train24", "train8": work / "train8", "val8": work / "val8"}
    out["train24"].write_text("".join(rows))
    out["train8"].write_text("".join(rows[:8]))
    out["val8"].write_text("".join(f"ILSVRC2012_val_{i:08d}.JPEG {truth[i - 1]}\n"
                                   for i in range(1, 9)))
    out["config"] = write_config(work / "quick.yaml")
    return out


def job_args(monitor: Path, data: Dict[str, Path], *extra: object, train_list: str = "train24",
             config: Optional[Path] = None, train_dir: Path = DEMO / "train",
             validate: bool = True) -> List[str]:
    """The command of one of this module's jobs (`run`, `Process`): train.py and its
    arguments, 10 classes, validated on 8 images unless `validate` is False."""
    return ["train.py", *train_command(
        monitor, config or data["config"], data[train_list] if train_list in data else train_list,
        data["val8"], "-v", 1 if validate else 0, *extra, arch=ARCH, classes=10, batch=BATCH,
        train_dir=train_dir)]


@pytest.fixture(scope="module")
def reference(work, data) -> Path:
    """An uninterrupted single-process run (2 epochs of 3 iterations, validated)."""
    monitor = work / "reference"
    assert run(job_args(monitor, data), work, "reference").returncode == 0
    return monitor


@pytest.fixture(scope="module")
def reference_two_ranks(work, data) -> Path:
    """The same run on 2 ranks (2 iterations an epoch)."""
    monitor = work / "reference2"
    assert run(job_args(monitor, data), work, "reference2", mpi_ranks=2).returncode == 0
    return monitor


# --------------------------------------------------------------------------- 1. preemption


@pytest.mark.parametrize("signum", STOP_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_stop_signal_checkpoints_mid_epoch_and_the_resumed_run_matches(signum, work, data,
                                                                       reference):
    name = signal.Signals(signum).name
    monitor = work / f"stop-{name}"
    process = Process(job_args(monitor, data), work, f"stop-{name}", pause=FIRST_STEP)
    process.wait_for(paused(FIRST_STEP))  # waits there for the signal
    process.signal(signum)
    stopped = process.finish()
    assert stopped.returncode == PREEMPTED, stopped.stderr[-3000:]
    saved = checkpoint_names(monitor)
    assert saved == ["checkpoint_e0000_i0000001.npz"]
    assert f"stopped by {name} at epoch 0, iteration 1; saved {monitor}/checkpoints/" \
           f"{saved[0]}" in stopped.stderr
    load_checkpoint(str(monitor / "checkpoints" / saved[0]))  # checksum verified

    resumed = run(job_args(monitor, data), work, f"resume-{name}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {monitor}/checkpoints/{saved[0]} (epoch 0, iteration 1)" \
           in resumed.stderr
    assert_same_run(reference, monitor, weight_files=["param_002.h5"], checkpoint=False)


@pytest.mark.parametrize("signum,target", [
    (signal.SIGTERM, "launcher"), (signal.SIGINT, "launcher"), (signal.SIGUSR1, "launcher"),
    (signal.SIGTERM, "rank 1"),
], ids=["SIGTERM-mpirun", "SIGINT-mpirun", "SIGUSR1-mpirun", "SIGTERM-rank1-only"])
def test_stop_under_mpirun_is_agreed_by_every_rank(signum, target, work, data,
                                                   reference_two_ranks):
    """mpirun (MPICH's Hydra) passes the signal on to the ranks; a signal that reaches only
    one rank (a scheduler signalling processes) stops them all at the same iteration."""
    case = f"mpi-{signal.Signals(signum).name}-{target.replace(' ', '')}"
    monitor = work / case
    process = Process(job_args(monitor, data), work, case, mpi_ranks=2, pause=FIRST_STEP)
    process.wait_for(paused(FIRST_STEP))  # every rank waits there until one is signalled
    if target == "launcher":
        process.signal(signum)
    else:
        ranks = rank_pids(process.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signum)
    stopped = process.finish()
    assert stopped.returncode == PREEMPTED, stopped.stdout + stopped.stderr[-3000:]
    by = "a signal to another rank" if target == "rank 1" else signal.Signals(signum).name
    assert f"stopped by {by} at epoch 0, iteration 1" in stopped.stderr
    assert checkpoint_names(monitor) == ["checkpoint_e0000_i0000001.npz"]
    if signum == signal.SIGTERM:  # the resumed job continues exactly
        resumed = run(job_args(monitor, data), work, case + "-resume", mpi_ranks=2)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_run(reference_two_ranks, monitor, weight_files=["param_002.h5"],
                        checkpoint=False)


# --------------------------------------------------------------------------- 2. kill -9


def kill_during_a_checkpoint_write(command: List[str], work: Path, checkpoints: Path
                                   ) -> List[str]:
    """kill -9 while the first checkpoint file is being written (held there by the pause
    point, between its last byte and its rename); return the temporary file left."""
    process = Process(command, work, "kill-write", pause="checkpoint written")
    process.wait_for(paused("checkpoint written"))
    process.kill()
    assert list_checkpoints(str(checkpoints)) == []
    left = leftovers(checkpoints)
    assert len(left) == 1 and left[0].endswith(".npz"), left
    return left


def kill_at_random_moments(command: List[str], work: Path, checkpoints: Path,
                           stale: List[str]) -> None:
    """kill -9 at random moments after each resume began: the first restart removes the
    `stale` temporaries, and the newest checkpoint is always intact."""
    rng = random.Random(7)
    for attempt in range(4):
        newest = list_checkpoints(str(checkpoints))
        process = Process(command, work, f"kill-random-{attempt}")
        if newest:
            process.wait_for(f"resuming from {newest[0]} ")
        else:
            process.wait_for("epoch 0:")
        if attempt == 0:
            for path in stale:
                assert f"removed {path}, left by an interrupted write" in process.stderr()
            assert not leftovers(checkpoints)
        time_to_kill = rng.uniform(0.0, 2.0)
        try:
            process.popen.wait(timeout=time_to_kill)
        except subprocess.TimeoutExpired:
            process.kill()
        saved = list_checkpoints(str(checkpoints))
        if saved:  # (none yet when the kill came before the first epoch's end)
            load_checkpoint(saved[0])


def test_kill_9_at_any_moment_never_loses_the_newest_intact_checkpoint(work, data):
    """One iteration an epoch, so a good part of the time goes to checkpoints: killed once
    while a checkpoint file is being written (seen by its temporary file), then at random
    moments, then with the newest checkpoint damaged on disk. Each restart resumes from the
    newest intact checkpoint and says so; the finished run equals an uninterrupted one."""
    epochs = 8
    args = dict(train_list="train8", validate=False)
    reference = work / "kill-reference"
    assert run(job_args(reference, data, "-e", epochs, **args), work,
               "kill-reference").returncode == 0
    monitor = work / "kill-9"
    command = job_args(monitor, data, "-e", epochs, **args)
    checkpoints = monitor / "checkpoints"

    stale = kill_during_a_checkpoint_write(command, work, checkpoints)
    kill_at_random_moments(command, work, checkpoints, stale)

    # c) the newest checkpoint damaged on disk: named, skipped, the one before used
    if len(list_checkpoints(str(checkpoints))) < 2:  # the random kills all came early
        assert run(command, work, "kill-complete").returncode == 0
    saved = list_checkpoints(str(checkpoints))
    with open(saved[0], "r+b") as f:
        f.seek(len(Path(saved[0]).read_bytes()) // 2)
        f.write(b"\0" * 64)
    finished = run(command, work, "kill-finish")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"skipping damaged checkpoint: {saved[0]}: " in finished.stderr
    assert f"resuming from {saved[1]} " in finished.stderr
    assert_same_run(reference, monitor, ("Train-loss", "Train-error"),
                    [f"param_{epochs:03d}.h5"], checkpoint=False)
    assert not leftovers(monitor)


# --------------------------------------------------------------------------- 3. dead ranks


def test_a_rank_killed_under_mpirun_stops_the_job(work, data):
    monitor = work / "rank-killed"
    process = Process(job_args(monitor, data, "-e", 20), work, "rank-killed", mpi_ranks=2)
    process.wait_for("epoch 0:")
    ranks = rank_pids(process.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    finished = process.finish()  # bounded: rank 0 must not wait in an all-reduce
    assert finished.returncode != 0
    assert "BAD TERMINATION" in finished.stdout and "signal 9" in finished.stdout
    assert not alive(ranks[0])


def test_an_error_in_one_rank_only_stops_the_job_with_its_message(work, data):
    """A corrupt image that only rank 1 reads: rank 1 reports it and aborts the job; rank 0,
    waiting in the gradient all-reduce, is stopped with it."""
    lines = data["train24"].read_text().splitlines()
    order = epoch_order(len(lines), 0, 0, shuffle=True)
    positions, _ = batch_positions(len(lines), BATCH, rank=1, num_ranks=2, iteration=0)
    victim = int(order[positions[0]])
    root = work / "rank1-shard"
    for number, line in enumerate(lines, 1):
        path = root / line.split()[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        data_bytes = (DEMO / "train" / line.split()[0]).read_bytes()
        path.write_bytes(data_bytes[:300] if number == victim + 1 else data_bytes)
    bad = root / lines[victim].split()[0]
    monitor = work / "rank1-error"
    finished = run(job_args(monitor, data, train_dir=root), work, "rank1-error",
                   mpi_ranks=2)
    assert finished.returncode == 2, finished.stdout + finished.stderr[-3000:]
    assert "Traceback" not in finished.stderr
    errors = finished.error_lines()
    assert len(errors) == 1, finished.stderr[-3000:]
    assert errors[0].startswith(f"[rank 1] error: cannot decode {bad} (line {victim + 1} of "
                                f"{data['train24']})"), errors


def test_a_rank_that_hangs_under_mpirun_ends_the_job_with_where_it_waits(work, data):
    """Rank 1 stopped (alive, never progressing): rank 0, waiting in a collective for it,
    gives up after --hang-timeout with the stacks of its threads; the launcher ends both."""
    monitor = work / "rank-hangs"
    process = Process(job_args(monitor, data, "-e", 20, "--hang-timeout", 4), work,
                      "rank-hangs", mpi_ranks=2)
    process.wait_for("epoch 0:")
    ranks = rank_pids(process.pid)
    os.kill(ranks[1], signal.SIGSTOP)
    finished = process.finish()
    errors = finished.error_lines()
    assert errors and errors[0].startswith("[rank 0] error: no progress for "), errors
    assert int(re.search(r"no progress for (\d+) s", errors[0]).group(1)) >= 4, errors
    assert "(--hang-timeout 4): this rank is stuck, or waits in a collective" in errors[0]
    stack = finished.stderr[finished.stderr.index(errors[0]):]
    assert "thread MainThread, most recent call last:" in stack, stack[-3000:]
    assert re.search(r"in all_reduce_\w+", stack) and "_give_up" not in stack, stack[-3000:]
    assert finished.returncode == HUNG, finished.stdout[-2000:]
    try:  # the launcher kills the stopped rank; the kernel may take a moment to end it
        deadline = time.monotonic() + DEADLINE
        while any(alive(pid) for pid in ranks.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(ranks[0]) and not alive(ranks[1])
    finally:
        for pid in ranks.values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_single_process_stuck_reading_its_data_gives_up(work, data):
    """A listed image that is a named pipe nobody writes to: reading it blocks forever, as a
    dead network file system would."""
    root = work / "stuck-io"
    lines = data["train24"].read_text().splitlines()
    for line in lines:
        path = root / line.split()[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.symlink_to(DEMO / "train" / line.split()[0])
    stuck = root / lines[0].split()[0]
    stuck.unlink()
    os.mkfifo(stuck)
    finished = run(job_args(work / "stuck-io-run", data, "--hang-timeout", 3,
                              train_dir=root), work, "stuck-io")
    assert finished.returncode == HUNG, finished.stderr[-3000:]
    assert finished.error_lines()[0].startswith("error: no progress for ")
    assert "(--hang-timeout 3): this rank is stuck" in finished.error_lines()[0]


# --------------------------------------------------------------------------- 4. numerical


def test_divergence_stops_with_a_clear_message_and_the_last_checkpoint_intact(work, data):
    """Learning rate x 1e12 from epoch 1 (a step schedule): epoch 0 is checkpointed, then the
    loss turns non-finite at the second step (or the weights at the epoch's end)."""
    config = write_config(work / "diverges.yaml", lr_scheduler={
        "type": "EpochStepLearningRateScheduler",
        "args": {"base_lr": 0.002, "decay_at": [1], "decay_rate": 1.0e12, "warmup_epochs": 0}})
    monitor = work / "diverges"
    finished = run(job_args(monitor, data, "-e", 4, config=config, validate=False), work,
                   "diverges")
    last = monitor / "checkpoints" / "checkpoint_e0001_i0000000.npz"
    line = one_error(finished, "training diverged", f"the last checkpoint, {last}, is intact",
                     "lower learning rate")
    assert re.match(r"error: non-finite (training loss at|parameters after) epoch 1", line), line
    assert checkpoint_names(monitor) == [last.name]
    kept = load_checkpoint(str(last))
    assert all(np.isfinite(v).all() for v in kept.params.values())
    assert not leftovers(monitor)


def test_dynamic_loss_scaling_skips_and_counts_overflowing_steps(work, data):
    """A loss scale of 1e36 overflows float32 gradients here: those steps are skipped and the
    scale halved until they fit (near 1e35), then training goes on."""
    config = write_config(work / "overflow.yaml", loss_scaling=1.0e36)
    monitor = work / "overflow"
    finished = run(job_args(monitor, data, "-e", 3, "--dynamic-loss-scaling", config=config,
                              validate=False), work, "overflow")
    assert finished.returncode == 0, finished.stderr[-3000:]
    logged = re.findall(r"; (\d+) overflow step\(s\) skipped, loss scale now (\S+)",
                        finished.stderr)
    assert len(logged) == 3, finished.stderr[-3000:]
    skipped = sum(int(count) for count, _ in logged)
    assert 0 < skipped < 9, logged  # some steps skipped, then real ones
    assert float(logged[-1][1]) == 1.0e36 / 2**skipped  # each skip halved the scale
    params = read_parameters(str(monitor / "param_003.h5"))
    assert all(np.isfinite(p.data).all() for p in params.values())


def test_non_finite_weights_are_never_saved(tmp_path):
    """A step can overflow the weights while its loss was still finite; train.py checks them
    before every checkpoint and weight file (in-process: no run provokes this on demand)."""
    import nnabla as nn

    from utils.process.comm import Communicator
    from utils.train.state import check_finite_parameters

    weights = nn.parameter.get_parameter_or_create("affine/W", (2, 2))
    weights.d = np.ones((2, 2))
    check_finite_parameters(Communicator(), str(tmp_path), "after epoch 3")
    weights.d = np.array([[1.0, np.inf], [0.0, 1.0]])
    with pytest.raises(FloatingPointError, match=r"^non-finite parameters after epoch 3 "
                       r"\('affine/W'\): training diverged; no checkpoint was saved"):
        check_finite_parameters(Communicator(), str(tmp_path), "after epoch 3")


# --------------------------------------------------------------------------- 5. disk


def test_a_second_run_into_a_monitor_path_in_use_is_refused_and_the_first_goes_on(
        work, data, reference):
    monitor = work / "shared-monitor"
    first = Process(job_args(monitor, data), work, "in-use-first", pause=FIRST_STEP)
    first.wait_for(paused(FIRST_STEP))  # it holds the path until it is signalled
    second = run(job_args(monitor, data, "--seed", "1"), work, "in-use-second")
    one_error(second, f"{monitor}: monitor path in use by the run with pid {first.pid} on ",
              "choose another path")
    assert "epoch 0" not in second.stderr
    first.signal(signal.SIGTERM)
    stopped = first.finish()
    assert stopped.returncode == PREEMPTED, stopped.stderr[-3000:]
    # The lock ends with its run: the same path takes a new run (which resumes the first).
    again = run(job_args(monitor, data), work, "in-use-again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {monitor}/checkpoints/checkpoint_e0000_i0000001.npz" in again.stderr
    assert_same_run(reference, monitor, weight_files=["param_002.h5"], checkpoint=False)


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_unwritable_monitor_path_is_an_error_before_training(where, work, data):
    blocker = work / "a-file"
    blocker.write_text("not a folder\n")
    monitor = blocker / "run" if where == "under-a-file" else Path("/proc/imagenet-run")
    finished = run(job_args(monitor, data), work, f"unwritable-{where}")
    one_error(finished, f"cannot write to the monitor path {monitor}: ")
    assert "epoch 0" not in finished.stderr


def test_read_only_monitor_path_is_an_error_before_training(work, data):
    with tmpfs(work / "read-only", "1m", read_only=True) as folder:
        finished = run(job_args(folder / "run", data), work, "read-only")
    one_error(finished, "cannot write to the monitor path", "Read-only file system")
    assert "epoch 0" not in finished.stderr


def test_file_size_limit_below_a_checkpoint_is_an_error_before_training(work, data):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    finished = run(job_args(work / "ulimit", data), work, "ulimit", preexec_fn=limit)
    one_error(finished, "the file size limit (ulimit -f) of 1.0 MB is below")
    assert "epoch 0" not in finished.stderr


def test_too_little_space_is_an_error_before_training(work, data):
    with tmpfs(work / "tiny-disk", "2m") as folder:
        finished = run(job_args(folder / "run", data), work, "tiny-disk")
        one_error(finished, f"not enough space in the monitor path {folder / 'run'}: ")
        assert "epoch 0" not in finished.stderr
        assert not leftovers(folder)


def test_disk_filling_up_mid_run_leaves_no_partial_file_and_the_run_resumes(work, data):
    """28 MB holds two checkpoints (12 MB each) but not a third: the third write is refused
    before it starts, naming the folder, the two before stay intact, and with more room the
    run resumes."""
    with tmpfs(work / "filling-disk", "28m") as folder:
        monitor = folder / "run"
        args = job_args(monitor, data, "-e", 4, "-s", 1000, train_list="train8",
                          validate=False)
        finished = run(args, work, "disk-full")
        one_error(finished, f"not enough space in the checkpoint folder {monitor}/checkpoints: ",
                  "MB free")
        assert checkpoint_names(monitor) == ["checkpoint_e0002_i0000000.npz",
                                             "checkpoint_e0001_i0000000.npz"]
        load_checkpoint(str(monitor / "checkpoints" / "checkpoint_e0002_i0000000.npz"))
        assert not leftovers(monitor)
        grown = subprocess.run(["mount", "-o", "remount,size=80m", str(folder)])
        assert grown.returncode == 0
        resumed = run(args, work, "disk-full-resume")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming from" in resumed.stderr and "checkpoint_e0002_i0000000.npz" \
            in resumed.stderr
        assert [line.split()[0] for line in
                (monitor / "Train-loss.series.txt").read_text().splitlines()] == \
            ["0", "1", "2", "3"]


@pytest.mark.parametrize("kind, size, extra, refused", [
    # param_001.h5 (6.1 MB) and a checkpoint (12.2 MB) fill 20 MB: param_002.h5 is refused
    ("weight file", "20m", [], "param_002.h5"),
    # with EMA, param_ema_002.h5 is the write that no longer fits in 40 MB
    ("EMA weight file", "40m", ["--ema-decay", 0.9], "param_ema_002.h5"),
])
def test_a_full_disk_at_each_kind_of_write_is_one_line_and_keeps_the_checkpoint(
        kind, size, extra, refused, work, data):
    with tmpfs(work / f"full-{kind.replace(' ', '-')}", size) as folder:
        monitor = folder / "run"
        finished = run(job_args(monitor, data, "-e", 3, "-s", 1, "--keep-checkpoints", 1,
                                  *extra, train_list="train8", validate=False),
                       work, f"full-{kind.replace(' ', '-')}")
        one_error(finished, "not enough space in the folder of the weight file "
                            f"{monitor}: ", "MB free")
        assert not (monitor / refused).exists() and not leftovers(monitor)
        assert checkpoint_names(monitor) == ["checkpoint_e0001_i0000000.npz"]
        load_checkpoint(str(monitor / "checkpoints" / "checkpoint_e0001_i0000000.npz"))
