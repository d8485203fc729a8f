"""A real one-node Slurm for the tests: munge, slurmctld and slurmd started as daemons in a
folder of their own, on free ports, and stopped by PID.

Debian's `slurm-wlm` and `munge` (installed by `scripts/setup.sh --dev` where apt is there)
run here as root; no service manager is involved. The configuration is a plain one (no
`RequeueExit`): scripts/slurm/train.sbatch requeues its job itself.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set

DAEMONS = ("munged", "slurmctld", "slurmd")
SHM = "/dev/shm"
# A requeued job may start again only after its credential expired (cred_expire + 1 s).
CRED_EXPIRE = 5


def missing_binaries() -> List[str]:
    """What this machine lacks to run the cluster (empty: it can)."""
    needed = [*DAEMONS, "srun", "sbatch", "scontrol", "squeue", "scancel"]
    missing = [name for name in needed if shutil.which(name) is None
               and not Path("/usr/sbin", name).exists()]
    if os.geteuid() != 0:
        missing.append("root (the daemons run as root here)")
    return missing


def _free_ports(count: int) -> List[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _first_job_id() -> int:
    """Job ids that no earlier test cluster used. A killed MPICH job leaves its shared-memory
    segment in /dev/shm, named after the job's PMI identity, and a later job with the same
    id under srun --mpi=pmi2 attaches it and fails in MPI_Init; a cluster's ids only grow,
    but every new test cluster would start again at 1."""
    return 1000 + (time.time_ns() // 1000 + os.getpid()) % 60_000_000


def _daemon(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    """One node named after this host, `cpus` CPUs, one partition; see `start`."""

    folder: Path
    cpus: int = 2
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    pids: Dict[str, int] = field(default_factory=dict)
    shm_before: Set[str] = field(default_factory=set)

    @property
    def env(self) -> Dict[str, str]:
        """The environment a client command (srun, sbatch, ...) needs to reach this cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI"))}
        env["SLURM_CONF"] = str(self.folder / "slurm.conf")
        return env

    def start(self) -> SlurmCluster:
        self.shm_before = set(os.listdir(SHM))
        self.folder.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool"):
            (self.folder / sub).mkdir(exist_ok=True)
        self._start_munge()
        self._write_conf()
        env = self.env
        self._spawn("slurmctld", [_daemon("slurmctld"), "-c"], env, "slurmctld.pid")
        self._spawn("slurmd", [_daemon("slurmd")], env, "slurmd.pid")
        self._wait_until_idle()
        return self

    def _start_munge(self) -> None:
        key = self.folder / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        f = self.folder
        self._spawn("munged", [
            _daemon("munged"), "--force", f"--key-file={key}", f"--socket={f / 'munge.socket'}",
            f"--pid-file={f / 'munged.pid'}", f"--log-file={f / 'munged.log'}",
            f"--seed-file={f / 'munge.seed'}"], dict(os.environ), "munged.pid")

    def _write_conf(self) -> None:
        f, user = self.folder, "root"
        ctld_port, d_port = _free_ports(2)
        lines = [
            "ClusterName=tests", f"SlurmctldHost={self.node}", f"SlurmUser={user}",
            f"SlurmdUser={user}", f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={f / 'munge.socket'},cred_expire={CRED_EXPIRE}",
            f"StateSaveLocation={f / 'state'}", f"SlurmdSpoolDir={f / 'spool'}",
            f"SlurmctldPidFile={f / 'slurmctld.pid'}", f"SlurmdPidFile={f / 'slurmd.pid'}",
            f"SlurmctldLogFile={f / 'slurmctld.log'}", f"SlurmdLogFile={f / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "MpiDefault=none",
            "ReturnToService=2", "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/none",
            "KillWait=5", "MinJobAge=300", f"FirstJobId={_first_job_id()}",
            # A requeued job becomes eligible by the clock: the scheduler looks every second.
            "SchedulerParameters=sched_interval=1",
            f"NodeName={self.node} CPUs={self.cpus} RealMemory=1000 State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        (f / "slurm.conf").write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, command: List[str], env: Dict[str, str], pid_file: str) -> None:
        """Start a daemon (it forks) and take its PID from its pid file."""
        path = self.folder / pid_file
        path.unlink(missing_ok=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name} did not start: {done.stderr.strip()}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = path.read_text().strip() if path.exists() else ""
            if text.isdigit():
                self.pids[name] = int(text)
                return
            time.sleep(0.01)
        raise RuntimeError(f"{name} wrote no pid file {path}")

    def _wait_until_idle(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.run(["sinfo", "-h", "-N", "-o", "%t"], check=False).stdout.strip()
            if state and set(state.split()) == {"idle"}:  # every node
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.node} is {state!r}, not idle, after {timeout} s; "
                           f"see {self.folder}/slurmd.log")

    def run(self, command: List[str], check: bool = True, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        env = self.env
        env.update(kwargs.pop("env", {}))
        return subprocess.run(command, env=env, capture_output=True, text=True, check=check,
                              timeout=timeout, **kwargs)

    def job_state(self, job: str) -> str:
        """'PENDING', 'RUNNING', 'COMPLETED', 'FAILED', ... (empty once Slurm forgot it)."""
        out = self.run(["scontrol", "-o", "show", "job", job], check=False).stdout
        for word in out.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return ""

    def job_field(self, job: str, name: str) -> Optional[str]:
        out = self.run(["scontrol", "-o", "show", "job", job], check=False).stdout
        for word in out.split():
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
        return None

    def stop(self) -> None:
        """Stop the daemons by PID, slurmd first; wait until each is gone. Then remove the
        MPICH segments the cluster's killed jobs left in /dev/shm (no process maps them)."""
        self._stop_daemons()
        mapped = _mapped_files()
        for name in set(os.listdir(SHM)) - self.shm_before:
            path = os.path.join(SHM, name)
            if name.startswith("mpich_shm_") and path not in mapped:
                Path(path).unlink(missing_ok=True)

    def _stop_daemons(self) -> None:
        for name in reversed(DAEMONS):
            pid = self.pids.pop(name, None)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.02)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _mapped_files() -> Set[str]:
    """The files some process of this machine has mapped (segments in use)."""
    mapped: Set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(line.split(None, 5)[-1].strip() for line in maps.read_text().splitlines()
                          if SHM in line)
        except OSError:
            continue
    return mapped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours would still be there; the daemons are reparented, so this is enough.
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return ""
