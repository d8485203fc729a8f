"""Learning-rate schedules of the training recipes, as pure functions of the (fractional) epoch.

Every schedule gives the learning rate *per example*, like the official configs: the solver
step size is that value times the global batch size (`solver_learning_rate`).

By default the rate is evaluated at the integer epoch, so it is constant within an epoch
(the official behaviour). With `per_iteration` the same formula is evaluated at
`epoch + iteration / iters_per_epoch`; warm-up ramps are capped at `base_lr`, a cap that
never changes the value at an integer epoch.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Tuple, Type, Union

from pydantic import BeforeValidator, Field, model_validator
from typing_extensions import Annotated, Literal, get_args

from .fields import SAVED_WHEN_SET, FilledFrom, Flag, Integer, Number, recipe, rule_error

# The arguments the two schedules share, declared once.
BaseLr = Annotated[Number, Field(gt=0, description=(
    "the learning rate per example for the momentum and nesterov solvers (0.1 / 256 for "
    "SGD's 0.1 at a batch of 256); the rate itself for adamw, lamb and lars (see solver)"))]
WarmupEpochs = Annotated[Integer, Field(ge=0, description="epochs of linear warm-up")]


@recipe
class EpochStepSchedule:
    """Linear warm-up, then `base_lr * decay_rate ** (number of decay_at epochs <= epoch)`.

    Warm-up (epoch < warmup_epochs): `base_lr * (epoch + 1) / (warmup_epochs + d)`, with
    d = 1 when `legacy_warmup` (the official step90 recipe) and 0 otherwise (capped at
    `base_lr` for fractional epochs).
    Field names and defaults are the official `EpochStepLearningRateScheduler` arguments.
    """

    base_lr: BaseLr
    decay_at: Annotated[Tuple[Annotated[Integer, Field(ge=0)], ...], Field(
        description="the epochs at which the rate is multiplied by decay_rate")] = (30, 60, 80)
    decay_rate: Annotated[Number, Field(gt=0, description="the factor of each decay")] = 0.1
    warmup_epochs: WarmupEpochs = 5
    legacy_warmup: Annotated[Flag, Field(
        description="warm up to base_lr * W / (W + 1), as the official step90")] = False

    def __call__(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            denominator = self.warmup_epochs + (1 if self.legacy_warmup else 0)
            return self.base_lr * min(1.0, (epoch + 1) / denominator)
        decays = sum(1 for boundary in self.decay_at if boundary <= epoch)
        return self.base_lr * self.decay_rate**decays


@recipe
class EpochCosineSchedule:
    """Linear warm-up `base_lr * (epoch + 1) / warmup_epochs` (capped at `base_lr`), then cosine
    decay to `min_lr` (0, officially) at `epochs`.

    Decay phase: `m + (base_lr - m) * 0.5 * (1 + cos(pi * (epoch - W) / (epochs - W)))`, with
    m = 0 the nnabla `CosineScheduler` formula (and its values, exactly); its progress is
    clamped to [0, 1] so that epochs at or past the end (possible only when
    `epochs <= warmup_epochs`) give `min_lr` instead of rising again.
    Field names and defaults are the official `EpochCosineLearningRateScheduler` arguments,
    plus our `min_lr` (timm's `min_lr`, PyTorch's `eta_min`).
    """

    base_lr: BaseLr
    epochs: Annotated[Integer, Field(ge=1, description="the epoch the decay ends at"),
                      FilledFrom("epochs")]
    warmup_epochs: WarmupEpochs = 5
    min_lr: Annotated[Number, Field(ge=0, description="the rate the decay ends at, in "
                                                      "base_lr's unit (<= base_lr)"),
                      SAVED_WHEN_SET] = 0.0

    @model_validator(mode="after")
    def _decays(self) -> EpochCosineSchedule:
        if self.min_lr > self.base_lr:
            raise rule_error(f"must be <= base_lr ({self.base_lr:g}), got {self.min_lr:g}",
                             "min_lr")
        return self

    def __call__(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return self.base_lr * min(1.0, (epoch + 1) / self.warmup_epochs)
        span = self.epochs - self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / span) if span > 0 else 1.0
        return self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (
            1.0 + math.cos(math.pi * progress))


Schedule = Union[EpochStepSchedule, EpochCosineSchedule]

PerIteration = Annotated[Flag, Field(description="evaluate the schedule at fractional epochs "
                                                 "(else once per epoch, as the official)")]
_TYPE_DESCRIPTION = "the schedule, by its official class name"
_ARGS_DESCRIPTION = "the schedule's arguments"


# The `lr_scheduler` section, one class per schedule: `type` (the official class name, so
# that official configs load) chooses the class, hence the meaning of `args`.
@recipe
class StepSchedulerConfig:
    """`lr_scheduler` of type EpochStepLearningRateScheduler."""

    args: Annotated[EpochStepSchedule, Field(description=_ARGS_DESCRIPTION)]
    per_iteration: PerIteration = False
    type: Annotated[Literal["EpochStepLearningRateScheduler"], Field(
        description=_TYPE_DESCRIPTION)] = "EpochStepLearningRateScheduler"


@recipe
class CosineSchedulerConfig:
    """`lr_scheduler` of type EpochCosineLearningRateScheduler."""

    args: Annotated[EpochCosineSchedule, Field(description=_ARGS_DESCRIPTION)]
    per_iteration: PerIteration = False
    type: Annotated[Literal["EpochCosineLearningRateScheduler"], Field(
        description=_TYPE_DESCRIPTION)] = "EpochCosineLearningRateScheduler"


# Accepted short forms of `lr_scheduler.type`.
SCHEDULE_ALIASES: Dict[str, str] = {
    "EpochStep": "EpochStepLearningRateScheduler",
    "EpochCosine": "EpochCosineLearningRateScheduler",
}


def with_official_type(section: Any) -> Any:
    """The section with a short `type` replaced by its official name."""
    if isinstance(section, dict) and isinstance(section.get("type"), str):
        return {**section, "type": SCHEDULE_ALIASES.get(section["type"], section["type"])}
    return section


# The `lr_scheduler` section: a union discriminated by `type`.
SchedulerConfig = Annotated[Union[StepSchedulerConfig, CosineSchedulerConfig],
                            Field(discriminator="type"), BeforeValidator(with_official_type)]
# `lr_scheduler.type` -> its section class.
SCHEDULE_TYPES: Dict[str, Type[Any]] = {
    section.__pydantic_fields__["type"].default: section
    for section in get_args(get_args(SchedulerConfig)[0])
}


class LearningRateSchedule:
    """Per-example learning rate at (epoch, iteration within the epoch), for the training loop."""

    def __init__(self, schedule: Schedule, iters_per_epoch: int, per_iteration: bool = False):
        if iters_per_epoch < 1:
            raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
        self.schedule = schedule
        self.iters_per_epoch = iters_per_epoch
        self.per_iteration = per_iteration

    def position(self, epoch: int, iteration: int = 0) -> float:
        """The (possibly fractional) epoch at which the schedule is sampled."""
        if not self.per_iteration:
            return float(epoch)
        return epoch + iteration / self.iters_per_epoch

    def __call__(self, epoch: int, iteration: int = 0) -> float:
        return self.schedule(self.position(epoch, iteration))


def build_schedule(config: SchedulerConfig, iters_per_epoch: int) -> LearningRateSchedule:
    """The training-loop schedule described by a config's `lr_scheduler` section."""
    return LearningRateSchedule(config.args, iters_per_epoch, config.per_iteration)


def solver_learning_rate(lr_per_example: float, global_batch: int) -> float:
    """Solver step size for gradients *averaged* over the global batch.

    Our training loop takes the batch-mean loss on each worker, backpropagates it times the
    loss scale S, all-reduces the gradients with division by the number of workers n, and
    divides them by S: the solver sees the mean gradient g over the global batch
    B = n * batch_per_worker, and steps with `lr_per_example * B`, plus weight decay `wd`.

    The official example sums the scaled gradients over workers (S * n * g), gives the solver
    `lr_per_example * batch_per_worker / S` and weight decay `wd * S * n`. Its velocity
    increment `lr_per_example * batch_per_worker / S * (S * n * g + wd * S * n * w)` equals
    ours, `lr_per_example * B * (g + wd * w)`: both give the identical update.
    """
    return lr_per_example * global_batch
