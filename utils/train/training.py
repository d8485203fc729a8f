"""A training run's graph and its resumable state, as train.py's loop uses them.

`build_training_graph` makes a `TrainingNetwork` in training mode with its inputs, the (mixup
or CutMix) targets, the loss and the error count. `TrainingState` owns everything a resumed
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
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import nnabla as nn
import numpy as np

from models import build_network

from ..data.pipelines import ImageBatches
from ..eval.losses import classification_loss, top_n_error_count
from ..process.comm import Communicator
from ..process.errors import TrainingDiverged, UsageError
from ..recipe.config import ConfigError, TrainConfig, config_from_data
from ..recipe.schedules import solver_learning_rate
from ..recipe.solvers import Solver
from .checkpoint import (
    CheckpointError,
    checkpoint_name,
    identity_mismatch,
    list_checkpoints,
    save_checkpoint,
)
from .ema import WeightEma
from .mixing import MIXUP_SEED, BatchMixing
from .spec import SPLIT_FIELDS, BatchSplit, RunSpec

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


def input_channels(type_config: str) -> int:
    """The channels of a training batch: in half precision a zero 4th channel after the
    normalisation, in either layout, as the official example feeds it (its mixed-precision
    weight files have a 4-channel first convolution)."""
    return 4 if type_config == "half" else 3


def input_shape(batch_size: int, spatial_size: Tuple[int, int], type_config: str,
                channel_last: bool) -> Tuple[int, ...]:
    """The training batch the network is fed: NHWC with `channel_last`, else NCHW."""
    channels = input_channels(type_config)
    return (batch_size, *spatial_size, channels) if channel_last else \
        (batch_size, channels, *spatial_size)


def check_layout(channel_last: bool, backend: str) -> None:
    """Refuse a layout the back end cannot run, before any work."""
    if channel_last and backend == "cpu":
        raise UsageError("--channel-last needs a GPU: NNabla's CPU backend runs NCHW only")


def iteration_seed(seed: int, rank: int, epoch: int, iteration: int) -> int:
    """Seed of NNabla's random functions (dropout, drop-connect) for one iteration.

    Re-seeding every iteration makes them a function of the position, so a resumed run
    draws what the uninterrupted one would have. Only graphs that draw are re-seeded
    (`draws_global_random`).
    """
    return (seed * 1_000_003 + rank * 7_919 + epoch * 100_003 + iteration) % (2**31 - 1)


GLOBAL_SEED = -1  # the `seed` argument of NNabla's random functions meaning "the global one"


def draws_global_random(*outputs: nn.Variable) -> bool:
    """Whether a function of the graph of `outputs` draws from NNabla's global random
    generator, the one `nn.seed` sets: those of NNabla's functions that take a `seed` and
    were given -1 (dropout, rand, randn, randint, the random_* and image_augmentation, ...).

    Only these make `nn.seed` matter: a graph without one is not re-seeded every iteration
    (each `nn.seed` costs host time, and NNabla-CUDA replaces its cuRAND generator the next
    time a function draws: the price of an exact resume for the graphs that do draw).
    """
    found = []

    def visit(f: Any) -> None:
        if f.info.args.get("seed") == GLOBAL_SEED:
            found.append(f.info.type_name)

    for output in outputs:
        output.visit(visit)
    return bool(found)


def running_statistics() -> Dict[str, nn.Variable]:
    """The parameters no solver updates: the batch-norm running means and variances."""
    return {k: v for k, v in nn.get_parameters(grad_only=False).items() if not v.need_grad}


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class TrainingNetwork:
    """The training network apart from its input size (progressive resizing rebuilds it at
    another): `arch` with the recipe's label smoothing, mixup and CutMix; `rank` seeds this
    rank's mixing stream; loss and error are computed in `float_ctx` (None: the current)."""

    arch: str
    num_classes: int
    channel_last: bool
    config: TrainConfig
    rank: int = 0
    float_ctx: Any = None


