"""Data-parallel training across two hosts, as on two machines, against `mpirun -n 2` on one
host (the same losses, weights and checkpoint, bit for bit): MPICH's own launcher with a host
file (`mpirun -launcher ssh -f hosts -n 2`, one rank on each of two network namespaces with
their own sshd: ssh_hosts), and scripts/slurm/train.sbatch as a job on two Slurm nodes
(`sbatch -N 2`, a slurmd in each namespace: slurm_nodes). A resume from a monitor path that
only rank 0's host holds is refused with one line.

The hosts are one machine with one host name, so UCX would join their ranks through shared
memory; `UCX_TLS=tcp,self` makes the ranks talk over TCP across the namespaces' links, as two
machines do, and the links' byte counters show that the gradients went that way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import slurm_nodes
import ssh_hosts
from marks import slow
from paths import REPO
from run_fixtures import assert_same_run
from train_fixtures import TIMEOUT, train_args
from train_rank_digests import MARKER

from utils.weights.files import read_parameters

pytestmark = slow  # training runs under mpirun

MPIRUN = str(Path(sys.executable).parent / "mpirun")
EPOCHS = 2
STEPS = EPOCHS * 6  # 90 images over 2 ranks x 8


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    reason = ssh_hosts.missing()
    if reason:
        pytest.skip(f"two hosts on this machine: {reason}")
    with ssh_hosts.two_hosts(tmp_path_factory.mktemp("hosts")) as made:
        yield made


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = slurm_nodes.missing()
    if reason:
        pytest.skip(f"two Slurm nodes on this machine: {reason}")
    with slurm_nodes.two_node_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def rank_command(setup, monitor: Path) -> List[str]:
    """train.py's main in one rank, then every rank's parameters reported by rank 0."""
    return [sys.executable, str(REPO / "tests" / "train_rank_digests.py"),
            *train_args(setup, monitor, epochs=EPOCHS)]


def rank_report(output: str) -> dict:
    report = [line for line in output.splitlines() if line.startswith(MARKER)]
    assert len(report) == 1, output
    return json.loads(report[0][len(MARKER):])


def run_script_command(command: List[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "MPLBACKEND": "Agg"})


def train_two_ranks(setup, monitor: Path, mpirun: List[str]) -> dict:
    """train.py's main on two ranks started by the command `mpirun`; rank 0's report."""
    result = run_script_command([*mpirun, "-n", "2", *rank_command(setup, monitor)])
    assert result.returncode == 0, result.stderr
    assert "2 ranks" in result.stderr
    return rank_report(result.stdout)


@pytest.fixture(scope="module")
def one_host(setup, tmp_path_factory):
    """`mpirun -n 2` on this host: (monitor folder, rank 0's report)."""
    monitor = tmp_path_factory.mktemp("one-host") / "run"
    return monitor, train_two_ranks(setup, monitor, [MPIRUN])


def assert_same_as_one_host(one_host, monitor: Path, sent: List[int]) -> None:
    """The run in `monitor` ended exactly as `one_host`'s, its gradients crossing the links."""
    # Losses, errors, validation, weight files and the newest checkpoint, all identical.
    assert_same_run(one_host[0], monitor)
    # Each step all-reduces the gradients, for which each of 2 ranks sends at least their size
    # (73 MB in 12 steps here; the half asked keeps a margin). ssh and PMI alone send 20 kB.
    weights = read_parameters(str(monitor / f"param_{EPOCHS:03d}.h5"))
    gradient_bytes = 4 * sum(p.data.size for p in weights.values() if p.need_grad)
    assert all(s > STEPS * gradient_bytes / 2 for s in sent), (sent, gradient_bytes)


def test_two_hosts_train_exactly_as_two_ranks_on_one(setup, one_host, hosts, tmp_path):
    before = hosts.network.sent_bytes()
    found = train_two_ranks(setup, tmp_path / "run",
                            [*hosts.mpirun(MPIRUN), "-genv", "UCX_TLS", "tcp,self"])
    sent = [b - a for a, b in zip(before, hosts.network.sent_bytes())]
    assert found["status"] == 0 and found["differing"] == []
    assert found["digests"] == one_host[1]["digests"]  # both ranks, batch-norm statistics too
    assert_same_as_one_host(one_host, tmp_path / "run", sent)


def test_a_resume_from_a_monitor_path_only_rank_0_sees_stops_with_one_line(setup, hosts,
                                                                            tmp_path):
    """The monitor path on host 0's disk alone: host 1 has an empty folder there."""
    monitor = tmp_path / "run"
    monitor.mkdir()
    hosts.local_folder(1, monitor)
    args = [*hosts.mpirun(MPIRUN), "-n", "2", sys.executable, str(REPO / "train.py")]
    first = run_script_command([*args, *train_args(setup, monitor, "-v", 0, epochs=1)])
    assert first.returncode == 0, first.stderr
    again = run_script_command([*args, *train_args(setup, monitor, "-v", 0, epochs=2)])
    assert again.returncode == 2, again.stderr
    checkpoint = monitor / "checkpoints" / "checkpoint_e0001_i0000000.npz"
    assert again.stderr.splitlines()[-1].endswith(
        f"error: rank 0 resumes from {checkpoint} but rank 1 from none in "
        f"{monitor / 'checkpoints'}: the monitor path must be one folder that every machine "
        "of the job sees (a shared file system)"), again.stderr


def run_job(cluster, sbatch_args: List[str], env: Dict[str, str]) -> str:
    """Submit a batch job from the checkout and wait for it; its final state. (Polled here:
    `sbatch --wait` polls at growing intervals, up to half a minute after the job ended.)"""
    job = cluster.run(["sbatch", "--parsable", *sbatch_args], cwd=REPO,
                      env=env).stdout.strip().split(";")[0]
    deadline = time.monotonic() + TIMEOUT
    while cluster.job_state(job) in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {job} still {cluster.job_state(job)}"
        time.sleep(0.1)
    return cluster.job_state(job)


def test_the_batch_script_on_two_nodes_trains_exactly_as_two_ranks_on_one_host(
        setup, one_host, slurm, tmp_path):
    """scripts/slurm/train.sbatch, as the README submits it on two nodes, one task a node: its
    mpirun (Hydra) takes the allocation's nodes and starts its proxies with srun."""
    monitor, log = tmp_path / "run", tmp_path / "job.log"
    before = slurm.network.sent_bytes()
    # HYDRA_IFACE (mpirun's -iface): the hosts share this machine's host name, 127.0.0.1 here,
    # so the proxies on node1 reach mpirun on node0 at its eth0's address.
    state = run_job(slurm, ["-J", "demo", "--nodes=2", "--ntasks-per-node=1", f"--output={log}",
                            str(REPO / "scripts" / "slurm" / "train.sbatch"),
                            *train_args(setup, monitor, epochs=EPOCHS)],
                    env={"MPLBACKEND": "Agg", "UCX_TLS": "tcp,self", "HYDRA_IFACE": "eth0"})
    sent = [b - a for a, b in zip(before, slurm.network.sent_bytes())]
    assert state == "COMPLETED", log.read_text()
    assert "2 ranks" in log.read_text()
    assert_same_as_one_host(one_host, monitor, sent)


def root_links() -> List[str]:
    return [line.split()[0] for line in ssh_hosts.ip("-brief", "link").splitlines()]


def running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has: PID 1 reaps it when it
    gets to it, which a loaded machine may delay)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_the_hosts_leave_nothing_behind_even_on_failure(tmp_path):
    """Nor do they change the machine's own network interfaces while they exist."""
    reason = ssh_hosts.missing()
    if reason:
        pytest.skip(f"two hosts on this machine: {reason}")
    links = root_links()
    with pytest.raises(RuntimeError, match="failing on purpose"):
        with ssh_hosts.two_hosts(tmp_path) as made:
            namespaces = [made.network.head, *made.network.namespaces]
            pids = [pid for n in namespaces for pid in ssh_hosts.namespace_pids(n)]
            assert len(pids) >= 2  # an sshd on each host (and any connection it serves)
            assert root_links() == links
            raise RuntimeError("failing on purpose")
    assert not [pid for pid in pids if running(pid)]
    left = ssh_hosts.ip("netns", "list").split()
    assert not [name for name in namespaces if name in left]
    assert root_links() == links
