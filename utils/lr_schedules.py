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
from dataclasses import dataclass
from typing import Dict, Tuple, Type, Union


@dataclass(frozen=True)
class EpochStepSchedule:
    """Linear warm-up, then `base_lr * decay_rate ** (number of decay_at epochs <= epoch)`.

    Warm-up (epoch < warmup_epochs): `base_lr * (epoch + 1) / (warmup_epochs + d)`, with
    d = 1 when `legacy_warmup` (the official step90 recipe) and 0 otherwise (capped at
    `base_lr` for fractional epochs).
    Field names and defaults are the official `EpochStepLearningRateScheduler` arguments.
    """

    base_lr: float
    decay_at: Tuple[int, ...] = (30, 60, 80)
    decay_rate: float = 0.1
    warmup_epochs: int = 5
    legacy_warmup: bool = False

    def __call__(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            denominator = self.warmup_epochs + (1 if self.legacy_warmup else 0)
            return self.base_lr * min(1.0, (epoch + 1) / denominator)
        decays = sum(1 for boundary in self.decay_at if boundary <= epoch)
        return self.base_lr * self.decay_rate**decays


@dataclass(frozen=True)
class EpochCosineSchedule:
    """Linear warm-up `base_lr * (epoch + 1) / warmup_epochs` (capped at `base_lr`), then cosine
    decay to 0 at `epochs`.

    Decay phase: `base_lr * 0.5 * (1 + cos(pi * (epoch - W) / (epochs - W)))`, the nnabla
    `CosineScheduler` formula; its progress is clamped to [0, 1] so that epochs at or past
    the end (possible only when `epochs <= warmup_epochs`) give 0 instead of rising again.
    Field names and defaults are the official `EpochCosineLearningRateScheduler` arguments.
    """

    base_lr: float
    epochs: int
    warmup_epochs: int = 5

    def __call__(self, epoch: float) -> float:
        if epoch < self.warmup_epochs:
            return self.base_lr * min(1.0, (epoch + 1) / self.warmup_epochs)
        span = self.epochs - self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / span) if span > 0 else 1.0
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


Schedule = Union[EpochStepSchedule, EpochCosineSchedule]

# Config `lr_scheduler.type` -> schedule. Keys are the official class names (so official
# configs load); the short forms are accepted aliases.
SCHEDULE_TYPES: Dict[str, Type[Schedule]] = {
    "EpochStepLearningRateScheduler": EpochStepSchedule,
    "EpochCosineLearningRateScheduler": EpochCosineSchedule,
}
SCHEDULE_ALIASES: Dict[str, str] = {
    "EpochStep": "EpochStepLearningRateScheduler",
    "EpochCosine": "EpochCosineLearningRateScheduler",
}


def schedule_type_name(schedule: Schedule) -> str:
    """The official `lr_scheduler.type` name of a schedule (what a saved config holds)."""
    for name, cls in SCHEDULE_TYPES.items():
        if isinstance(schedule, cls):
            return name
    raise TypeError(f"not a learning-rate schedule: {schedule!r}")


@dataclass(frozen=True)
class SchedulerConfig:
    """The `lr_scheduler` section of a training config.

    `args` is the schedule itself (its fields are the YAML `args`); `per_iteration` selects
    sampling at fractional epochs instead of once per epoch.
    """

    args: Schedule
    per_iteration: bool = False

    @property
    def type(self) -> str:
        return schedule_type_name(self.args)


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
