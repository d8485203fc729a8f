"""Run train.py's main in this MPI rank, then report every rank's parameters (for the tests).

    mpirun -n 2 python tests/train_rank_digests.py <train.py flags>

Each rank runs exactly what `python train.py <flags>` runs. Afterwards the parameters are
still in NNabla's global scope, so every rank hashes them (batch-norm statistics included)
and rank 0 prints one line `RANK_DIGESTS {"status": ..., "digests": [...], "trainable":
[...], "differing": [...]}`: the digests of all parameters and of the trainable ones in rank
order, and the names of the parameters whose values differ from rank 0's somewhere. This is
the only way to see a rank other than 0, which writes no files.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Mapping

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

MARKER = "RANK_DIGESTS"


def parameter_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over the names (sorted) and float32 bytes of a parameter set."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        h.update(name.encode())
        h.update(np.ascontiguousarray(arrays[name], dtype=np.float32).tobytes())
    return h.hexdigest()


def main() -> int:
    import nnabla as nn

    import train
    from utils.process.run import run

    status = run(lambda: train.main(sys.argv[1:]))
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    params = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
    trainable = {k: params[k] for k, v in nn.get_parameters(grad_only=True).items()}
    digests = comm.allgather(parameter_digest(params))
    trainable_digests = comm.allgather(parameter_digest(trainable))
    reference = comm.bcast(params, root=0)
    differing = sorted(set().union(*comm.allgather(
        [k for k, v in params.items() if not np.array_equal(v, reference.get(k))])))
    if comm.Get_rank() == 0:
        print(MARKER, json.dumps({"status": status, "digests": digests,
                                  "trainable": trainable_digests, "differing": differing}),
              flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
