"""The signals that ask a run to stop (a preemption, a time limit, Ctrl-C), as a flag a
training loop polls, so that it stops between iterations with its state saved."""
from __future__ import annotations

import signal
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .comm import Communicator

# SIGUSR1 is what batch schedulers (Slurm --signal, LSF, PBS) send ahead of a time limit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class StopRequest:
    """Remembers a stop signal (SIGTERM, SIGINT, SIGUSR1) so that a loop can stop cleanly.

    The handler only sets a flag: the loop finishes what it is doing, saves its state and
    exits. Every rank must agree before stopping (see `agreed`), as a scheduler may signal
    only some of them.
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        for s in STOP_SIGNALS:
            signal.signal(s, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    @property
    def requested(self) -> bool:
        """Whether this process received a stop signal."""
        return self.signal is not None

    def agreed(self, comm: Communicator) -> bool:
        """Whether any rank received one (a collective: every rank must call it)."""
        return comm.all_reduce_sum([self.requested])[0] > 0

    def describe(self) -> str:
        """'SIGTERM' (...) or, when only other ranks were signalled, 'a signal to another rank'."""
        return signal.Signals(self.signal).name if self.requested else "a signal to another rank"
