"""train.py under a real one-node Slurm (tests/slurm_cluster.py): each srun MPI plugin mode
either joins one MPI world or stops with one line; a start-up that never ends stops with a
line; the shipped batch script runs, reports a user error as mpirun does, and survives a
preemption: signalled, checkpointed, requeued by itself and finished, its weights those of
an uninterrupted run."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

import pytest
from marks import slow
from paths import REPO
from run_fixtures import assert_same_run, scalars
from slurm_cluster import SlurmCluster, missing_binaries
from train_fixtures import PREEMPTED, epoch_bar_shown, run_train, train_args, values, wait_for

if missing_binaries():
    pytest.skip(f"no Slurm here (missing: {', '.join(missing_binaries())}; "
                "scripts/setup.sh --dev installs it where apt is there)",
                allow_module_level=True)

PYTHON = sys.executable
TRAIN = str(REPO / "train.py")
SCRIPT = REPO / "scripts" / "slurm" / "train.sbatch"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield started
    started.stop()


def srun(cluster: SlurmCluster, mode: str, *args: str, timeout: float = 120):
    """`srun -n 2 --mpi=<mode> ...`, the commonest launch line."""
    return cluster.run(["srun", "-n", "2", f"--mpi={mode}", *args], check=False,
                       timeout=timeout, cwd=REPO, env={"MPLBACKEND": "Agg"})


def our_lines(stderr: str):
    return [line for line in stderr.splitlines() if not line.startswith(("srun:", "slurmstepd"))]


@pytest.mark.parametrize("mode, words", [
    ("none", "srun started 2 processes without an MPI plugin (srun --mpi=none)"),
    ("pmix", "srun started 2 processes over PMIx (srun --mpi=pmix), which this MPI library"),
])
def test_srun_modes_that_cannot_form_one_world_stop_with_one_line(cluster, setup, tmp_path,
                                                                  mode, words):
    done = srun(cluster, mode, PYTHON, TRAIN, *train_args(setup, tmp_path / "run"))
    assert done.returncode == 2, done.stderr
    lines = our_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {words}"), done.stderr
    assert "--mpi=pmi2" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


@slow
def test_srun_with_pmi2_trains_one_world(cluster, setup, tmp_path):
    done = srun(cluster, "pmi2", PYTHON, TRAIN, *train_args(setup, tmp_path / "run", "-e", 1))
    assert done.returncode == 0, done.stderr
    assert "; 2 ranks" in done.stderr and "batch 8 per rank x 2 rank(s)" in done.stderr
    assert (tmp_path / "run" / "param_001.h5").exists()


JOIN = "from mpi4py import MPI; MPI.COMM_WORLD.Barrier(); print(MPI.COMM_WORLD.Get_size())"


def test_srun_with_pmi2_starts_every_time(cluster):
    """MPI's start-up under srun --mpi=pmi2, 20 launches in a row, each one world of 2 (what
    made some fail before: see slurm_cluster._first_job_id)."""
    for launch in range(20):
        done = srun(cluster, "pmi2", PYTHON, "-c", JOIN, timeout=60)
        assert (done.returncode, done.stdout) == (0, "2\n2\n"), \
            f"launch {launch + 1}: {done.stderr}"


def test_a_user_error_under_srun_is_status_2_with_srun_s_summary_after_it(cluster, setup,
                                                                           tmp_path):
    """No MPI_Abort under srun: Slurm would cancel the step (status 137, its CANCELLED
    lines); the ranks end themselves instead, and srun adds only its summary line."""
    done = srun(cluster, "pmi2", PYTHON, TRAIN, *train_args(
        setup, tmp_path / "run", "--train-list", tmp_path / "missing_label"))
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line]
    assert re.match(r"\[rank \d\] error: list file .*missing_label \(--train-list\) not "
                    "found: create_input_files.py -T .* writes it as <folder>/train_label$",
                    lines[-2]), done.stderr
    assert re.match(r"srun: error: \w+: tasks? [0-9-]+: Exited with exit code 2$", lines[-1])
    assert "CANCELLED" not in done.stderr and "Killed" not in done.stderr


def rank_pid(monitor: Path, rank: int) -> int:
    """The process of `rank` of the srun step training into `monitor`."""
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(monitor).encode() in command and f"PMI_RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no rank {rank} training into {monitor}")


@slow
def test_a_rank_killed_under_srun_ends_the_job(cluster, setup, tmp_path):
    """Without srun -K1 nothing of Slurm's ends the step: the rank's node-mates see it gone."""
    monitor, log = tmp_path / "run", tmp_path / "stderr.txt"
    with open(log, "w") as err:
        job = subprocess.Popen(["srun", "-n", "2", "--mpi=pmi2", PYTHON, TRAIN,
                                *train_args(setup, monitor)], cwd=REPO, env=cluster.env,
                               stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for(epoch_bar_shown(log, 1), job, "epoch 1")
        victim = rank_pid(monitor, 1)
        os.kill(victim, signal.SIGKILL)
        status = job.wait(timeout=120)  # (left alone, the step would never end)
    finally:
        job.kill()
    assert status != 0
    assert f"error: rank 1 (pid {victim}) ended without a word (killed?) while the others " \
           "waited for it; stopping the job" in log.read_text()


def test_a_task_that_never_starts_ends_the_others_with_a_line(cluster, setup, tmp_path):
    """Task 1 never reaches MPI_Init; task 0 waits there until its start-up limit (the
    --hang-timeout, when shorter than 300 s), then stops with one line, not a hang."""
    wrapper = tmp_path / "task.sh"
    wrapper.write_text('[ "$SLURM_PROCID" = 1 ] && exec sleep 60\nexec "$@"\n')
    # (the 2 s limit is read from the line; the 300 s default would outlast the timeout)
    done = cluster.run(["srun", "-K1", "-n", "2", "--mpi=pmi2", "bash", str(wrapper), PYTHON, TRAIN,
                        *train_args(setup, tmp_path / "run", "--hang-timeout", 2)],
                       check=False, timeout=240, cwd=REPO)
    assert done.returncode != 0
    assert "error: MPI did not start within 2 s (srun started 2 processes): another process " \
           "of the job failed or never started; stopping this one" in done.stderr


def sbatch(cluster: SlurmCluster, log: Path, *args: object, tasks: int = 2,
           flags: Sequence[str] = ()) -> str:
    """Submit the shipped batch script with train.py's `args`; the job's id."""
    out = cluster.run(["sbatch", "--parsable", "-J", "demo", "-n", str(tasks), "-o", str(log),
                       *flags, str(SCRIPT), *map(str, args)], cwd=REPO,
                      env={"MPLBACKEND": "Agg"}).stdout
    return out.strip().split(";")[0]


def preempt_in_epoch(cluster: SlurmCluster, job: str, log: Path, epoch: int) -> None:
    """What --signal=B:USR1@T sends ahead of the time limit (SIGUSR1 to the batch shell),
    once `epoch` has started."""
    deadline = time.monotonic() + 120
    while not (log.exists() and epoch_bar_shown(log, epoch)()):
        assert time.monotonic() < deadline and cluster.job_state(job) in ("PENDING", "RUNNING")
        time.sleep(0.05)
    cluster.run(["scancel", "--batch", "-s", "USR1", job])


def wait_for_job(cluster: SlurmCluster, job: str, states=("COMPLETED", "FAILED"),
                 timeout: float = 240) -> str:
    """The job's final state. A requeued job starts again once its credential expired
    (slurm_cluster.CRED_EXPIRE + 1 s); forced to start sooner, slurmd refuses it ("already
    killed") and the job fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = cluster.job_state(job)
        if state in states:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job} still {cluster.job_state(job)} after {timeout} s")


