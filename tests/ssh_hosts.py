"""Several "hosts" on this machine for the tests of multi-host runs, in network namespaces
(bridged_namespaces): a "head" namespace, where the launcher runs (mpirun, Slurm's controller
and commands), holding a bridge, and a namespace per host linked to it, each with its own
address. The root namespace's network is never touched, so MPI runs of other tests going on
meanwhile see the same network interfaces throughout. two_hosts adds an sshd on each host,
reached with a private ssh configuration by MPICH Hydra's ssh launcher. The namespaces share
this machine's file system, so the checkout, .venv and data have the same paths on every
host, as a cluster's shared file system gives them.

Needs root, iproute2 and openssh-server. Everything made is undone on exit, failure included:
the processes in a namespace are stopped by PID, then the namespace is deleted by name.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

_made = count()  # names unique within this process too
SSH_PORT = 22  # each namespace has its own ports: the usual one, as on a real machine
# Addresses of the namespaces' own network, which nothing outside them sees.
SUBNET = ipaddress.ip_network("10.10.0.0/24")
BRIDGE = "br0"  # in the head namespace; the hosts' links are host0, host1, ...
START_TIMEOUT = 10
# sshd is installed outside a non-root PATH.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

# sshd insists on its privilege-separation folder /run/sshd, which only the system service's
# start creates: each sshd gets a private /run (a tmpfs in the mount namespace `ip netns exec`
# makes) instead of a folder written into the machine's; `mount -n` writes no /run/mount/utab
# there either.
SSHD_START = ('mount -n -t tmpfs -o size=1m,mode=755 sshd-run /run && mkdir -m 755 /run/sshd '
              '&& exec "$0" "$@"')


def program(name: str) -> str:
    """`name`'s absolute path (sshd re-executes itself by it)."""
    return shutil.which(name, path=SEARCH_PATH) or name


def missing() -> Optional[str]:
    """Why this machine cannot make the hosts (the reason to skip), or None."""
    if os.geteuid() != 0:
        return "needs root: network namespaces, veth links and sshd"
    for tool, package in (("ip", "iproute2"), ("sshd", "openssh-server"),
                          ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"),
                          ("nsenter", "util-linux")):
        if shutil.which(tool, path=SEARCH_PATH) is None:
            return f"no {tool} on this machine (install {package}: scripts/setup.sh --dev)"
    return None


@dataclass(frozen=True)
class Network:
    """The head namespace and the hosts' namespaces, host i at addresses[i]."""

    head: str
    gateway: str  # the head's address on the bridge
    addresses: List[str]
    namespaces: List[str]
    children: Dict[str, List[subprocess.Popen]]  # started in each namespace, reaped at the end

    @property
    def on_head(self) -> List[str]:
        """The prefix that runs a command in the head's network (and this machine's mounts)."""
        return [program("nsenter"), f"--net=/run/netns/{self.head}"]

    def start(self, i: int, argv: Sequence[str], log: Path,
              own_mounts: bool = True) -> subprocess.Popen:
        """`argv` on host i, its output to `log`; stopped with the namespace. With
        `own_mounts`, `ip netns exec`: a mount namespace of its own too, whose /sys is the
        network namespace's (without /sys/fs/cgroup); else `nsenter --net`, the network only."""
        namespace = self.namespaces[i]
        enter = ([program("ip"), "netns", "exec", namespace] if own_mounts else
                 [program("nsenter"), f"--net=/run/netns/{namespace}"])
        with open(log, "w") as out:
            process = subprocess.Popen([*enter, *argv], stdout=out, stderr=subprocess.STDOUT)
        self.children[namespace].append(process)
        return process

    def sent_bytes(self) -> List[int]:
        """The bytes each host has sent so far (received by its link's end on the bridge)."""
        links = {link["ifname"]: link["stats64"]["rx"]["bytes"]
                 for link in json.loads(ip("-n", self.head, "-j", "-s", "link", "show"))}
        return [links[f"host{i}"] for i in range(len(self.addresses))]


@dataclass(frozen=True)
class Hosts:
    network: Network
    ssh: Path  # ssh with the private configuration: Hydra's -launcher-exec
    hostfile: Path  # one line per host: one rank each

    def mpirun(self, mpirun: str) -> List[str]:
        """`mpirun` in the head, with the options that start one rank per host over ssh.
        `-iface`: the hosts reach the launcher at the bridge's address, not at the machine's
        host name (127.0.0.1 here)."""
        return [*self.network.on_head, mpirun, "-launcher", "ssh", "-launcher-exec",
                str(self.ssh), "-iface", BRIDGE, "-f", str(self.hostfile)]

    def local_folder(self, i: int, path: Path) -> None:
        """Give host i a folder of its own at `path` (an empty tmpfs in the mounts of its
        sshd, which its sessions inherit), as a disk of that machine alone would be."""
        sshd = self.network.children[self.network.namespaces[i]][0]
        subprocess.run([program("nsenter"), "-t", str(sshd.pid), "-m", program("mount"), "-n",
                        "-t", "tmpfs", "-o", "size=64m", "local", str(path)], check=True)