@dataclass
class TrainingGraph:
    """Inputs to fill per batch and the outputs of the training network."""

    image: nn.Variable
    label: nn.Variable  # int (B, 1)
    mask: nn.Variable  # float (B, 1): 1 counts the sample, 0 is padding
    logits: nn.Variable
    loss: nn.Variable  # mean over the valid samples, of the mixed targets under mixup
    error: nn.Variable  # number of valid samples whose top-1 class is wrong
    mixing: Optional[BatchMixing]
    inputs: Optional[nn.Variable] = None  # the network's input: `image`, mixed if mixing
    network: Optional[TrainingNetwork] = None  # what it was built from (None: by hand)
    # A function draws from NNabla's global generator: re-seed it every iteration.
    draws_random: bool = field(init=False)

    def __post_init__(self) -> None:
        self.draws_random = draws_global_random(self.loss, self.error)

    def feed(self, batch: Any) -> None:
        """Put a pipeline `Batch` into the inputs (and draw the next mixup or CutMix)."""
        batch.copy_to(self.image)
        self.label.d = batch.labels
        self.mask.d = batch.mask
        if self.mixing is not None:
            self.mixing.resample()

    def fed_images(self) -> np.ndarray:
        """A host copy of the batch in the inputs as the network receives it (after mixup
        or CutMix, computed here from the same graph)."""
        if self.inputs is None or self.inputs is self.image:
            return self.image.d.copy()
        self.inputs.forward()
        return self.inputs.d.copy()

    def resized(self, image_shape: Tuple[int, ...]) -> TrainingGraph:
        """The same network (its parameters and mixing stream) on images of `image_shape`."""
        if self.network is None:
            raise ValueError("a graph built by hand cannot be rebuilt at another size")
        return build_training_graph(self.network, image_shape, replaces=self)


def build_training_graph(network: TrainingNetwork, image_shape: Tuple[int, ...],
                         replaces: Optional[TrainingGraph] = None) -> TrainingGraph:
    """`network` on images of `image_shape`; loss and error in float32.

    The first build creates the network's parameters (with the current `nn.seed`); a graph
    that `replaces` another (another resolution) shares them and its mixing stream.
    """
    config, channel_last = network.config, network.channel_last
    batch = image_shape[0]
    image, label, mask = nn.Variable(image_shape), nn.Variable((batch, 1)), nn.Variable((batch, 1))
    mixing, inputs, target = None, image, label
    if config.mixup > 0 or config.cutmix > 0:
        mixing = BatchMixing(config.mixup, config.cutmix, image_shape, network.num_classes,
                             channel_last, MIXUP_SEED + network.rank, config.mixup_switch_prob,
                             replaces.mixing.rng if replaces is not None else None)
        inputs, target = mixing.mix_inputs(image), mixing.mix_labels(label)
    logits, _ = build_network(inputs, network.num_classes, network.arch, test=False,
                              channel_last=channel_last)
    logits.persistent = True
    with nn.context_scope(network.float_ctx or nn.get_current_context()):
        loss = classification_loss(logits, target, config.label_smoothing, weight=mask)
        error = top_n_error_count(logits, label, n=1, weight=mask)
    loss.persistent = error.persistent = True
    check_batch_norm_sizes(batch_norm_inputs(loss), image_shape, channel_last)
    return TrainingGraph(image, label, mask, logits, loss, error, mixing, inputs, network)


BATCH_NORMS = ("BatchNormalization", "FusedBatchNormalization")


def batch_norm_inputs(output: nn.Variable) -> List[Tuple[str, Tuple[int, ...], List[int]]]:
    """(layer, input shape, channel axes) of every batch-norm in the graph of `output`."""
    names = {v: name for name, v in nn.get_parameters(grad_only=False).items()}
    found = []

    def visit(f: Any) -> None:
        if f.info.type_name in BATCH_NORMS:
            beta = names.get(f.inputs[1], "?")
            found.append((beta.rsplit("/", 1)[0], tuple(f.inputs[0].shape),
                          list(f.info.args["axes"])))

    output.visit(visit)
    return found


