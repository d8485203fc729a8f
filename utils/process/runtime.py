"""Process set-up shared by the scripts that run networks: context, communicator, logging.

Under MPI an uncaught exception on one rank aborts the whole job (as `utils.process.run.run`
does for user errors), so that no rank is left waiting in a collective for it: the launcher
stops every rank at once and the failing rank's traceback is on stderr.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from dataclasses import dataclass, field
from typing import List, Optional

import nnabla as nn
from nnabla.logger import logger

from .comm import MPI_START_TIMEOUT, Communicator, create_communicator
from .context import float_context, gpu_count, select_context
from .errors import UsageError
from .launch import gpu_problem, local_rank, read_launch
from .run import end_job_on_failure


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
    end_job_on_failure(comm)
    if comm.size > 1:
        sys.excepthook = functools.partial(_abort_job, comm)
    rt = Runtime(ctx, float_context(ctx), backend, comm, device_id)
    rt.log_later(why + (f"; {comm.size} ranks" if comm.size > 1 else ""))
    return rt


def _abort_job(comm: Communicator, exc_type, exc, tb) -> None:
    """An uncaught exception's traceback, then the end of every rank of `comm`."""
    sys.stderr.write(f"[rank {comm.rank}] ")
    traceback.print_exception(exc_type, exc, tb)
    comm.abort(1)