def test_the_batch_script_ends_a_user_error_as_mpirun_does(cluster, setup, tmp_path):
    log = tmp_path / "job.log"
    job = sbatch(cluster, log, *train_args(setup, tmp_path / "run", "--train-list",
                                           tmp_path / "missing_label"))
    assert wait_for_job(cluster, job) == "FAILED"
    assert cluster.job_field(job, "ExitCode") == "2:0"
    last = log.read_text().rstrip().splitlines()[-1]
    assert re.match(r"\[rank \d\] error: list file .*missing_label \(--train-list\) not "
                    "found: create_input_files.py -T .* writes it as <folder>/train_label$",
                    last), log.read_text()


@pytest.fixture(scope="module")
def reference(setup, tmp_path_factory) -> Path:
    """The run of the batch-script tests, uninterrupted under mpirun -n 2."""
    monitor = tmp_path_factory.mktemp("slurm_reference") / "run"
    done = run_train(*train_args(setup, monitor), mpi_ranks=2)
    assert done.returncode == 0, done.stderr
    return monitor


@slow
def test_a_preempted_job_requeues_itself_and_ends_as_an_uninterrupted_run(cluster, setup,
                                                                         reference, tmp_path):
    monitor, log = tmp_path / "run", tmp_path / "job.log"
    job = sbatch(cluster, log, *train_args(setup, monitor))
    preempt_in_epoch(cluster, job, log, 1)
    assert wait_for_job(cluster, job) == "COMPLETED", log.read_text()
    text = log.read_text()
    assert f"job {job} stopped resumably: requeued" in text
    assert "(restart 1)" in text and "resuming from" in text
    assert cluster.job_field(job, "Restarts") == "1"
    # The series, epoch timers and every weight file equal (the checkpoints differ by name:
    # the requeued run also kept the one it stopped at).
    assert_same_run(reference, monitor, checkpoint=False)
    assert "stopped by SIGUSR1 at epoch 1" in text and PREEMPTED == 75


@slow
def test_a_job_preempted_on_2_ranks_continues_on_1_with_the_global_batch(cluster, setup,
                                                                        reference, tmp_path):
    """A job that gets fewer tasks the next time: -b doubled keeps the global batch, and the
    run continues on the uninterrupted run's learning-rate curve (tests/test_resume_ranks.py
    measures how close its losses stay)."""
    monitor = tmp_path / "run"
    first = sbatch(cluster, tmp_path / "first.log", *train_args(setup, monitor),
                   flags=["--no-requeue"])
    preempt_in_epoch(cluster, first, tmp_path / "first.log", 1)
    assert wait_for_job(cluster, first) == "FAILED"  # (75: resumable, not requeued here)
    assert cluster.job_field(first, "ExitCode") == f"{PREEMPTED}:0"
    log = tmp_path / "second.log"
    second = sbatch(cluster, log, *train_args(setup, monitor, "-b", 16), tasks=1)
    assert wait_for_job(cluster, second) == "COMPLETED", log.read_text()
    assert "resuming a 2-rank run on 1 rank: batch 8 x 2 ranks -> 16 x 1 rank, global batch " \
           "16 kept" in log.read_text()
    assert scalars(monitor)["train/learning_rate"] == scalars(reference)["train/learning_rate"]
    assert values(monitor, "Train-loss")[0] == values(reference, "Train-loss")[0]
