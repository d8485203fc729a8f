"""Shared fixtures: the repository on sys.path, a clean NNabla parameter scope per test."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# The published parameter spec lives beside the repository (development and CI only).
PARAM_SPEC_DIR = Path(os.environ.get("PARAM_SPEC_DIR", REPO.parent / "shared" / "param-spec"))


@pytest.fixture(autouse=True)
def fresh_parameters():
    import nnabla as nn

    nn.clear_parameters()
    yield
    nn.clear_parameters()
