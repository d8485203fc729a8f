"""`run`: the one way every script's main ends, turning what went wrong into an exit status.

A user error (`utils.process.errors.user_error_message`: a bad flag value, file, config or
weight file, an output folder that cannot be written, a training run that diverged) ends the
script with one line on stderr and status 2 instead of a traceback; Ctrl-C ends it with status
130; anything else is a bug and keeps its traceback. Under MPI a failing rank aborts the whole
job, so that no rank is left waiting in a collective for it.

This module loads neither NNabla nor tqdm: the scripts that need neither (plot_curves.py,
create_input_files.py) use it too and stay quick and quiet. What it must reach in those
modules (the job's communicator, open progress bars, the watchdog) it is handed or looks up.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Callable, Optional

from .errors import INTERRUPTED_STATUS, USER_ERROR_STATUS, user_error_message

if TYPE_CHECKING:
    from .comm import Communicator

# The communicator of the job this process is a rank of; None for a single process.
_job: Optional[Communicator] = None


def end_job_on_failure(comm: Communicator) -> None:
    """Make a failure that `run` catches end every rank of `comm`, not only this one."""
    global _job
    _job = comm if comm.size > 1 else None


def _close_progress_bars() -> None:
    """End any open tqdm bar, so that the error starts a line of its own. Only a process that
    imported tqdm can have one, so tqdm is looked up, not imported."""
    tqdm_module = sys.modules.get("tqdm")
    if tqdm_module is not None:
        for bar in list(getattr(tqdm_module.tqdm, "_instances", ())):
            bar.close()


def _stop_watchdog() -> None:
    """Stop the hang watchdog main may have started: nothing watches a finished script. Only a
    process that imported the watchdog's module (which loads NNabla) can have one."""
    watchdog = sys.modules.get(f"{__package__}.watchdog")
    if watchdog is not None:
        watchdog.stop_watchdog()


def _fail(message: str, status: int) -> int:
    _close_progress_bars()
    prefix = ""
    if _job is not None:
        prefix = f"[rank {_job.rank}] "
        if _job.rank > 0:  # rank 0's progress bar may be mid-line on the same stderr
            prefix = "\n" + prefix
    sys.stderr.write(f"{prefix}{message}\n")
    sys.stderr.flush()
    if _job is not None:
        _job.abort(status)
    return status


def run(main: Callable[[], int]) -> int:
    """Run a script's main and return its exit status (see the module docstring)."""
    try:
        return main()
    except KeyboardInterrupt:
        return _fail("interrupted", INTERRUPTED_STATUS)
    except Exception as e:
        message = user_error_message(e)
        if message is None:
            raise
        return _fail(message, USER_ERROR_STATUS)
    finally:
        _stop_watchdog()
