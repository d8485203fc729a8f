"""How this process was launched, read from the environment before MPI starts, and the
launches that cannot train one model refused with one line.

A launcher that starts N processes tells them so in its own variables: Slurm's `srun`
(`SLURM_STEP_NUM_TASKS`), MPICH's Hydra and `srun --mpi=pmi2` (`PMI_SIZE`), Open MPI
(`OMPI_COMM_WORLD_SIZE`), PMIx (`PMIX_RANK`). MPI joins them into one world only when the MPI
library speaks the launcher's wire protocol; otherwise each process starts a world of its own
and trains alone, at 1/N of the global batch, with nothing said. The checks here make that
impossible: `launch_problem` before MPI starts (no wire at all, or one the library cannot
speak), `world_problem` after (a world smaller than what the launcher started).

The rank -> GPU rule is NNabla's own: its NCCL communicator (`MultiProcessDataParallel-
Communicator`) puts rank r on device `local rank` of the devices the process sees, whatever
context the script chose; `gpu_problem` says when a node's layout cannot work with that.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

# Where to read how to launch under a scheduler.
CLUSTERS_HELP = "see docs/clusters.md"
# Launcher variables giving a rank's index on its node (Open MPI, MPICH/Hydra, Slurm). Hydra
# started by mpirun inside a Slurm allocation runs its proxies as one srun task per node, so
# SLURM_LOCALID is 0 for every rank there: the MPI launchers' own variables come first.
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")


def _count(env: Mapping[str, str], name: str) -> int:
    value = env.get(name, "")
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class Launch:
    """Who started this process and how many processes it started with it."""

    launcher: str  # "slurm" (srun), "hydra" (MPICH's mpirun), "open mpi", "pmix", "" (none)
    tasks: int  # processes started together; 1 for a plain `python script.py`
    wire: str  # how MPI learns of the others: "pmi" (PMI-1/2), "ompi", "pmix", "" (none)

    @property
    def parallel(self) -> bool:
        return self.tasks > 1

    def describe(self) -> str:
        names = {"slurm": "srun", "hydra": "mpirun", "open mpi": "Open MPI's mpirun",
                 "pmix": "a PMIx launcher"}
        return f"{names.get(self.launcher, self.launcher)} started {self.tasks} processes"


def read_launch(env: Mapping[str, str] = os.environ) -> Launch:
    """The launch this environment describes (see the module docstring)."""
    slurm_tasks = _count(env, "SLURM_STEP_NUM_TASKS")
    if "OMPI_COMM_WORLD_SIZE" in env:  # (Open MPI's launcher sets PMIX_* too)
        return Launch("open mpi", _count(env, "OMPI_COMM_WORLD_SIZE"), "ompi")
    if "PMI_SIZE" in env:
        # Hydra tells each rank how many share its node; srun --mpi=pmi2 does not.
        launcher = "hydra" if "MPI_LOCALNRANKS" in env or not slurm_tasks else "slurm"
        return Launch(launcher, _count(env, "PMI_SIZE"), "pmi")
    if "PMIX_RANK" in env:
        tasks = slurm_tasks or _count(env, "PMIX_SIZE") or 1
        return Launch("slurm" if slurm_tasks else "pmix", tasks, "pmix")
    if slurm_tasks > 1:
        return Launch("slurm", slurm_tasks, "")
    return Launch("", 1, "")


def library_speaks_pmix(library_version: str) -> bool:
    """Whether this MPI library (MPI_Get_library_version's text) can start under PMIx: Open
    MPI always can; MPICH only when built for it (pip's MPICH is built for PMI-1/2)."""
    if not library_version.startswith("MPICH"):
        return True
    configure = [line for line in library_version.splitlines()
                 if line.startswith("MPICH configure:")]
    return bool(configure) and any(flag in configure[0]
                                   for flag in ("--with-pmix", "--with-pmi=pmix"))


def launch_problem(launch: Launch, library_version: Optional[str] = None) -> Optional[str]:
    """Why this launch cannot make one MPI world, known before MPI starts (None: it can).
    `library_version` is the MPI library's own text, needed to judge a PMIx launch."""
    if not launch.parallel:
        return None
    if launch.wire == "":
        return (f"{launch.describe()} without an MPI plugin (srun --mpi=none): each would "
                "train alone on its share of the global batch; launch with `srun --mpi=pmi2 "
                f"...` or with `mpirun ...` inside the allocation ({CLUSTERS_HELP})")
    if launch.wire == "pmix" and library_version is not None \
            and not library_speaks_pmix(library_version):
        library = library_version.splitlines()[0].replace("Version:", "").split()
        return (f"{launch.describe()} over PMIx (srun --mpi=pmix), which this MPI library "
                f"({' '.join(library)}) cannot use; launch with `srun --mpi=pmi2 ...` or with "
                f"`mpirun ...` inside the allocation ({CLUSTERS_HELP})")
    return None


def world_problem(launch: Launch, world_size: int) -> Optional[str]:
    """Why the MPI world that started is not the launch's (None: it is)."""
    if world_size == launch.tasks or not launch.parallel:
        return None
    return (f"{launch.describe()} but MPI sees a world of {world_size}: the MPI library is "
            f"not the one the launcher was made for (e.g. pip's MPICH under Open MPI's "
            f"mpirun); launch with the mpirun of the MPI that mpi4py uses "
            f"({sys.prefix}/bin/mpirun here) ({CLUSTERS_HELP})")


def task_index(env: Mapping[str, str] = os.environ) -> int:
    """This process's index among all the launch started, known before MPI starts."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"):
        if env.get(name, "").isdigit():
            return int(env[name])
    return 0


def local_rank(env: Mapping[str, str] = os.environ) -> int:
    """This process's index among the ranks of its node (0 without a launcher)."""
    for name in _LOCAL_RANK_VARS:
        if env.get(name, "").isdigit():
            return int(env[name])
    return 0


def gpu_problem(local_rank: int, device_id: int, device_count: int, ranks: int,
                visible: Optional[str]) -> Optional[str]:
    """Why rank `local_rank` of its node cannot use GPU `local_rank` (NNabla's NCCL rule)
    among the `device_count` it sees (`visible`: CUDA_VISIBLE_DEVICES, None if unset);
    None when it can. `device_id` is -d: the first GPU of a single process, refused
    under several ranks, where it would put the rank and its gradients on two devices."""
    seen = f"CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "no CUDA_VISIBLE_DEVICES"
    if ranks > 1 and device_id != 0:
        return (f"-d {device_id} under {ranks} ranks: NNabla's multi-GPU communicator puts "
                "each rank on the GPU of its local rank, so -d cannot move it; choose the GPUs "
                "with CUDA_VISIBLE_DEVICES (e.g. CUDA_VISIBLE_DEVICES=2,3 mpirun -n 2 ...)")
    wanted = local_rank if ranks > 1 else device_id
    if wanted < device_count:
        return None
    if ranks > 1 and device_count >= 1:
        return (f"local rank {local_rank} needs GPU {local_rank} but this process sees "
                f"{device_count} ({seen}): NNabla's multi-GPU communicator puts each rank on "
                "the GPU of its local rank, so every rank must see all of its node's GPUs "
                "(srun --gpu-bind=none, no --gpus-per-task; or start one rank per visible GPU)")
    return (f"GPU {wanted} does not exist: this process sees {device_count} ({seen})")


class StartupGuard:
    """Ends this process with one line if MPI does not start within `timeout` seconds.

    Under `srun --mpi=pmi2`, a task whose MPI_Init fails leaves the others waiting in
    theirs for minutes: pip's MPICH failed so whenever a stale shared-memory segment of a
    killed job with the same job id was in /dev/shm (see docs/clusters.md). MPI_Init
    runs inside an import that holds the interpreter lock, so no Python thread can watch
    it: a forked child waits on a pipe instead, and kills this process (the launcher then
    ends the job) unless `done` closes the pipe in time.
    """

    def __init__(self, timeout: float, what: str):
        read, self._write = os.pipe()
        parent = os.getpid()
        self._child = os.fork()
        if self._child == 0:  # pragma: no cover - runs in the child
            os.close(self._write)
            ready, _, _ = select.select([read], [], [], timeout)
            if not ready:
                os.write(2, f"\nerror: MPI did not start within {timeout:g} s ({what}): "
                            f"another process of the job failed or never started; stopping "
                            f"this one\n".encode())
                os.kill(parent, signal.SIGKILL)
            os._exit(0)
        os.close(read)

    def done(self) -> None:
        os.close(self._write)
        os.waitpid(self._child, 0)


class SrunStep:
    """Under srun, the tasks of a job step end together when one fails or dies, each with
    its own status, and none is killed by Slurm.

    - A failing rank: MPI_Abort under `srun --mpi=pmi2` has Slurm cancel the step (status
      137, "CANCELLED" lines). Instead the failing rank asks Slurm to send SIGUSR2 to every
      task of its step (`scancel --signal` reaches every node) and exits with its own
      status; a task receiving the signal exits at once, quietly, with status 0, so the
      failing rank's line and status are the job's.
    - A rank that dies (`kill -9`, the out-of-memory killer) says nothing, and without
      `srun -K1` the others would wait in their collective until the hang timeout. Each
      task watches the others on its node: one gone while this task has waited in a
      collective for `PATIENCE` seconds ends the step as a failure would.
    The ranks wait in MPI collectives, where no Python signal handler runs: a thread reads
    the signal from the interpreter's wake-up pipe, and looks at the others once a second.
    """

    SIGNAL = signal.SIGUSR2
    PATIENCE = 2.0  # s in one collective with a node-mate gone: a collective that all
    # entered ends in milliseconds, so this is a collective a rank will never enter

    def __init__(self, job_step: str):
        self.job_step = job_step
        self.waiting_since: Optional[float] = None  # the collective this task is in
        self.node_mates: Dict[int, int] = {}  # rank -> pid, the other tasks of this node
        self._ending = False  # this task ends with its own status
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.signal(self.SIGNAL, lambda signum, frame: None)  # (the thread acts on it)
        signal.set_wakeup_fd(write)
        threading.Thread(target=self._watch, args=(read,), name="srun-step",
                         daemon=True).start()

    @classmethod
    def for_this_process(cls, launch: Launch,
                         env: Mapping[str, str] = os.environ) -> Optional[SrunStep]:
        """One for a task srun started directly (None elsewhere, or without scancel)."""
        if launch.launcher != "slurm" or shutil.which("scancel") is None:
            return None
        job, step = env.get("SLURM_JOB_ID", ""), env.get("SLURM_STEP_ID", "")
        return cls(f"{job}.{step}") if job.isdigit() and step.isdigit() else None

    def _watch(self, read: int) -> None:
        while True:
            ready, _, _ = select.select([read], [], [], 1.0)
            if ready and self.SIGNAL in os.read(read, 64) and not self._ending:
                os._exit(0)
            since = self.waiting_since
            if since is None or time.monotonic() - since < self.PATIENCE:
                continue
            gone = [rank for rank, pid in self.node_mates.items() if not _running(pid)]
            if gone and self.waiting_since == since:
                os.write(2, f"\nerror: rank {gone[0]} (pid {self.node_mates[gone[0]]}) ended "
                            "without a word (killed?) while the others waited for it; "
                            "stopping the job\n".encode())
                self.end(1)

    def end(self, code: int) -> None:
        """End this task with `code` and every other task of the step with 0."""
        self._ending = True
        subprocess.run(["scancel", "--quiet", f"--signal={self.SIGNAL.name[3:]}",
                        self.job_step], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=False)
        os._exit(code)


def _running(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False
