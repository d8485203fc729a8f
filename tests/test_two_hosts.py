"""Data-parallel training across two hosts started by MPICH's own launcher from a host file, as
on two machines: `mpirun -launcher ssh -f hosts -n 2`, one rank on each of two network
namespaces with their own sshd (ssh_hosts), against `mpirun -n 2` on one host.

The two hosts are one machine with one host name, so UCX would join their ranks through shared
memory; `UCX_TLS=tcp,self` makes the ranks talk over TCP across the namespaces' links, as two
machines do, and the links' byte counters show that the gradients went that way.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
import ssh_hosts
from marks import slow
from paths import REPO
from run_fixtures import assert_same_run
from train_fixtures import TIMEOUT, train_args
from train_rank_digests import MARKER

from utils.weights import read_parameters

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


def train_two_ranks(setup, monitor: Path, mpirun_options: List[str]) -> dict:
    """train.py's main on two ranks; rank 0's report of every rank's parameters."""
    command = [MPIRUN, *mpirun_options, "-n", "2", sys.executable,
               str(REPO / "tests" / "train_rank_digests.py"),
               *train_args(setup, monitor, epochs=EPOCHS)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT,
                            env={**os.environ, "MPLBACKEND": "Agg"})
    assert result.returncode == 0, result.stderr
    assert "2 ranks" in result.stderr
    report = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
    assert len(report) == 1, result.stdout
    return json.loads(report[0][len(MARKER):])


def test_two_hosts_train_exactly_as_two_ranks_on_one(setup, hosts, tmp_path):
    one_host = train_two_ranks(setup, tmp_path / "one-host", [])
    before = hosts.network.sent_bytes()
    two_hosts = train_two_ranks(setup, tmp_path / "two-hosts",
                                [*hosts.mpirun_options(), "-genv", "UCX_TLS", "tcp,self"])
    sent = [b - a for a, b in zip(before, hosts.network.sent_bytes())]

    assert two_hosts["status"] == 0 and two_hosts["differing"] == []
    assert two_hosts["digests"] == one_host["digests"]  # both ranks, batch-norm statistics too
    # Losses, errors, validation, weight files and the newest checkpoint, all identical.
    assert_same_run(tmp_path / "one-host", tmp_path / "two-hosts")

    # Each step all-reduces the gradients, for which each of 2 ranks sends at least their size
    # (73 MB in 12 steps here; the half asked keeps a margin). ssh and PMI alone send 20 kB.
    weights = read_parameters(str(tmp_path / "two-hosts" / f"param_{EPOCHS:03d}.h5"))
    gradient_bytes = 4 * sum(p.data.size for p in weights.values() if p.need_grad)
    assert all(s > STEPS * gradient_bytes / 2 for s in sent), (sent, gradient_bytes)


def test_the_hosts_leave_nothing_behind_even_on_failure(tmp_path):
    reason = ssh_hosts.missing()
    if reason:
        pytest.skip(f"two hosts on this machine: {reason}")
    with pytest.raises(RuntimeError, match="failing on purpose"):
        with ssh_hosts.two_hosts(tmp_path) as made:
            pids = [pid for n in made.network.namespaces for pid in ssh_hosts.namespace_pids(n)]
            assert len(pids) >= 2  # an sshd in each (and any connection it serves)
            raise RuntimeError("failing on purpose")
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    namespaces = ssh_hosts.ip("netns", "list").split()
    assert not [name for name in made.network.namespaces if name in namespaces]
    links = [line.split()[0] for line in ssh_hosts.ip("-brief", "link").splitlines()]
    assert not [name for name in (made.network.bridge, *made.network.links) if name in links]
