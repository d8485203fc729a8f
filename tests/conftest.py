"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test, the
process-wide state put back after each test, TMPDIR inside the session's temporary folder, the
CPU half-precision context, and the train.py run that many tests read, made once for all
pytest-xdist workers; after the session, the checkout checked unchanged. The modules with the
most slow tests run first."""
import fcntl
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from paths import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T = TypeVar("T")


@pytest.hookimpl(trylast=True)  # after pytest-randomly's shuffle
def pytest_collection_modifyitems(items: list) -> None:
    """Modules with the most slow tests first, each one's tests kept in the shuffled order.
    pytest-xdist's --dist loadfile hands out whole modules in this order: a long module drawn
    last (the README commands take minutes) left one worker running alone at the end."""
    slow = Counter(item.module.__name__ for item in items if item.get_closest_marker("slow"))
    first_seen = {}
    for position, item in enumerate(items):
        first_seen.setdefault(item.module.__name__, position)
    items.sort(key=lambda item: (-slow[item.module.__name__], first_seen[item.module.__name__]))


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str,
               build: Callable[[Path], T]) -> T:
    """`build(folder)` once per test session, whichever worker asks first; the others wait
    for it (a file lock) and get its result (pickled beside the folder). scripts/test.sh
    runs each module on one of two workers, and session fixtures are per worker."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers' folders share the session's
        root = root.parent
    folder, result = root / name, root / f"{name}.pickle"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if result.exists():
            return pickle.loads(result.read_bytes())
        shutil.rmtree(folder, ignore_errors=True)  # a build that failed in another worker
        folder.mkdir()
        value = build(folder)
        result.write_bytes(pickle.dumps(value))
        return value


# What a test run itself keeps in the checkout; anything else new there is a test's output.
CACHE_FOLDERS = {".pytest_cache", ".ruff_cache", "__pycache__"}
_CHECKOUT_BEFORE = pytest.StashKey[set]()


def checkout_changes(root: Path = REPO) -> set:
    """`git status` of the checkout, ignored files included (./train_label, ./tmp.val/ are),
    less the caches that running Python and the tools keep: about 0.1 s."""
    lines = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=root,
        capture_output=True, text=True, check=True).stdout.splitlines()
    return {line for line in lines if not CACHE_FOLDERS & set(Path(line[3:]).parts)}


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_CHECKOUT_BEFORE] = checkout_changes()


def pytest_sessionfinish(session):
    """Tests write in their own temporary folders, never in the checkout (where the script
    defaults put outputs: ./tmp.val, ./train_label): two test processes would meet there, and
    a developer's files would change. Checked once, by the process that started the run
    (xdist's workers end first); an edit of yours during the run is reported too."""
    if hasattr(session.config, "workerinput"):
        return
    left = sorted(checkout_changes() - session.config.stash[_CHECKOUT_BEFORE])
    if left:
        session.config.get_terminal_writer().line(
            f"\nerror: the tests changed the checkout {REPO} (git status): {'; '.join(left)}",
            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory):
    """TMPDIR inside this session's temporary folder (per xdist worker): what the tests and the
    processes they start put in the system's temporary folder stays with the session, and
    pytest removes it with the session's other folders. MPICH's mpirun writes to /tmp
    whatever TMPDIR says, unless given the topology file it would write (mpi_topology)."""
    folder = tmp_path_factory.getbasetemp() / "TMPDIR"
    folder.mkdir(exist_ok=True)
    from mpi_topology import machine_topology

    topology = built_once(tmp_path_factory, "hwloc", machine_topology)
    values = {"TMPDIR": str(folder), "HWLOC_XMLFILE": str(topology) if topology else None}
    before = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is not None:
            os.environ[name] = value
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    yield folder
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = None


@pytest.fixture(autouse=True)
def fresh_parameters():
    import nnabla as nn

    nn.clear_parameters()
    yield
    nn.clear_parameters()


@pytest.fixture(autouse=True)
def restored_process_state():
    """What a test changes of the process (train.main run in-process installs its stop
    handlers; environment variables, the working directory, log handlers, NNabla's default
    context) is put back for the next test: each test runs as it would alone."""
    from process_state import restore, snapshot

    before = snapshot()
    yield
    restore(before)


@pytest.fixture
def half_context():
    """NNabla's CPU half-precision context as the default, as `-t half` sets cudnn:half on a
    GPU: the GPU path's precision reached without a GPU. The previous default after."""
    import nnabla as nn
    from nnabla.ext_utils import get_extension_context

    before = nn.get_current_context()
    ctx = get_extension_context("cpu", type_config="half")
    nn.set_default_context(ctx)
    yield ctx
    nn.set_default_context(before)


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    """The demo lists and recipes of the train.py tests (see train_fixtures)."""
    from train_fixtures import make_setup

    return built_once(tmp_path_factory, "train", make_setup)


@pytest.fixture(scope="session")
def mobilenet_run(setup, tmp_path_factory):
    """A finished 3-epoch mobilenet_v3_small run on `setup`: (monitor folder, the process).
    Read it, or copy it to change it: test_train.py and test_resume.py may run at once."""
    from train_fixtures import run_train, train_args

    def train(monitor):
        result = run_train(*train_args(setup, monitor))
        assert result.returncode == 0, result.stderr
        return monitor, result

    return built_once(tmp_path_factory, "mobilenet", train)
