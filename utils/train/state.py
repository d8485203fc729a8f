"""A training run's resumable state. `TrainingState` owns everything a resumed
run needs to continue exactly as if it had never stopped, and changes itself as the run goes
(`set_resolution`, `take_epoch_sums`); its `state_dict()`, made of each part's own, is what a
checkpoint file stores and `load_state_dict()` restores it, the same keys in both directions:

- the parameters; batch-norm running statistics are each rank's own until the epoch ends
  (only gradients are averaged), so rank r > 0 keeps its statistics under `rank<r>/`;
- the solver: momenta, update counters, loss scale;
- the data position (epoch, iteration) with what it depends on;
- each rank's mixup / CutMix random stream;
- the weight EMA;
- each rank's sums over the epoch so far, so a resumed epoch reports what an uninterrupted
  one would, and the sums of all ranks since the last point of the per-iteration curves.

A checkpoint resumes on another number of ranks when the global batch of an update is kept
(`utils.train.spec.BatchSplit`), mid-epoch too: the data position maps to the same images done
(`utils.data.batch_plan`), the solver, the EMA and the sums of all ranks are the same on every
rank. Of the per-rank parts, each new rank takes the mean of the saved ranks' batch-norm
statistics (what the epoch's end would average), its own mixing stream if the checkpoint has
one (else it starts one from its seed, as at the start of a run), and rank 0 the epoch's sums
of all saved ranks. Batch-norm then normalises over the new per-rank batch, and the crops,
flips, policy draws, mixing and dropout are the new ranks' own: the resumed run continues the
same training (learning rate, images of each update), not bit for bit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import nnabla as nn
import numpy as np

from ..data.pipelines import ImageBatches
from ..process.comm import Communicator
from ..process.errors import TrainingDiverged
from ..recipe.config import ConfigError, config_from_data
from ..recipe.solvers import Solver
from .checkpoint import (
    CheckpointError,
    checkpoint_name,
    identity_mismatch,
    list_checkpoints,
    save_checkpoint,
)
from .ema import WeightEma
from .mixing import BatchMixing
from .spec import SPLIT_FIELDS, BatchSplit, RunSpec
from .step import TrainingGraph, running_statistics

# Where each part of the state is kept in a checkpoint (the format of the files written since
# the first version; tests/data/checkpoint_before_refactor.json pins it).
RANK_STATISTICS = "rank{rank}/"  # extra: rank r's batch-norm statistics (rank 0's: params)
MIXUP_KEY = "mixup_rng_{rank}"  # extra: rank r's MT19937 key; the rest of it in meta
MIXUP_POSITION = "mixup_rng_pos"  # meta: [position, has_gauss, gauss] of each rank's stream
EMA_PREFIX = "ema/"  # extra: the EMA's shadow of each parameter
IDENTITY = "identity"  # meta: what must not change when the run is resumed
DATA_POSITION = "train_data"  # meta: ImageBatches.state_dict()
EPOCH_SUMS = "epoch_sums"  # meta: each rank's EpochSums, as a list
WINDOW_SUMS = "window_sums"  # meta: all ranks' EpochSums since the last iteration point


@dataclass
class EpochSums:
    """This rank's sums over the epoch so far (a resumed epoch continues them)."""

    loss: float = 0.0  # loss times valid samples
    wrong: float = 0.0  # valid samples whose top-1 class was wrong
    seen: float = 0.0  # valid samples
    skipped: float = 0.0  # steps skipped on overflow (--dynamic-loss-scaling; same on all ranks)

    def add(self, loss: float, wrong: float, seen: float, skipped: bool) -> None:
        self.loss += loss
        self.wrong += wrong
        self.seen += seen
        self.skipped += skipped

    def state_dict(self) -> List[float]:
        return [self.loss, self.wrong, self.seen, self.skipped]

    @classmethod
    def restored(cls, saved: List[List[float]], rank: int, ranks: int) -> EpochSums:
        """Rank `rank`'s part, on `ranks` ranks, of the sums `saved` by each rank: its own on
        as many ranks; else rank 0 carries the totals (the epoch's result sums the ranks')
        and every rank the skipped steps (the same on all)."""
        if len(saved) == ranks:
            return cls(*saved[rank])
        skipped = saved[0][3]
        if rank:
            return cls(skipped=skipped)
        loss, wrong, seen = np.sum(np.asarray(saved)[:, :3], axis=0).tolist()
        return cls(loss, wrong, seen, skipped)


