"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The published weight files' tensor names and shapes (facts, kept as test data).
DATA_DIR = REPO / "tests" / "data"
PARAM_SPEC_DIR = DATA_DIR / "param-spec"


@pytest.fixture(autouse=True)
def fresh_parameters():
    import nnabla as nn

    nn.clear_parameters()
    yield
    nn.clear_parameters()
