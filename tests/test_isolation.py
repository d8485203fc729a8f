"""What keeps each test as it would run alone: the process-wide state a test changed is put
back (process_state, used by conftest.py after every test), the system's temporary folder is
the session's own, and a file a test leaves in the checkout is seen."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import nnabla as nn
from conftest import checkout_changes
from nnabla.ext_utils import get_extension_context
from process_state import restore, snapshot


def test_a_changed_handler_variable_folder_log_handler_and_context_are_put_back(tmp_path):
    def on_term(signum, frame):  # pragma: no cover - never delivered
        pass

    logger = logging.getLogger("process_state_test")
    before = snapshot()
    term, context = signal.getsignal(signal.SIGTERM), nn.get_current_context()
    home, cwd, handlers = os.environ.get("HOME"), os.getcwd(), list(logger.handlers)

    signal.signal(signal.SIGTERM, on_term)
    os.environ["PROCESS_STATE_TEST"] = "1"
    os.environ.pop("HOME", None)
    os.chdir(tmp_path)
    logger.addHandler(logging.StreamHandler())
    nn.set_default_context(get_extension_context("cpu", type_config="half"))
    changed = restore(before)

    assert changed == ["signal SIGTERM", "environment HOME", "environment PROCESS_STATE_TEST",
                       "cwd", "logger process_state_test", "NNabla's default context"]
    assert signal.getsignal(signal.SIGTERM) is term
    assert "PROCESS_STATE_TEST" not in os.environ and os.environ.get("HOME") == home
    assert os.getcwd() == cwd and logger.handlers == handlers
    assert str(nn.get_current_context()) == str(context)
    assert restore(before) == []  # nothing left to put back


def test_the_temporary_folder_of_the_tests_and_their_processes_is_the_sessions(
        tmp_path_factory):
    session = tmp_path_factory.getbasetemp()
    assert Path(tempfile.gettempdir()).is_relative_to(session)
    child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp())"],
                           capture_output=True, text=True, check=True)
    made = Path(child.stdout.strip())
    assert made.is_dir() and made.is_relative_to(session)


def test_a_file_left_in_a_checkout_is_seen_and_the_caches_are_not(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("/train_label\n__pycache__/\n")
    (tmp_path / "kept.py").write_text("")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first")
    assert checkout_changes(tmp_path) == set()

    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "kept.cpython-310.pyc").write_bytes(b"")
    (tmp_path / ".pytest_cache" / "v").mkdir(parents=True)
    (tmp_path / ".pytest_cache" / "v" / "seed").write_text("1")
    assert checkout_changes(tmp_path) == set()

    (tmp_path / "train_label").write_text("a.jpg 0\n")  # ignored by git, still a test's output
    (tmp_path / "kept.py").write_text("changed = True\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "loss.png").write_bytes(b"")
    assert checkout_changes(tmp_path) == {"!! train_label", " M kept.py", "?? out/loss.png"}



def test_mpirun_started_by_a_test_writes_no_topology_file_in_tmp(tmp_path_factory):
    """Killed before it ends (as the fault tests do), Hydra would leave that file in /tmp: its
    proxy, the rank's parent, holds it open while the rank runs. Given the session's copy
    of the topology, it makes none."""
    topology = Path(os.environ["HWLOC_XMLFILE"])
    assert topology.is_relative_to(tmp_path_factory.getbasetemp().parent)
    assert topology.read_text().startswith("<?xml")
    parents_files = """
import os
from mpi4py import MPI
fds = f"/proc/{os.getppid()}/fd"
for fd in os.listdir(fds):
    try:
        print(os.readlink(os.path.join(fds, fd)))
    except OSError:
        pass
"""
    mpirun = Path(sys.executable).parent / "mpirun"
    rank = subprocess.run([str(mpirun), "-n", "1", sys.executable, "-c", parents_files],
                          capture_output=True, text=True, timeout=120, check=True)
    assert rank.stdout.strip() and "hydra_hwloc_xmlfile" not in rank.stdout, rank.stdout