class TrainingState:
    """What a checkpoint holds, restored the way it is saved (see the module's docstring),
    and the graph the data feeds; it changes itself as the run goes."""

    def __init__(self, spec: RunSpec, comm: Communicator, solver: Solver,
                 data: ImageBatches, graph: TrainingGraph, ema: Optional[WeightEma] = None):
        self.spec, self.comm, self.solver, self.ema = spec, comm, solver, ema
        self.data, self.graph = data, graph
        self.sums = EpochSums()  # this rank's, over the epoch so far
        # Of all ranks (the same on each) since the last point of the per-iteration curves.
        self.since_point = EpochSums()

    @property
    def mixing(self) -> Optional[BatchMixing]:
        return self.graph.mixing

    @property
    def position(self) -> Tuple[int, int]:
        """(epoch, iteration) of the next batch: where a checkpoint taken now resumes."""
        state = self.data.state_dict()
        return state["epoch"], state["iteration"]

    def set_resolution(self, size: int) -> None:
        """Train at `size` x `size` from here (progressive resizing): the batches and the
        graph are rebuilt at a new size, keeping parameters, solver, data position and
        mixing stream."""
        shape = self.data.image_shape
        self.data.set_spatial_size(size)
        if self.data.image_shape != shape:
            self.graph = self.graph.resized(self.data.image_shape)

    def take_epoch_sums(self) -> EpochSums:
        """This rank's sums over the epoch, which start again (at the epoch's end)."""
        sums, self.sums = self.sums, EpochSums()
        return sums

    def take_since_point(self) -> EpochSums:
        """All ranks' sums since the last point of the curves, which start again."""
        taken, self.since_point = self.since_point, EpochSums()
        return taken

    def state_dict(self) -> Optional[Dict[str, Dict[str, Any]]]:
        """Every rank's state, gathered on rank 0 (None on the others): a collective.

        {"meta": JSON-able record, "params", "solver", "extra": name -> array}.
        """
        gathered = self.comm.all_gather_object({
            "sums": self.sums.state_dict(),
            # (rank 0's statistics are its parameters, saved below)
            "statistics": {} if self.comm.is_main else
            {k: v.d.copy() for k, v in running_statistics().items()},
            "mixup": self.mixing.state_dict() if self.mixing is not None else None,
        })
        if not self.comm.is_main:
            return None
        extra: Dict[str, np.ndarray] = {}
        for rank, part in enumerate(gathered):
            prefix = RANK_STATISTICS.format(rank=rank)
            extra.update({prefix + k: v for k, v in part["statistics"].items()})
            if part["mixup"] is not None:
                extra[MIXUP_KEY.format(rank=rank)] = part["mixup"]["key"]
        if self.ema is not None:  # the same on every rank: it averages the all-reduced updates
            extra.update({EMA_PREFIX + k: v for k, v in self.ema.state_dict().items()})
        meta = {IDENTITY: self.spec.identity(), DATA_POSITION: self.data.state_dict(),
                MIXUP_POSITION: [p["mixup"]["position"] for p in gathered
                                 if p["mixup"] is not None],
                EPOCH_SUMS: [p["sums"] for p in gathered],
                WINDOW_SUMS: self.since_point.state_dict()}
        params = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
        return {"meta": meta, "params": params, "solver": self.solver.state_dict(),
                "extra": extra}

    def load_state_dict(self, state: Dict[str, Dict[str, Any]]) -> None:
        """Give this rank its part of a `state_dict()`, saved on as many ranks or on another
        number (see the module's docstring)."""
        meta, extra, rank, ranks = state["meta"], state["extra"], self.comm.rank, self.comm.size
        saved_ranks = meta[IDENTITY]["num_ranks"]
        statistics = rank_statistics(extra, rank) if saved_ranks == ranks else \
            mean_statistics(state["params"], extra, saved_ranks)
        for name, var in nn.get_parameters(grad_only=False).items():
            var.d = statistics.get(name, state["params"][name])
        self.solver.load_state_dict(state["solver"])
        if self.mixing is not None and rank < len(meta[MIXUP_POSITION]):
            self.mixing.load_state_dict({"key": extra[MIXUP_KEY.format(rank=rank)],
                                        "position": meta[MIXUP_POSITION][rank]})
        if self.ema is not None:
            self.ema.load_state_dict({k[len(EMA_PREFIX):]: v for k, v in extra.items()
                                      if k.startswith(EMA_PREFIX)})
        self.sums = EpochSums.restored(meta[EPOCH_SUMS], rank, ranks)
        self.since_point = EpochSums(*meta.get(WINDOW_SUMS, []))  # (absent before the curves)
        self.data.load_state_dict(meta[DATA_POSITION])

    def resume(self, checkpoint: Any) -> List[str]:
        """Continue from a `utils.train.checkpoint.Checkpoint` of the same run (else refused); a
        run may be given more epochs (or fewer, down to those done) and another split of
        its global batch. Returns what changed, as lines for the log."""
        saved, done = checkpoint.meta[IDENTITY], checkpoint.meta["epoch"]
        before, now = saved["config"]["epochs"], self.spec.config.epochs
        mismatch = identity_mismatch(without_split(with_epochs(saved, now, checkpoint.path)),
                                     without_split(self.spec.identity()))
        if mismatch:
            raise CheckpointError(f"{checkpoint.path}: cannot resume a different run "
                                  f"({mismatch}); use another --monitor-path")
        was, split = BatchSplit.of(saved), self.spec.split
        if was.global_batch != split.global_batch:
            raise CheckpointError(f"{checkpoint.path}: {was.refusal(split)}")
        if now < done:
            raise CheckpointError(f"{checkpoint.path}: {done} epochs are done; -e {now} would "
                                  f"shorten the run below them")
        self.load_state_dict(checkpoint.state)
        changes = [was.resumed_as(split)] if was != split else []
        if before != now:
            changes.append(f"extending {before} -> {now} epochs; the schedule is re-evaluated "
                           f"for {now} epochs from epoch {self.position[0]}")
        return changes

    def save(self, directory: str, keep: int) -> str:
        """Checkpoint the run at its position (rank 0 writes; a collective); return the path.

        Call `check_finite` first: nothing non-finite is ever saved."""
        epoch, iteration = self.position
        state = self.state_dict()
        if state is not None:
            save_checkpoint(directory, epoch, iteration, keep=keep, **state)
        self.comm.barrier()
        return os.path.join(directory, checkpoint_name(epoch, iteration))

    def check_finite(self, directory: str) -> None:
        """`check_finite_parameters` where the run stands (a collective)."""
        epoch, iteration = self.position
        where = f"at epoch {epoch}, iteration {iteration}" if iteration else \
            f"after epoch {epoch - 1}"
        check_finite_parameters(self.comm, directory, where)

    def average_statistics(self) -> None:
        """Make the batch-norm statistics the mean over ranks: one model to validate and save."""
        self.comm.average_values(list(running_statistics().values()))


