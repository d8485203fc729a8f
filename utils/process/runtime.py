"""Process set-up shared by the scripts: context, communicator, logging, clean failure.

A user error (`utils.process.errors.UserError`: a bad flag value, file, config or weight file, an
output folder that cannot be written, a training run that diverged) ends the script with one
line on stderr and exit status 2 instead of a traceback; Ctrl-C outside training ends it with
status 130. Under MPI
a failing rank aborts the whole job, so no rank is left waiting in a collective for it:
the launcher stops every rank at once and the failing rank's message is on stderr.
`StopRequest` turns the signals of a preemption into a flag a training loop polls.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import nnabla as nn
from nnabla.logger import logger

from .comm import MPI_START_TIMEOUT, Communicator, create_communicator
from .context import float_context, gpu_count, select_context
from .errors import INTERRUPTED_STATUS, USER_ERROR_STATUS, UsageError, user_error_message
from .launch import gpu_problem, local_rank, read_launch
from .watchdog import stop_watchdog

# SIGUSR1 is what batch schedulers (Slurm --signal, LSF, PBS) send ahead of a time limit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
_active_comm: Communicator = Communicator()


@dataclass
class Runtime:
    ctx: object
    float_ctx: object
    backend: str  # "cpu" or "cudnn" (-c cuda runs as cudnn)
    comm: Communicator
    device_id: int
    # Lines held back until the run says something else (see `log`).
    pending: List[str] = field(default_factory=list)

    @property
    def data_device_id(self) -> Optional[int]:
        """GPU for DALI, or None to run the pipelines on the CPU."""
        return None if self.backend == "cpu" else self.device_id

    def log(self, message: str) -> None:
        """Log once per job (rank 0), after the start-up lines held back so far."""
        if self.comm.is_main:
            for line in self.pending:
                logger.info(line)
            logger.info(message)
        self.pending.clear()

    def log_later(self, message: str) -> None:
        """Log with the next `log`: a start-up detail (the context chosen) that would
        otherwise stand above a one-line error in what the user gave, found before any work."""
        self.pending.append(message)


def setup_runtime(args: argparse.Namespace, device_gradients: bool = True) -> Runtime:
    """Choose the context (one GPU per local rank) and the communicator; log the choice.

    On the CPU `-t half` becomes float (in `args` too): NNabla's CPU half precision is
    ~200x slower. A GPU context without NNabla's CUDA extension is a one-line user error.
    A script that reduces only values on the host (`device_gradients` False: validation)
    gets MPI alone, without NCCL and its Open MPI and GPU-per-rank needs.
    """
    global _active_comm
    launch, rank_on_node = read_launch(), local_rank()
    # NNabla's multi-GPU communicator puts each rank on the GPU of its local rank.
    device_id = rank_on_node if launch.parallel else int(args.device_id)
    try:
        ctx, backend, why = select_context(args.context, device_id, args.type_config)
    except ImportError as e:
        raise UsageError(f"-c {args.context} needs NNabla's CUDA extension "
                         f"(requirements-gpu.txt), not installed here ({e}); use -c auto "
                         "or cpu") from None
    if backend != "cpu":
        problem = gpu_problem(rank_on_node, int(args.device_id), gpu_count(), launch.tasks,
                              os.environ.get("CUDA_VISIBLE_DEVICES"))
        if problem:
            raise UsageError(problem)
    if backend == "cpu" and args.type_config == "half":
        args.type_config = "float"
        ctx, backend, why = select_context(args.context, device_id, "float")
        why += "; -t half runs in float on the CPU (NNabla's CPU half is ~200x slower)"
    nn.set_default_context(ctx)
    hang_timeout = getattr(args, "hang_timeout", 0) or MPI_START_TIMEOUT
    comm = create_communicator(launch, backend if device_gradients else "cpu", ctx,
                               min(hang_timeout, MPI_START_TIMEOUT))
    _active_comm = comm
    if comm.size > 1:
        sys.excepthook = _abort_job
    rt = Runtime(ctx, float_context(ctx), backend, comm, device_id)
    rt.log_later(why + (f"; {comm.size} ranks" if comm.size > 1 else ""))
    return rt


def _abort_job(exc_type, exc, tb) -> None:
    sys.stderr.write(f"[rank {_active_comm.rank}] ")
    traceback.print_exception(exc_type, exc, tb)
    _active_comm.abort(1)


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


def _close_progress_bars() -> None:
    """End any open tqdm bar, so that the error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _fail(message: str, status: int) -> int:
    _close_progress_bars()
    prefix = f"[rank {_active_comm.rank}] " if _active_comm.size > 1 else ""
    if _active_comm.rank > 0:  # rank 0's progress bar may be mid-line on the same stderr
        prefix = "\n" + prefix
    sys.stderr.write(f"{prefix}{message}\n")
    sys.stderr.flush()
    if _active_comm.size > 1:
        _active_comm.abort(status)
    return status


def run(main: Callable[[], int]) -> int:
    """Run a script's main; user errors (`utils.process.errors.user_error_message`) become one line
    on stderr and status 2, Ctrl-C status 130; anything else is a bug and keeps its
    traceback. Under MPI the failing rank ends the job. A watchdog the script started
    (`utils.process.watchdog`) stops with it.
    """
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
        stop_watchdog()  # main may have started one; nothing watches a finished script
