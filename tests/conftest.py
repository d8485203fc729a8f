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