def rank_statistics(extra: Dict[str, np.ndarray], rank: int) -> Dict[str, np.ndarray]:
    """Rank `rank`'s batch-norm statistics in a checkpoint's extras (none for rank 0:
    its statistics are the parameters)."""
    prefix = RANK_STATISTICS.format(rank=rank)
    return {k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)}


def mean_statistics(params: Dict[str, np.ndarray], extra: Dict[str, np.ndarray], ranks: int
                    ) -> Dict[str, np.ndarray]:
    """The mean over a checkpoint's `ranks` ranks of their batch-norm statistics."""
    others = [rank_statistics(extra, rank) for rank in range(1, ranks)]
    return {name: np.mean([params[name], *(o[name] for o in others)], axis=0,
                          dtype=np.float64).astype(params[name].dtype)
            for name in (others[0] if others else {})}


def without_split(identity: Dict[str, Any]) -> Dict[str, Any]:
    """An identity record without its batch split (compared through the global batch)."""
    return {k: v for k, v in identity.items() if k not in SPLIT_FIELDS}


def with_epochs(identity: Dict[str, Any], epochs: int, source: str) -> Dict[str, Any]:
    """`identity` (a checkpoint's, named by `source`) of the same run given `epochs` epochs,
    by the recipe's own rule (`TrainConfig.with_epochs`). A recipe this version refuses is
    left as it is: it then differs from any run's."""
    try:
        config = config_from_data(identity["config"], source)
    except ConfigError:
        return identity
    return dict(identity, config=config.with_epochs(epochs).to_dict())


def check_finite_parameters(comm: Communicator, directory: str, where: str) -> None:
    """Stop every rank before a non-finite parameter is saved (a step can overflow the
    weights while its loss was still finite); `directory` holds the checkpoints."""
    bad = [k for k, v in nn.get_parameters(grad_only=False).items() if not np.isfinite(v.d).all()]
    if comm.all_reduce_sum([len(bad)])[0]:
        raise diverged(f"non-finite parameters {where}" + (f" ('{bad[0]}')" if bad else ""),
                       directory)


def diverged(what: str, checkpoints: str) -> TrainingDiverged:
    """The error of a run that diverged, saying what was kept in `checkpoints`."""
    saved = list_checkpoints(checkpoints)
    kept = f"the last checkpoint, {saved[0]}, is intact" if saved else "no checkpoint was saved"
    return TrainingDiverged(f"{what}: training diverged; {kept}; train again with a lower "
                            "learning rate in a new --monitor-path")
