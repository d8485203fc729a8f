"""Child processes that end with their parent when a signal ends it.

A process pool's workers outlive a parent that a signal ends: SIGTERM and SIGHUP ended
create_input_files.py --verify alone, its decoding workers going on under PID 1, and SIGINT
waited for them to decode every image first.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from typing import Iterator, List

ENDING_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def child_processes() -> List[int]:
    """This process's children: multiprocessing's, and on Linux any other (one forked a
    moment before multiprocessing records it)."""
    found = {child.pid for child in multiprocessing.active_children()}
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.add(int(entry))
    return sorted(found)


@contextlib.contextmanager
def children_end_with_this_process() -> Iterator[None]:
    """Within it, SIGTERM, SIGINT and SIGHUP kill and reap this process's children, then end
    this process by the signal itself (a shell says 130 for SIGINT, as for Ctrl-C). For code
    that has written nothing yet: no clean-up runs, and an exception raised in the handler
    instead could land inside a pool's own code (a fork hook), which swallowed it."""
    def stop(signum: int, frame: object) -> None:
        children = child_processes()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    previous = {s: signal.signal(s, stop) for s in ENDING_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
