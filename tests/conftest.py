"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test; and
how pytest-xdist shares the tests out (scripts/test.sh runs them on two workers)."""
import sys

import pytest
from paths import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Session fixtures worth building once: the modules whose tests use one run on one worker.
SHARED_RUNS = ("mobilenet_run",)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (--dist loadgroup)
def pytest_collection_modifyitems(items):
    """Each module's tests go to one worker, in file order, as in a serial run: its module
    fixtures are built once and tests that follow from earlier ones (the README's commands)
    find what those left. The modules using a session fixture of SHARED_RUNS share a worker."""
    group = {item.module.__name__: item.module.__name__ for item in items}
    for item in items:
        for name in SHARED_RUNS:
            if name in item.fixturenames:
                group[item.module.__name__] = name
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group[item.module.__name__]))


@pytest.fixture(autouse=True)
def fresh_parameters():
    import nnabla as nn

    nn.clear_parameters()
    yield
    nn.clear_parameters()


@pytest.fixture(scope="session")
def setup(tmp_path_factory):
    """The demo lists and recipes of the train.py tests (see train_fixtures)."""
    from train_fixtures import make_setup

    return make_setup(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="session")
def mobilenet_run(setup):
    """A finished 3-epoch mobilenet_v3_small run on `setup`: (monitor folder, the process)."""
    from train_fixtures import run_train, train_args

    monitor = setup.folder / "mobilenet"
    result = run_train(*train_args(setup, monitor))
    assert result.returncode == 0, result.stderr
    return monitor, result
