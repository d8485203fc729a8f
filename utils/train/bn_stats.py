"""Re-estimate batch-normalisation statistics exactly from training batches.

Running statistics are an exponential average (decay 0.9 or 0.99): after a short run or a
fine-tune they lag far behind the weights, and the network validates much worse than it
trains. Recomputing them as the plain average of the batch statistics over N training
batches (on every rank, then averaged over ranks) fixes that without touching any weight.

The batch statistics are read back from the training graph itself: with the running
statistics set to zero before a forward pass, a batch-norm layer with decay d leaves
(1 - d) * batch statistic in them, whatever its kind (plain or fused with the residual).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List

import nnabla as nn
import numpy as np

from ..process.comm import Communicator
from ..process.watchdog import heartbeat

_BATCH_NORM_FUNCTIONS = ("BatchNormalization", "FusedBatchNormalization")


@dataclass
class _Statistic:
    name: str
    variable: nn.Variable
    decay: float


def batch_norm_statistics(output: nn.Variable) -> List[_Statistic]:
    """The running mean and variance parameters of every batch-norm layer under `output`."""
    by_hash: Dict[int, str] = {hash(v): k for k, v in nn.get_parameters(grad_only=False).items()}
    found: Dict[str, _Statistic] = {}

    def visit(f) -> None:
        if f.info.type_name not in _BATCH_NORM_FUNCTIONS:
            return
        if not f.info.args.get("batch_stat", True):
            raise ValueError("batch-norm statistics are recomputed on a training graph "
                             "(batch statistics), not an inference graph")
        for v in f.inputs[3:5]:  # inputs: x, beta, gamma, mean, var[, z]
            name = by_hash[hash(v)]
            found[name] = _Statistic(name, v, float(f.info.args["decay_rate"]))

    output.visit(visit)
    if not found:
        raise ValueError("the graph has no batch-normalisation layer")
    return list(found.values())


def recompute_batch_norm(
    output: nn.Variable,
    feeds: Iterable[Callable[[], None]],
    comm: Communicator,
) -> int:
    """Set every running mean/var under `output` to its average over the fed batches.

    Each element of `feeds` puts one training batch into the graph's inputs. The graph runs
    forward only; no trainable parameter changes. Returns the number of batches used
    (per rank). All ranks must feed the same number of batches.
    """
    stats = batch_norm_statistics(output)
    totals = [np.zeros(s.variable.shape, np.float64) for s in stats]
    count = 0
    for feed in feeds:
        feed()
        for s in stats:
            s.variable.data.zero()
        output.forward(clear_buffer=True)
        for s, total in zip(stats, totals):
            total += s.variable.d / (1.0 - s.decay)
        count += 1
        heartbeat()
    if count == 0:
        raise ValueError("no batches to recompute batch-norm statistics from")
    flat = np.concatenate([t.ravel() for t in totals]) / count
    flat = np.asarray(comm.all_reduce_mean(flat.tolist()))
    offset = 0
    for s in stats:
        size = int(np.prod(s.variable.shape))
        s.variable.d = flat[offset : offset + size].reshape(s.variable.shape)
        offset += size
    return count


def training_feeds(batches, epoch: int, count: int, x: nn.Variable) -> Iterator[Callable[[], None]]:
    """Feeds of the first `count` batches of `epoch` of an ImageBatches into `x`."""
    for i, batch in enumerate(batches.epoch(epoch)):
        if i == count:
            return
        yield lambda batch=batch: batch.copy_to(x)
