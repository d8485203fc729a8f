"""The launch decisions (utils/process/launch.py) on the environments launchers really set: each
environment below was read from processes started here by srun (Slurm 22.05, the three MPI
plugin modes), pip MPICH's mpirun (alone and inside a Slurm allocation), and as Open MPI's
mpirun documents it."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from utils.process.launch import (
    Launch,
    gpu_problem,
    launch_problem,
    library_speaks_pmix,
    local_rank,
    read_launch,
    world_problem,
)

SLURM_STEP = {"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_NTASKS": "2",
              "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NUM_NODES": "1", "SLURM_PROCID": "1",
              "SLURM_LOCALID": "1"}
ENVIRONMENTS = {
    "plain": {},
    "srun --mpi=none": SLURM_STEP,
    "srun --mpi=pmi2": {**SLURM_STEP, "PMI_FD": "11", "PMI_JOBID": "2.0", "PMI_RANK": "1",
                        "PMI_SIZE": "2"},
    "srun --mpi=pmix": {**SLURM_STEP, "PMIX_RANK": "1", "PMIX_NAMESPACE": "slurm.pmix.1.0",
                        "PMIX_VERSION": "4.2.2rc2"},
    "mpirun": {"PMI_FD": "5", "PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALNRANKS": "2",
               "MPI_LOCALRANKID": "1"},
    # Hydra's proxies run as one srun task per node: SLURM_LOCALID is 0 for every rank.
    "mpirun in salloc": {**SLURM_STEP, "SLURM_STEP_NUM_TASKS": "1", "SLURM_LOCALID": "0",
                         "PMI_RANK": "1", "PMI_SIZE": "2", "MPI_LOCALNRANKS": "2",
                         "MPI_LOCALRANKID": "1"},
    "open mpi": {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1",
                 "OMPI_COMM_WORLD_LOCAL_RANK": "1", "PMIX_RANK": "1"},
}
EXPECTED = {
    "plain": Launch("", 1, ""),
    "srun --mpi=none": Launch("slurm", 2, ""),
    "srun --mpi=pmi2": Launch("slurm", 2, "pmi"),
    "srun --mpi=pmix": Launch("slurm", 2, "pmix"),
    "mpirun": Launch("hydra", 2, "pmi"),
    "mpirun in salloc": Launch("hydra", 2, "pmi"),
    "open mpi": Launch("open mpi", 2, "ompi"),
}


def pip_mpich_version() -> str:
    """The installed MPI library's own text, read without starting MPI."""
    code = textwrap.dedent("""
        import mpi4py
        mpi4py.rc.initialize = False
        from mpi4py import MPI
        print(MPI.Get_library_version())
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_each_launcher_is_read_from_its_variables(name):
    launch = read_launch(ENVIRONMENTS[name])
    assert launch == EXPECTED[name]
    assert local_rank(ENVIRONMENTS[name]) == (0 if name == "plain" else 1)


def test_srun_without_an_mpi_plugin_is_refused_before_mpi_starts():
    problem = launch_problem(read_launch(ENVIRONMENTS["srun --mpi=none"]))
    assert problem.startswith("srun started 2 processes without an MPI plugin")
    assert "srun --mpi=pmi2" in problem and "mpirun" in problem and "\n" not in problem


@pytest.mark.parametrize("name", ["plain", "srun --mpi=pmi2", "mpirun", "mpirun in salloc",
                                  "open mpi"])
def test_launches_that_form_one_world_pass(name):
    assert launch_problem(read_launch(ENVIRONMENTS[name]), pip_mpich_version()) is None


def test_pmix_is_refused_for_pip_mpich_only():
    version = pip_mpich_version()
    assert version.startswith("MPICH") and not library_speaks_pmix(version)
    launch = read_launch(ENVIRONMENTS["srun --mpi=pmix"])
    assert launch_problem(launch) is None  # (the library is needed to judge)
    problem = launch_problem(launch, version)
    assert "over PMIx (srun --mpi=pmix)" in problem and "MPICH" in problem
    assert library_speaks_pmix("Open MPI v4.1.6, package: Open MPI ...")
    assert library_speaks_pmix("MPICH Version:  4.2.0\nMPICH configure: --with-pmix=/usr\n")
    assert not library_speaks_pmix("MPICH Version:  4.2.0\nMPICH configure: --without-pmix\n")


def test_a_world_smaller_than_the_launch_is_refused():
    launch = read_launch(ENVIRONMENTS["open mpi"])
    assert world_problem(launch, 2) is None
    assert "MPI sees a world of 1" in world_problem(launch, 1)
    assert world_problem(read_launch({}), 1) is None


@pytest.mark.parametrize("local, device_id, count, ranks, visible", [
    (3, 0, 4, 4, None),  # all GPUs of the node visible to every rank
    (1, 0, 2, 2, "2,3"),  # a subset, one per rank
    (0, 0, 1, 4, "5"),  # one GPU per task: the first rank still finds device 0
    (0, 1, 2, 1, None),  # a single process on its -d
])
def test_gpu_layouts_that_work(local, device_id, count, ranks, visible):
    assert gpu_problem(local, device_id, count, ranks, visible) is None


def test_one_gpu_per_task_is_refused_with_how_to_expose_them():
    problem = gpu_problem(1, 0, 1, 4, "6")
    assert problem.startswith("local rank 1 needs GPU 1 but this process sees 1 "
                              "(CUDA_VISIBLE_DEVICES=6)")
    assert "--gpu-bind=none" in problem


def test_more_ranks_than_gpus_and_a_device_id_under_mpi_are_refused():
    assert "needs GPU 2 but this process sees 2" in gpu_problem(2, 0, 2, 3, None)
    assert gpu_problem(0, 1, 4, 2, None).startswith("-d 1 under 2 ranks")
    assert gpu_problem(0, 3, 2, 1, None) == ("GPU 3 does not exist: this process sees 2 "
                                             "(no CUDA_VISIBLE_DEVICES)")


GUARD = """
import sys, time
sys.path.insert(0, {repo!r})
from utils.process.launch import StartupGuard
guard = StartupGuard({limit}, "srun started 2 processes")
time.sleep({sleep})
guard.done()
print("started")
"""


# A start-up that ends is given a limit no busy machine reaches (were `done` not to stop the
# guard, it would wait that long and then kill the process); one that never ends, 1 s.
@pytest.mark.parametrize("sleep, limit, started", [(0.0, 60.0, True), (30.0, 1.0, False)])
def test_a_start_up_that_never_ends_is_stopped_with_one_line(sleep, limit, started):
    from paths import HANG_GUARD, REPO

    done = subprocess.run(
        [sys.executable, "-c", GUARD.format(repo=str(REPO), sleep=sleep, limit=limit)],
        capture_output=True, text=True, timeout=HANG_GUARD)
    if started:
        assert (done.returncode, done.stdout, done.stderr) == (0, "started\n", "")
    else:
        assert done.returncode == -9 and done.stdout == ""
        assert done.stderr.strip() == ("error: MPI did not start within 1 s (srun started 2 "
                                       "processes): another process of the job failed or "
                                       "never started; stopping this one")
