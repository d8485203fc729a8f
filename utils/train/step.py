"""The training step: the batch the network is fed (shape, layout the back end runs), the
training graph of a `TrainingNetwork` with its targets, loss and error count, the seeds of its
random functions, and the gradient accumulation and update of each global batch. train.py's
run and benchmark.py's measurement build their steps from these, so their rules are one."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import nnabla as nn
import numpy as np

from models import NORMALIZATIONS, build_network

from ..eval.losses import (
    binary_cross_entropy,
    distillation_divergence,
    smoothed_cross_entropy,
    top_n_error_count,
    weighted_mean,
)
from ..process.comm import Communicator
from ..process.errors import UsageError
from ..recipe.config import TrainConfig
from ..recipe.schedules import solver_learning_rate
from ..recipe.solvers import Solver
from .mixing import MIXUP_SEED, BatchMixing


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


def renormalisation(student_norm: str, teacher_norm: str, channels: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per input channel taking an image normalised with `student_norm` to
    the same image normalised with `teacher_norm` (keys of NORMALIZATIONS): x * std_s +
    mean_s is the pixel, (pixel - mean_t) / std_t the teacher's input. A 4th (zero) channel
    of half precision stays as it is."""
    (mean_s, std_s), (mean_t, std_t) = NORMALIZATIONS[student_norm], NORMALIZATIONS[teacher_norm]
    scale, shift = np.ones(channels), np.zeros(channels)
    scale[:3] = np.divide(std_s, std_t)
    shift[:3] = (np.subtract(mean_s, mean_t)) / np.asarray(std_t)
    return scale, shift


@dataclass(frozen=True)
class Teacher:
    """A distillation teacher: `arch` run in test mode on the student's batch renormalised
    from `student_norm` to its own `norm`. Its parameters live in `params`, a parameter scope
    of their own: no solver, EMA, checkpoint or weight file of the student sees them."""

    arch: str
    norm: str
    student_norm: str = "default"
    params: Dict[str, Any] = field(default_factory=OrderedDict, compare=False, repr=False)

    def logits(self, inputs: nn.Variable, num_classes: int, channel_last: bool) -> nn.Variable:
        """The teacher's logits of the student's `inputs` (constant: no gradient flows)."""
        channel_axis = inputs.ndim - 1 if channel_last else 1
        scale, shift = renormalisation(self.student_norm, self.norm, inputs.shape[channel_axis])
        x = inputs
        if not (np.all(scale == 1) and np.all(shift == 0)):
            shape = [1] * inputs.ndim
            shape[channel_axis] = -1
            x = inputs * nn.Variable.from_numpy_array(scale.reshape(shape)) \
                + nn.Variable.from_numpy_array(shift.reshape(shape))
        # no_grad: the teacher's graph needs no gradient (NNabla's way to run a fixed
        # pre-trained network into a trained one; its buffers are freed in the forward pass).
        with nn.parameter_scope("teacher", self.params), nn.no_grad():
            logits, _ = build_network(x, num_classes, self.arch, test=True,
                                      channel_last=channel_last)
            for parameter in nn.get_parameters(grad_only=False).values():
                parameter.need_grad = False
        return logits


@dataclass(frozen=True)
class TrainingNetwork:
    """The training network apart from its input size (progressive resizing rebuilds it at
    another): `arch` with the recipe's loss, label smoothing, mixup, CutMix and stochastic
    depth, and distilled from `teacher` if any; `rank` seeds this rank's mixing stream; loss
    and error are computed in `float_ctx` (None: the current)."""

    arch: str
    num_classes: int
    channel_last: bool
    config: TrainConfig
    rank: int = 0
    float_ctx: Any = None
    teacher: Optional[Teacher] = None


def per_example_loss(logits: nn.Variable, target: nn.Variable, config: TrainConfig,
                     teacher_logits: Optional[nn.Variable] = None) -> nn.Variable:
    """The recipe's training loss per example (B, 1) against `target` (labels or mixed
    targets): cross-entropy or BCE, and with a teacher Hinton et al.'s
    (1 - α) · loss + α · T² · KL(teacher_T || student_T)."""
    if config.loss == "bce":
        loss = binary_cross_entropy(logits, target, config.label_smoothing,
                                    config.bce_target_threshold)
    else:
        loss = smoothed_cross_entropy(logits, target, config.label_smoothing)
    if teacher_logits is None:
        return loss
    alpha = config.distillation_alpha
    soft = distillation_divergence(logits, teacher_logits, config.distillation_temperature)
    return (1 - alpha) * loss + alpha * soft


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
                              channel_last=channel_last, drop_path_rate=config.drop_path_rate)
    logits.persistent = True
    teacher_logits = None
    if network.teacher is not None:  # (after the student: its initialisation is unchanged)
        teacher_logits = network.teacher.logits(inputs, network.num_classes, channel_last)
    with nn.context_scope(network.float_ctx or nn.get_current_context()):
        loss = weighted_mean(per_example_loss(logits, target, config, teacher_logits), mask)
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
