"""Marks the test files share. `slow` tests are left out of the fast subset (`bash
scripts/test.sh --fast`); each slow test carries the mark itself, so that a renamed test
keeps it."""
from __future__ import annotations

from typing import Any, Collection, Iterable, List

import pytest

slow = pytest.mark.slow


def marking_slow(values: Iterable[Any], slow_values: Collection[Any]) -> List[Any]:
    """`values` for `pytest.mark.parametrize`, those among `slow_values` marked slow."""
    return [pytest.param(v, marks=slow) if v in slow_values else v for v in values]
