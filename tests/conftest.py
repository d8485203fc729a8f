"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test, the
CPU half-precision context, and the train.py run that many tests read, made once for all
pytest-xdist workers."""
import fcntl
import os
import pickle
import shutil
import signal
import sys
from pathlib import Path
from typing import Callable, TypeVar

import pytest
from paths import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T = TypeVar("T")


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
CHECKOUT_CACHES = {".git", ".venv", ".pytest_cache", ".ruff_cache", "__pycache__"}
_CHECKOUT_BEFORE = pytest.StashKey[set]()


def checkout_entries() -> set:
    return {p.name for p in REPO.iterdir()} - CHECKOUT_CACHES


def pytest_sessionstart(session):
    session.config.stash[_CHECKOUT_BEFORE] = checkout_entries()


def pytest_sessionfinish(session):
    """Tests write in their own temporary folders, never in the checkout (where the script
    defaults put outputs: ./tmp.val, ./train_label): two test processes would meet there.
    Checked once, by the process that started the run (xdist's workers end first)."""
    if hasattr(session.config, "workerinput"):
        return
    left = sorted(checkout_entries() - session.config.stash[_CHECKOUT_BEFORE])
    if left:
        session.config.get_terminal_writer().line(
            f"\nerror: the tests left {', '.join(left)} in the checkout {REPO}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def fresh_parameters():
    import nnabla as nn

    nn.clear_parameters()
    yield
    nn.clear_parameters()


@pytest.fixture(autouse=True)
def restored_signal_handlers():
    """A script's main run in this process (train.main installs its stop handlers) leaves
    the handlers as it found them for the next test."""
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals()
                if s not in (signal.SIGKILL, signal.SIGSTOP)}
    yield
    for signum, handler in handlers.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)


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
