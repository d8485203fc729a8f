"""The communicator for data-parallel training: one small interface, three back ends.

- single process: nothing to exchange;
- MPI on CPU (mpi4py): NNabla has no CPU communicator, and ranks are the only way to use
  more than one core since NNabla's CPU backend is single-threaded;
- NCCL on GPUs, through NNabla's `MultiProcessDataParallelCommunicator`.

Gradients are averaged over ranks, so each rank's loss is a mean over its own batch and the
update equals one over the global batch. MPI is used only when the process was started by
a launcher (`launch.py`), so a plain `python train.py` never needs an MPI runtime; a launch
whose processes would not form one MPI world is refused before any work.
"""
from __future__ import annotations

import functools
import os
import socket
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import nnabla as nn
import numpy as np

from .errors import USER_ERROR_STATUS, UsageError
from .gpu_stack import (
    extension_libmpi,
    extension_libnccl,
    loaded_libmpi,
    loader_cache,
    nccl_mpi_problem,
    nccl_world_problem,
)
from .launch import (
    Launch,
    SrunStep,
    StartupGuard,
    launch_problem,
    task_index,
    world_problem,
)
from .native_stderr import drain, wait_until_read

# A start-up of MPI that takes longer than this is stuck (see `StartupGuard`), unless the
# script's --hang-timeout is shorter.
MPI_START_TIMEOUT = 300.0


def _collective(method: Callable) -> Callable:
    """Marks a collective: under srun, a node-mate gone while this rank waits in one ends
    the job (see `utils.process.launch.SrunStep`)."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        step = self._step
        if step is None:
            return method(self, *args, **kwargs)
        outer, step.waiting_since = step.waiting_since, time.monotonic()
        try:
            return method(self, *args, **kwargs)
        finally:
            step.waiting_since = outer

    return wrapped


class Communicator:
    """A single process: the base of the multi-process communicators."""

    rank = 0
    size = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_gradients(self, params: Sequence[nn.Variable]) -> None:
        """Average the gradients of `params` over ranks, in place."""

    def all_reduce_mean(self, values: Sequence[float]) -> List[float]:
        return [float(v) for v in values]

    def all_reduce_sum(self, values: Sequence[float]) -> List[float]:
        return [float(v) for v in values]

    def average_values(self, variables: Sequence[nn.Variable]) -> None:
        """Replace the values of `variables` by their mean over ranks, in place (for the
        batch-norm running statistics, which each rank accumulates from its own shard)."""

    def broadcast_parameters(self, params: Dict[str, nn.Variable]) -> None:
        """Give every rank rank 0's parameter values (start and resume)."""

    def broadcast_object(self, obj):
        return obj

    def all_gather_object(self, obj) -> list:
        """Every rank's `obj`, in rank order."""
        return [obj]

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        """Stop every rank: a failing rank must not leave the others waiting in a collective."""
        sys.exit(code)


