"""The one place where a training event (a point of the curves within the epoch, an epoch's
result, a validation, the batch fed) becomes every output: the series files, TensorBoard,
the PNGs and the log line. The sinks do not know each other; rank 0 writes files, every rank
may log (the runtime's log prints on rank 0).

Steps are iterations done over the whole run: a point after k iterations is at step k, an
epoch's results at the step that ends it, so TensorBoard shows every curve on one axis.
The values written to TensorBoard are those of the series files (all ranks together).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

import yaml

from ..eval.evaluation import EvaluationResult
from ..eval.per_class import ClassCounts, confusion_figure
from .batch_grid import TRAIN_BATCH_PNG, Grid, save_png
from .monitor import (
    QUANTITIES,
    VALIDATION,
    VALIDATION_EMA,
    VALIDATION_REAL,
    MonitorSeries,
    TrainingMonitors,
    series_name,
)
from .tensorboard import TensorBoard, figure_pixels, flatten

POINTS_PER_EPOCH = 100  # of the curves within the epoch, by default
# TensorBoard tags of the validation parts' quantities: validation/top1_error, ...
PART_TAGS = {VALIDATION: "validation", VALIDATION_EMA: "validation_ema"}


def default_interval(iterations_per_epoch: int) -> int:
    """Iterations between points: about POINTS_PER_EPOCH points per epoch."""
    return max(1, round(iterations_per_epoch / POINTS_PER_EPOCH))


def validation_tags(part: str) -> Dict[str, str]:
    """Quantity -> TensorBoard tag of a validation part."""
    return {q: f"{PART_TAGS[part]}/{q}" for q in QUANTITIES}


@dataclass(frozen=True)
class IterationPoint:
    """The curves within the epoch after `step` iterations: means over all ranks of the
    iterations since the point before."""

    step: int
    loss: float
    error: float
    lr: float  # per example
    images_per_second: float  # of all ranks, in this session
    loss_scale: Optional[float] = None  # with dynamic loss scaling
    skipped: Optional[int] = None  # steps skipped on overflow since the point before


@dataclass(frozen=True)
class EpochResult:
    """An epoch's training result over all ranks."""

    epoch: int
    step: int  # iterations done at its end
    loss: float
    error: float
    seconds: float
    iterations: int
    lr: float
    loss_scale: Optional[float] = None  # with dynamic loss scaling
    skipped: Optional[int] = None


class RunRecorder:
    """Every output of a training run's events (see the module's docstring)."""

    def __init__(self, monitor_path: str, is_main: bool, monitors: TrainingMonitors,
                 board: Optional[TensorBoard], log: Callable[[str], None]):
        self.monitor_path, self.is_main = monitor_path, is_main
        self.monitors, self.board, self.log = monitors, board, log

    def session(self, step: int, arguments: str, flags: Mapping[str, Any],
                config: Mapping[str, Any], metric_tags: Iterable[str]) -> None:
        """A session starts at `step`: its flags (`arguments`: as Arguments.txt) and config as
        text, and both as hyper-parameters (config keys as `config.<key>.<key>`)."""
        if self.board is not None:
            self.board.text("run/arguments", _code(arguments), step)
            self.board.text("run/config", _code(yaml.safe_dump(dict(config), sort_keys=False)),
                            step)
            self.board.hparams({**flatten(flags), **flatten(config, "config.")}, metric_tags,
                               step)

    def batch(self, grid: Grid, step: int, file_name: str = TRAIN_BATCH_PNG) -> None:
        """The grid of a batch as fed to the network: `<monitor>/<file_name>` and an image."""
        if not self.is_main:
            return
        save_png(grid.image, os.path.join(self.monitor_path, file_name))
        if self.board is not None:
            self.board.image(os.path.splitext(file_name)[0], grid.image, step)

    def iteration(self, point: IterationPoint) -> None:
        if not self.is_main:
            return
        self.monitors.add_iteration(point.step, point.loss, point.error)
        if self.board is not None:
            values = {"train/loss": point.loss, "train/error": point.error,
                      "train/learning_rate": point.lr}
            if math.isfinite(point.images_per_second):
                values["train/images_per_second"] = point.images_per_second
            if point.loss_scale is not None:
                values.update({"train/loss_scale": point.loss_scale,
                               "train/skipped_steps": point.skipped})
            self.board.scalars(point.step, values)

    def epoch(self, result: EpochResult) -> None:
        if self.is_main:
            self.monitors.add(result.epoch, result.loss, result.error, result.seconds,
                              result.iterations)
        if self.board is not None:
            values = {"epoch/train_loss": result.loss, "epoch/train_error": result.error,
                      "epoch/seconds": result.seconds}
            if result.skipped is not None:
                values["epoch/skipped_steps"] = result.skipped
            self.board.scalars(result.step, values)
        overflow = ""
        if result.loss_scale is not None:
            overflow = (f"; {result.skipped} overflow step(s) skipped, loss scale now "
                        f"{result.loss_scale:g}")
        self.log(f"epoch {result.epoch}: train loss {result.loss:.4f}, error "
                 f"{result.error:.4f}, lr {result.lr:.6g} ({result.seconds:.1f} s){overflow}")

    def validation(self, result: EvaluationResult, done: int, step: int, part: str = VALIDATION,
                   counts: Optional[ClassCounts] = None,
                   names: Sequence[Optional[str]] = ()) -> None:
        """A validation after `done` epochs (`step` iterations): its series, scalars, the
        confusion matrix (with `counts`, up to 100 classes) and its log line."""
        record_evaluation(result, self.monitor_path, done, part=part, enabled=self.is_main)
        if self.board is not None:
            tags = validation_tags(part)
            self.board.scalars(step, {tags[q]: getattr(result, q) for q in QUANTITIES})
            figure = confusion_figure(counts, names) if counts is not None else None
            if figure is not None:
                self.board.image(f"{PART_TAGS[part]}/confusion", figure_pixels(figure), step)
            self.board.flush()
        if part == VALIDATION:
            self.log(f"epoch {done - 1}: validation loss {result.loss:.4f}, top-1 error "
                     f"{result.top1_error:.4f}, top-5 error {result.top5_error:.4f}")
        else:
            self.log(f"epoch {done - 1}: EMA weights: validation top-1 error "
                     f"{result.top1_error:.4f}")

    def flush(self) -> None:
        if self.board is not None:
            self.board.flush()

    def finished(self, step: int) -> None:
        if self.board is not None:
            self.board.finished(step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


def record_evaluation(result: EvaluationResult, directory: str, index: int, part: str = VALIDATION,
           enabled: bool = True, fresh: bool = False) -> None:
    """Append loss, top-1 and top-5 error (and ReaL's two errors, when given) at `index` to
    the monitor series in `directory` (`fresh`: to emptied series, this run's only)."""
    if not enabled:
        return
    os.makedirs(directory, exist_ok=True)
    values = [(part, quantity, getattr(result, quantity)) for quantity in QUANTITIES]
    if result.real is not None:
        values += [(VALIDATION_REAL, q, getattr(result.real, q))
                   for q in ("top1_error", "top5_error")]
    for series_part, quantity, value in values:
        series = MonitorSeries(directory, series_name(series_part, quantity))
        if fresh:
            series.truncate_after(-1)
        series.add(index, value)


def _code(text: str) -> str:
    """`text` as a Markdown code block (TensorBoard's text view renders Markdown)."""
    return "".join(f"    {line}\n" for line in text.splitlines())
