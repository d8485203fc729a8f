"""Slurm with two nodes on this machine: slurm_cluster's set-up with slurmctld (and every
Slurm command) in the head namespace of ssh_hosts.bridged_namespaces, reached at the bridge's
address, and a slurmd on each host (`slurmd -N node<i>`, NodeAddr its namespace's address). A
job's steps run on the hosts, so its ranks talk across the links as two machines' would.
"""
from __future__ import annotations

import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from slurm_cluster import SlurmCluster, _daemon, missing_binaries
from ssh_hosts import Network, bridged_namespaces
from ssh_hosts import missing as missing_namespaces

# The keys of the one-node slurm.conf that two slurmd on one machine need changed: each its
# own spool, pid and log files (%n: the node's name).
PER_NODE = {"SlurmdSpoolDir": "spool-%n", "SlurmdPidFile": "slurmd-%n.pid",
            "SlurmdLogFile": "slurmd-%n.log"}


def missing() -> Optional[str]:
    """Why this machine cannot run the two nodes (the reason to skip), or None."""
    lacking = missing_binaries()
    if lacking:
        return f"no {', '.join(lacking)} (install slurm-wlm and munge: scripts/setup.sh --dev)"
    return missing_namespaces()


@dataclass
class TwoNodeCluster(SlurmCluster):
    network: Optional[Network] = None

    @property
    def nodes(self) -> List[str]:
        return [f"node{i}" for i in range(len(self.network.addresses))]

    def start(self) -> TwoNodeCluster:
        (self.folder / "state").mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            (self.folder / f"spool-{node}").mkdir(exist_ok=True)
        self._start_munge()
        self._write_conf()
        self._spawn("slurmctld", [*self.network.on_head, _daemon("slurmctld"), "-c"], self.env,
                    "slurmctld.pid")
        for i, node in enumerate(self.nodes):
            # In the network namespace only: `ip netns exec`'s own /sys would hide the
            # /sys/fs/cgroup slurmd reads ("No filesystem mounted on /sys/fs/cgroup").
            self.network.start(i, [_daemon("slurmd"), "-D", "-N", node, "-f",
                                   str(self.folder / "slurm.conf")],
                               self.folder / f"slurmd-{node}.out", own_mounts=False)
        self._wait_until_idle()
        return self

    def run(self, command: List[str], check: bool = True, timeout: float = 60,
            **kwargs) -> subprocess.CompletedProcess:
        """A Slurm command, from the head (the hosts' network)."""
        return super().run([*self.network.on_head, *command], check, timeout, **kwargs)

    def _write_conf(self) -> None:
        """The one-node file with the controller at the bridge's address, per-node files, and
        the nodes at their namespaces' addresses (their host name is the machine's)."""
        super()._write_conf()
        path = self.folder / "slurm.conf"
        changed: Dict[str, str] = {"SlurmctldHost": f"{self.node}({self.network.gateway})",
                                   **{k: str(self.folder / v) for k, v in PER_NODE.items()}}
        lines = []
        for line in path.read_text().splitlines():
            key = line.split("=", 1)[0]
            if key not in ("NodeName", "PartitionName"):
                lines.append(f"{key}={changed[key]}" if key in changed else line)
        lines += [f"NodeName={node} NodeAddr={address} NodeHostname={self.node} "
                  f"CPUs={self.cpus} RealMemory=1000 State=UNKNOWN"
                  for node, address in zip(self.nodes, self.network.addresses)]
        lines.append(f"PartitionName=debug Nodes={','.join(self.nodes)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        path.write_text("\n".join(lines) + "\n")


@contextmanager
def two_node_cluster(folder: Path) -> Iterator[TwoNodeCluster]:
    """A running two-node cluster for as long as the block runs: slurmctld and munged stopped
    by PID, then each slurmd with whatever its jobs left, as its namespace goes."""
    with bridged_namespaces(2, "sl") as network:
        cluster = TwoNodeCluster(folder, network=network)
        try:
            yield cluster.start()
        finally:
            cluster.stop()