class MpiCommunicator(Communicator):
    """Data parallelism over MPI with numpy buffers (CPU)."""

    def __init__(self, launch: Launch, start_timeout: float = MPI_START_TIMEOUT):
        import mpi4py

        # The library is checked against the launcher before it starts: a wrong wire
        # protocol ends MPI_Init with the library's own error stack.
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = True
        from mpi4py import MPI

        _refuse(launch_problem(launch, MPI.Get_library_version())
                or self._library_problem(MPI.Get_library_version()))
        guard = StartupGuard(start_timeout, launch.describe())
        MPI.Init_thread()
        guard.done()
        self._mpi = MPI
        self._comm = MPI.COMM_WORLD
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        _refuse(world_problem(launch, self.size))
        self._buffer = np.empty(0, np.float32)
        self._step = SrunStep.for_this_process(launch)
        if self._step is not None:
            tasks = self.all_gather_object((socket.gethostname(), os.getpid()))
            self._step.node_mates = {rank: pid for rank, (host, pid) in enumerate(tasks)
                                     if host == tasks[self.rank][0] and rank != self.rank}

    def _library_problem(self, library_version: str) -> Optional[str]:
        """Why this MPI library cannot serve this communicator (None: it can)."""
        return None

    @_collective
    def all_reduce_gradients(self, params: Sequence[nn.Variable]) -> None:
        # One packed buffer: one collective per step instead of one per tensor.
        sizes = [p.size for p in params]
        total = sum(sizes)
        if self._buffer.size != total:
            self._buffer = np.empty(total, np.float32)
        offset = 0
        for p, n in zip(params, sizes):
            self._buffer[offset : offset + n] = p.g.ravel()
            offset += n
        self._comm.Allreduce(self._mpi.IN_PLACE, self._buffer, op=self._mpi.SUM)
        self._buffer /= self.size
        offset = 0
        for p, n in zip(params, sizes):
            p.g = self._buffer[offset : offset + n].reshape(p.shape)
            offset += n

    @_collective
    def all_reduce_sum(self, values: Sequence[float]) -> List[float]:
        buf = np.asarray(values, np.float64)
        self._comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return buf.tolist()

    def all_reduce_mean(self, values: Sequence[float]) -> List[float]:
        return [v / self.size for v in self.all_reduce_sum(values)]

    @_collective
    def average_values(self, variables: Sequence[nn.Variable]) -> None:
        if not variables:
            return
        buffer = np.concatenate([np.asarray(v.d, np.float64).ravel() for v in variables])
        self._comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        buffer /= self.size
        offset = 0
        for v in variables:
            v.d = buffer[offset : offset + v.size].reshape(v.shape)
            offset += v.size

    @_collective
    def broadcast_parameters(self, params: Dict[str, nn.Variable]) -> None:
        # Read and written as float32 whatever the array last held: after a forward pass
        # in half precision its newest copy is float16, and the master weights are float32.
        for v in params.values():
            data = np.array(v.data.get_data("r", np.float32), order="C")  # (a copy: MPI writes)
            self._comm.Bcast(data, root=0)
            v.data.get_data("w", np.float32)[...] = data

    @_collective
    def broadcast_object(self, obj):
        return self._comm.bcast(obj, root=0)

    @_collective
    def all_gather_object(self, obj) -> list:
        return self._comm.allgather(obj)

    @_collective
    def barrier(self) -> None:
        self._comm.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        drain()  # what this rank wrote must be through before the launcher stops reading
        wait_until_read(2)
        if self._step is not None:  # srun: no MPI_Abort (see SrunStep)
            self._step.end(code)
        # MPICH's MPI_Abort prints "Abort(<code>) on node <rank> ...: application called
        # MPI_Abort" on this rank's stderr, below the error this rank has just printed (which
        # must stay the last line); the launcher's status still tells the code.
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)
        self._comm.Abort(code)


class NcclCommunicator(MpiCommunicator):
    """GPUs: gradients through NNabla's NCCL communicator, everything else through MPI.

    NNabla's communicator opens its own MPI library (`utils.process.gpu_stack`): it must be the one
    mpi4py runs, checked before MPI starts, and its world must be MPI's, checked after.
    The initial broadcast goes through MPI in float32: NNabla's communicator casts what it
    sends to its context's type, which under `-t half` would round the float32 master weights
    of every rank, rank 0's included, to float16. Cannot run on a machine without GPUs; kept
    to NNabla's documented API.
    """

    def __init__(self, launch: Launch, ctx, start_timeout: float = MPI_START_TIMEOUT):
        super().__init__(launch, start_timeout)
        import nnabla.communicators as C

        self._nccl = C.MultiProcessDataParallelCommunicator(ctx)
        self._nccl.init()
        _refuse(nccl_world_problem(self.rank, self.size, self._nccl.rank, self._nccl.size))

    def _library_problem(self, library_version: str) -> Optional[str]:
        cache = loader_cache()
        return nccl_mpi_problem(library_version, loaded_libmpi(),
                                extension_libmpi(os.environ, cache),
                                extension_libnccl(os.environ, cache))

    @_collective
    def all_reduce_gradients(self, params: Sequence[nn.Variable]) -> None:
        self._nccl.all_reduce([p.grad for p in params], division=True, inplace=False)


def _refuse(problem: Optional[str]) -> None:
    """A launch that cannot train one model: one line from the first task, status 2 from all
    (the same line from every task would say nothing more)."""
    if problem is None:
        return
    if task_index() > 0:
        sys.exit(USER_ERROR_STATUS)
    raise UsageError(problem)


def create_communicator(launch: Launch, backend: str = "cpu", ctx=None,
                        start_timeout: float = MPI_START_TIMEOUT) -> Communicator:
    """The communicator for this process (`launch`: `utils.process.launch.read_launch()`'s):
    MPI-based when a launcher started several; a launch that cannot form one world is a
    `UsageError` (see `utils.process.launch`)."""
    _refuse(launch_problem(launch))  # (what is known without loading MPI)
    if not launch.parallel:
        return Communicator()
    if backend == "cpu":
        return MpiCommunicator(launch, start_timeout)
    return NcclCommunicator(launch, ctx, start_timeout)
