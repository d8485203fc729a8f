"""Processes for the fault tests: scripts started as a user would, watched, signalled, killed.

Every process is started in its own session and waited for with a deadline; one that
overruns is killed with its whole process group, so a hang fails the test instead of CI.
Also the quick recipe the fault tests train with, and the checks that a failed run said one
line and left no temporary file.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest
import yaml
from paths import HANG_GUARD, REPO

from utils.process.pause_point import PAUSE_ENV

PYTHON = sys.executable
MPIRUN = str(Path(sys.executable).parent / "mpirun")
DEADLINE = HANG_GUARD  # seconds a process may take before it is killed and the test fails


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> List[str]:
        """stderr and stdout lines, progress-bar redraws split off, NNabla's INFO kept."""
        text = (self.stderr + "\n" + self.stdout).replace("\r", "\n")
        return [line for line in text.splitlines() if line.strip()]

    def error_lines(self) -> List[str]:
        return [line for line in self.lines if line.startswith(("error:", "[rank"))]


class Process:
    """A running script whose stderr and stdout go to files (so they can be polled)."""

    def __init__(self, args: Sequence[str], folder: Path, name: str, mpi_ranks: int = 0,
                 preexec_fn: Optional[Callable[[], None]] = None, pause: str = ""):
        """`pause`: a point where the script waits (utils/process/pause_point.py), for a signal sent
        once its line is seen (`wait_for(paused(pause))`), or a kill."""
        command = [PYTHON, *map(str, args)]
        if mpi_ranks:
            command = [MPIRUN, "-n", str(mpi_ranks), *command]
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path = folder / f"{name}.out"
        self.err_path = folder / f"{name}.err"
        self.started = time.monotonic()
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.popen = subprocess.Popen(
                command, cwd=REPO, stdout=out, stderr=err, start_new_session=True,
                env={**os.environ, "MPLBACKEND": "Agg", PAUSE_ENV: pause},
                preexec_fn=preexec_fn)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = DEADLINE) -> None:
        """Until `text` is on stderr; fails if the process ends or the time is up first."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.popen.poll() is not None:
                pytest.fail(f"ended ({self.popen.returncode}) before printing {text!r}:\n"
                            f"{self.stderr()[-3000:]}")
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"no {text!r} within {timeout} s")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()

    def finish(self, timeout: float = DEADLINE) -> Finished:
        """Wait for the end (killing the process group after `timeout` s, failing the test)."""
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"still running after {timeout} s (a hang?):\n{self.stderr()[-3000:]}")
        return Finished(self.popen.returncode, self.out_path.read_text(errors="replace"),
                        self.stderr(), time.monotonic() - self.started)


def paused(point: str) -> str:
    """The line a script writes when it reaches the pause `point`."""
    return f"test pause: {point}"


def run(args: Sequence[str], folder: Path, name: str, mpi_ranks: int = 0,
        preexec_fn: Optional[Callable[[], None]] = None,
        timeout: float = DEADLINE) -> Finished:
    """Run a script to its end (see `Process`)."""
    return Process(args, folder, name, mpi_ranks, preexec_fn).finish(timeout)


def _parent_of(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def descendants(pid: int) -> List[int]:
    """Every live process below `pid` (Linux /proc)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rank_pids(launcher: int) -> Dict[int, int]:
    """MPI rank -> pid of the Python processes an MPI launcher started (not their children,
    which inherit the rank's environment)."""
    ranks = {}
    for pid in descendants(launcher):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        except OSError:
            continue
        rank = env.get(b"PMI_RANK")
        if rank is not None:  # the rank's own children (its stderr filter) come after it
            ranks.setdefault(int(rank), pid)
    return ranks


def alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A small tmpfs at `path` (a full disk on demand); skips the test if mounting is not
    permitted (not root, or a container without CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not permitted'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def write_config(path: Path, **changes) -> Path:
    """A quick recipe (cosine per iteration, 2 epochs); `changes` replace top-level keys."""
    config = {"weight_decay": 5.0e-05, "momentum": 0.9, "epochs": 2, "label_smoothing": 0.1,
              "loss_scaling": 128.0, "mixup": 0.0,
              "lr_scheduler": {"type": "EpochCosineLearningRateScheduler",
                               "args": {"base_lr": 0.002, "warmup_epochs": 1},
                               "per_iteration": True}}
    config.update(changes)
    path.write_text(yaml.safe_dump(config))
    return path


def leftovers(folder: Path) -> List[str]:
    """Temporary files of an interrupted atomic write anywhere under `folder`."""
    return sorted(str(p) for p in folder.rglob(".tmp-*"))


def one_error(result, *parts: str, status: int = 2) -> str:
    """The run failed with exactly one error line holding every one of `parts`."""
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = result.error_lines()
    assert len(errors) == 1, result.stderr[-3000:]
    for part in parts:
        assert part in errors[0], (part, errors[0])
    return errors[0]
