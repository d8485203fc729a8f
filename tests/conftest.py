"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test."""
import sys

import pytest
from paths import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


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
