"""Process set-up shared by the scripts: context, communicator, logging, clean failure.

A user error (bad flag value, file, config or weight file) ends the script with one line
on stderr and exit status 2 instead of a traceback. Under MPI a failing rank aborts the
whole job, so no rank is left waiting in a collective for it.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

import nnabla as nn
from nnabla.logger import logger

from .comm import Communicator, create_communicator
from .context import float_context, select_context

USER_ERROR_STATUS = 2
# Launcher variables giving a rank's index on its node (Open MPI, MPICH/Hydra, Slurm).
_LOCAL_RANK_VARS = ("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID")

_active_comm: Communicator = Communicator()


def local_rank_from_env() -> int:
    for name in _LOCAL_RANK_VARS:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


@dataclass
class Runtime:
    ctx: object
    float_ctx: object
    backend: str  # "cpu", "cuda" or "cudnn"
    comm: Communicator
    device_id: int

    @property
    def data_device_id(self) -> Optional[int]:
        """GPU for DALI, or None to run the pipelines on the CPU."""
        return None if self.backend == "cpu" else self.device_id

    def log(self, message: str) -> None:
        """Log once per job (rank 0)."""
        if self.comm.is_main:
            logger.info(message)


def setup_runtime(args: argparse.Namespace) -> Runtime:
    """Choose the context (one GPU per local rank) and the communicator; log the choice.

    On the CPU `-t half` becomes float (in `args` too): NNabla's CPU half precision is
    ~200x slower. A GPU context without NNabla's CUDA extension is a one-line user error.
    """
    global _active_comm
    device_id = int(args.device_id) + local_rank_from_env()
    try:
        ctx, backend, why = select_context(args.context, device_id, args.type_config)
    except ImportError as e:
        raise ValueError(f"-c {args.context} needs NNabla's CUDA extension "
                         f"(requirements-gpu.txt), not installed here ({e}); use -c auto "
                         "or cpu") from None
    if backend == "cpu" and args.type_config == "half":
        args.type_config = "float"
        ctx, backend, why = select_context(args.context, device_id, "float")
        why += "; -t half runs in float on the CPU (NNabla's CPU half is ~200x slower)"
    nn.set_default_context(ctx)
    comm = create_communicator(backend, ctx)
    _active_comm = comm
    if comm.size > 1:
        sys.excepthook = _abort_job
    rt = Runtime(ctx, float_context(ctx), backend, comm, device_id)
    rt.log(why + (f"; {comm.size} ranks" if comm.size > 1 else ""))
    return rt


def _abort_job(exc_type, exc, tb) -> None:
    sys.stderr.write(f"[rank {_active_comm.rank}] ")
    traceback.print_exception(exc_type, exc, tb)
    _active_comm.abort(1)


def run(main: Callable[[], int]) -> int:
    """Run a script's main; user errors (ValueError and OSError) become one line, status 2."""
    try:
        return main()
    except (ValueError, OSError) as e:
        prefix = f"[rank {_active_comm.rank}] " if _active_comm.size > 1 else ""
        sys.stderr.write(f"{prefix}error: {e}\n")
        sys.stderr.flush()
        if _active_comm.size > 1:
            _active_comm.abort(USER_ERROR_STATUS)
        return USER_ERROR_STATUS
