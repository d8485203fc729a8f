"""End a job whose progress stopped, instead of letting it hang until its time limit.

Under MPI, a rank that hangs without dying (stuck I/O on a network file system, a GPU or
collective that never returns, a process stopped by mistake) keeps every other rank waiting
in its next collective: the job holds its nodes and writes nothing. Loops report progress
with `heartbeat()` (each training iteration, validation batch and batch-norm statistics
batch); when `timeout` seconds pass without one, the rank writes one error line and the
stacks of its threads (where it is stuck, or which collective it waits in) and aborts the
whole job with status 124, as `timeout(1)` does.

A Python thread watches the clock. A call that holds the GIL would keep that thread from
running, so `faulthandler` (a C thread, no GIL needed) also ends the process, `timeout`
later.
"""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
import traceback
from typing import Optional

from .comm import Communicator

HUNG_STATUS = 124
DEFAULT_HANG_TIMEOUT = 1800.0

_active: Optional[Watchdog] = None


class Watchdog:
    """Gives up when `beat` was not called for `timeout` seconds (see the module docstring)."""

    def __init__(self, timeout: float, comm: Communicator):
        self.timeout = timeout
        self._comm = comm
        self._last = self._armed = time.monotonic()
        self._stopped = threading.Event()
        self._backstop_file = _file_with_descriptor()
        self._arm_backstop()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        now = time.monotonic()
        self._last = now
        # Re-arming starts a C thread: at most once a second, well before the backstop fires.
        if now - self._armed > min(1.0, self.timeout / 2):
            self._arm_backstop()
            self._armed = now

    def _arm_backstop(self) -> None:
        if self._backstop_file is not None:
            faulthandler.dump_traceback_later(2 * self.timeout, exit=True,
                                              file=self._backstop_file)

    def stop(self) -> None:
        self._stopped.set()
        if self._backstop_file is not None:
            faulthandler.cancel_dump_traceback_later()

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.timeout / 10)):
            idle = time.monotonic() - self._last
            if idle > self.timeout:
                self._give_up(idle)

    def _give_up(self, idle: float) -> None:
        prefix = f"[rank {self._comm.rank}] " if self._comm.size > 1 else ""
        sys.stderr.write(
            f"\n{prefix}error: no progress for {idle:.0f} s (--hang-timeout "
            f"{self.timeout:g}): this rank is stuck, or waits in a collective for a rank that "
            f"is; stopping the job. This rank's threads:\n")
        names = {t.ident: t.name for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            if ident != threading.get_ident():
                sys.stderr.write(f"thread {names.get(ident, ident)}, most recent call last:\n"
                                 + "".join(traceback.format_stack(frame)))
        sys.stderr.flush()
        if self._comm.size > 1:
            self._comm.abort(HUNG_STATUS)
        os._exit(HUNG_STATUS)


def _file_with_descriptor():
    """stderr, or the original one when stderr was replaced (faulthandler writes to an fd)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.fileno()
            return stream
        except (AttributeError, OSError, ValueError):
            continue
    return None


def start_watchdog(timeout: float, comm: Communicator) -> Optional[Watchdog]:
    """Watch this process from now on (`timeout` <= 0: not at all)."""
    global _active
    if _active is not None:
        _active.stop()
    _active = Watchdog(timeout, comm) if timeout > 0 else None
    return _active


def stop_watchdog() -> None:
    global _active
    if _active is not None:
        _active.stop()
        _active = None


def heartbeat() -> None:
    """Report progress to the watchdog, if one is watching."""
    if _active is not None:
        _active.beat()