def ip(*args: str) -> str:
    result = subprocess.run([program("ip"), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def write_ssh_files(folder: Path, addresses: List[str]) -> Path:
    """Host and user keys, the sshd and ssh configurations; the ssh launcher script."""
    for name in ("host_key", "user_key"):
        subprocess.run([program("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", name, "-f",
                        str(folder / name)], check=True)
    host_key = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"{','.join(addresses)} {host_key[0]} {host_key[1]}\n")
    shutil.copy(folder / "user_key.pub", folder / "authorized_keys")
    # StrictModes off: the key files are in the tests' temporary folder, not a home folder.
    (folder / "sshd_config").write_text(f"""\
Port {SSH_PORT}
HostKey {folder / "host_key"}
AuthorizedKeysFile {folder / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
""")
    (folder / "ssh_config").write_text(f"""\
Host *
  Port {SSH_PORT}
  User root
  IdentityFile {folder / "user_key"}
  IdentitiesOnly yes
  UserKnownHostsFile {folder / "known_hosts"}
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
""")
    launcher = folder / "ssh"
    launcher.write_text(f'#!/bin/sh\nexec {program("ssh")} '
                        f'-F {shlex.quote(str(folder / "ssh_config"))} "$@"\n')
    launcher.chmod(0o755)
    return launcher


def namespace_pids(namespace: str) -> List[int]:
    return [int(p) for p in ip("netns", "pids", namespace).split()]


def stop_namespace(namespace: str, children: List[subprocess.Popen]) -> None:
    """Stop every process in `namespace` (the daemons and what they started: sessions,
    proxies, ranks) by PID, with SIGKILL after 5 s; then delete it. `children` are this
    process's own, to reap."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in namespace_pids(namespace):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        for child in children:
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        while namespace_pids(namespace) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not namespace_pids(namespace):
            break
    ip("netns", "delete", namespace)


def wait_for_sshd(network: Network, launcher: Path, address: str, sshd: subprocess.Popen,
                  log: Path) -> None:
    """Until a login from the head to `address` works."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if sshd.poll() is not None:
            raise RuntimeError(f"sshd on {address} ended ({sshd.returncode}): "
                               f"{log.read_text().strip()}")
        login = subprocess.run([*network.on_head, str(launcher), address, "true"],
                               capture_output=True, text=True)
        if login.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"no ssh login to {address} after {START_TIMEOUT} s: "
                               f"{login.stderr.strip()}; sshd: {log.read_text().strip()}")
        time.sleep(0.05)


@contextmanager
def bridged_namespaces(count: int, name: str) -> Iterator[Network]:
    """A head and `count` hosts, for as long as the block runs; `name` (a few letters) starts
    the namespaces' names."""
    token = f"{name}{os.getpid()}-{next(_made)}"
    network = Network(head=f"{token}-head", gateway=str(SUBNET[1]),
                      addresses=[str(SUBNET[2 + i]) for i in range(count)],
                      namespaces=[f"{token}-{i}" for i in range(count)], children={})
    size = SUBNET.prefixlen
    with ExitStack() as undo:
        for namespace in (network.head, *network.namespaces):
            ip("netns", "add", namespace)
            network.children[namespace] = []
            undo.callback(stop_namespace, namespace, network.children[namespace])
            ip("-n", namespace, "link", "set", "lo", "up")
        head = ("-n", network.head)
        ip(*head, "link", "add", BRIDGE, "type", "bridge")
        ip(*head, "address", "add", f"{network.gateway}/{size}", "dev", BRIDGE)
        ip(*head, "link", "set", BRIDGE, "up")
        for i, (address, namespace) in enumerate(zip(network.addresses, network.namespaces)):
            ip(*head, "link", "add", f"host{i}", "type", "veth", "peer", "name", "eth0",
               "netns", namespace)
            ip(*head, "link", "set", f"host{i}", "master", BRIDGE, "up")
            ip("-n", namespace, "address", "add", f"{address}/{size}", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
        yield network


@contextmanager
def two_hosts(folder: Path) -> Iterator[Hosts]:
    """Two hosts reachable over ssh from the head, for as long as the block runs."""
    with bridged_namespaces(2, "th") as network:
        launcher = write_ssh_files(folder, network.addresses)
        for i, address in enumerate(network.addresses):
            log = folder / f"sshd-{i}.log"
            sshd = network.start(i, ["sh", "-c", SSHD_START, program("sshd"), "-D", "-e", "-f",
                                     str(folder / "sshd_config"), "-o",
                                     f"ListenAddress={address}"], log)
            wait_for_sshd(network, launcher, address, sshd, log)
        hostfile = folder / "hosts"
        hostfile.write_text("".join(f"{a}\n" for a in network.addresses))
        yield Hosts(network, launcher, hostfile)