def check_batch_norm_sizes(layers: List[Tuple[str, Tuple[int, ...], List[int]]],
                           image_shape: Tuple[int, ...], channel_last: bool) -> None:
    """Refuse a batch-norm that would normalise a single value per channel (batch 1 at a 1x1
    feature map): its variance is 0, the running variance's unbiased update divides by 0,
    and the run stopped as "diverged; train with a lower learning rate"."""
    for name, shape, axes in layers:
        if int(np.prod([n for i, n in enumerate(shape) if i not in axes])) <= 1:
            h, w = image_shape[1:3] if channel_last else image_shape[2:4]
            spatial = "x".join(str(n) for i, n in enumerate(shape) if i and i not in axes)
            there = f", a {spatial} map there" if spatial else ""
            raise UsageError(
                f"batch-norm layer '{name}' would normalise a single value per channel (batch "
                f"{shape[0]}{there}, at a {h}x{w} input): train with a batch (-b) of 2 or "
                "more, or a larger input size")


def update_group(iteration: int, iterations: int, steps: int) -> Tuple[bool, bool, int]:
    """(first, last, size) of the update `iteration` belongs to, with gradients accumulated
    over `steps` batches: groups start at the epoch's first iteration, the epoch's last group
    may be shorter."""
    start = iteration - iteration % steps
    size = min(steps, iterations - start)
    return iteration == start, iteration == start + size - 1, size


def updates_per_epoch(iterations: int, steps: int) -> int:
    """Updates of an epoch of `iterations` batches, `steps` batches each (see `update_group`):
    the same for every split of a global batch, so the run's progress (its schedule, the
    curves' x axis) is counted in them."""
    return -(-iterations // steps)


def updates_done(epoch: int, iteration: int, iterations: int, steps: int) -> int:
    """Updates done over the run before batch `iteration` of `epoch` (`iterations` batches
    an epoch, `steps` an update)."""
    return epoch * updates_per_epoch(iterations, steps) + iteration // steps


def batch_share(valid: int, num_ranks: int, update_images: int) -> float:
    """The weight of a batch's mean loss (over its `valid` images) in its rank's gradient, so
    that the gradients averaged over `num_ranks` ranks are the mean over the update's
    `update_images` real images: 1/N of N full batches; padding at the epoch's end then
    weighs nothing, whichever split of the global batch holds it."""
    return valid * num_ranks / update_images


def accumulate_gradients(graph: TrainingGraph, solver: Solver, share: float
                         ) -> Tuple[float, float]:
    """Forward and backward of the batch in the inputs, adding `share` (see `batch_share`)
    of its (scaled) gradients to the accumulated ones (NNabla adds over backward calls until
    `zero_grad`); return its loss and wrong count."""
    nn.forward_all([graph.loss, graph.error], clear_no_need_grad=True)
    graph.loss.backward(solver.loss_scale * share, clear_buffer=True)
    return float(graph.loss.d), float(graph.error.d)


def apply_update(solver: Solver, comm: Communicator, lr_per_example: float,
                 examples: int) -> bool:
    """All-reduce the accumulated gradients and step for `examples` images in all; False
    when the step was skipped (a gradient overflowed under dynamic loss scaling)."""
    comm.all_reduce_gradients(solver.parameters())
    solver.set_learning_rate(solver_learning_rate(lr_per_example, examples))
    return solver.update()


# --------------------------------------------------------------------------- the state


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
        self.window = EpochSums()

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
        data = self.data.resized(size)
        if data is not self.data:
            self.data = data
            self.graph = self.graph.resized(data.image_shape)

    def take_epoch_sums(self) -> EpochSums:
        """This rank's sums over the epoch, which start again (at the epoch's end)."""
        sums, self.sums = self.sums, EpochSums()
        return sums

    def take_window(self) -> EpochSums:
        """All ranks' sums since the last point of the curves, which start again."""
        window, self.window = self.window, EpochSums()
        return window

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
                EPOCH_SUMS: [p["sums"] for p in gathered], WINDOW_SUMS: self.window.state_dict()}
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
        self.window = EpochSums(*meta.get(WINDOW_SUMS, []))  # (absent before the curves)
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
