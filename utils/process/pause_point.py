"""A pause the test suite asks for, so that it signals or kills a run at a known point
whatever the machine's speed (waiting for a line, not for time). Never set in normal use.

With `NNABLA_IMAGENET_TEST_PAUSE` set to the name of a point the code passes ("epoch 0
iteration 2": after the update of that batch, before the step's stop check; "checkpoint
written": a checkpoint complete under its temporary name, not yet renamed; "table cell
written": validation.py --table with a cell's row written), the process
writes `test pause: <point>` on stderr there and waits: until a stop signal is seen, when
the caller says how to see one, else until it is killed.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, Optional

PAUSE_ENV = "NNABLA_IMAGENET_TEST_PAUSE"


def pause_at(point: str, stopped: Optional[Callable[[], bool]] = None) -> None:
    """Wait here if the test asked for `point` (see the module docstring); else nothing."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    sys.stderr.write(f"\ntest pause: {point}\n")
    sys.stderr.flush()
    while stopped is None or not stopped():
        time.sleep(0.01)
