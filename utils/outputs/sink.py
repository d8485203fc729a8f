"""The one place where train.py's and validation.py's results become files: series files,
TensorBoard, weight files, `Arguments.txt` and the recipe's copy, PNG curves, the per-class
csv, the confusion matrix and the batch grids, and the log and summary lines.

Rank 0 writes through an `OutputSink`; every other rank gets a `NoOutputs`, which takes the
same calls and writes nothing, so "rank 0 only" is decided once, by `output_sink`. The values
given are those of all ranks together (the callers reduce them first).

Training steps are updates done over the whole run: a point after k updates is at step k, an
epoch's results at the step that ends it, so TensorBoard shows every curve on one axis.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from typing import IO, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import yaml

from ..eval.evaluation import EvaluationResult
from ..eval.per_class import ClassCounts
from ..process.atomic import (
    atomic_write_text,
    check_can_create,
    check_room,
    check_subfolders,
    check_writable,
    lock_folder,
    remove_stale_temporaries,
)
from ..recipe.config import TrainConfig, save_config
from ..weights.files import write_parameters
from .batch_grid import TRAIN_BATCH_PNG, VAL_BATCH_PNG, Grid, save_png
from .class_report import confusion_figure, plot_confusion, write_per_class
from .monitor import (
    QUANTITIES,
    VALIDATION,
    VALIDATION_EMA,
    VALIDATION_REAL,
    MonitorSeries,
    TrainingMonitors,
    refuse_training_run,
    series_name,
)
from .plots import plot_monitor
from .results_table import ResultsTable, markdown_path
from .tensorboard import FOLDER as TENSORBOARD_FOLDER
from .tensorboard import TensorBoard, figure_pixels, flatten, open_tensorboard

CONFIG_FOLDER = "cfg"  # the recipe's copy, where the official example writes it
POINTS_PER_EPOCH = 100  # of the curves within the epoch, by default
# TensorBoard tags of the validation parts' quantities: validation/top1_error, ...
PART_TAGS = {VALIDATION: "validation", VALIDATION_EMA: "validation_ema"}


# Every file an evaluation (`OutputSink.evaluation`) may write into its folder.
EVALUATION_FILES = (
    *(f"{series_name(VALIDATION, q)}.series.txt" for q in QUANTITIES),
    *(f"{series_name(VALIDATION_REAL, q)}.series.txt" for q in ("top1_error", "top5_error")),
    "per_class.csv", "confusion.png", VAL_BATCH_PNG)


def default_interval(updates_per_epoch: int) -> int:
    """Updates between points: about POINTS_PER_EPOCH points per epoch."""
    return max(1, round(updates_per_epoch / POINTS_PER_EPOCH))


def validation_tags(part: str) -> Dict[str, str]:
    """Quantity -> TensorBoard tag of a validation part."""
    return {q: f"{PART_TAGS[part]}/{q}" for q in QUANTITIES}


def metric_tags(validating: bool, ema: bool) -> list:
    """The scalars TensorBoard's HParams view shows against the flags: the validation's."""
    parts = ([VALIDATION] + ([VALIDATION_EMA] if ema else [])) if validating else []
    return [tag for part in parts for tag in validation_tags(part).values()]


def describe_flags(flags: Mapping[str, Any]) -> str:
    """Sorted key=value lines of the flags (Arguments.txt)."""
    return "".join(f"{k}={v}\n" for k, v in sorted(flags.items()))


@dataclass(frozen=True)
class IterationPoint:
    """The curves within the epoch after `step` updates: means over all ranks of the
    batches since the point before."""

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
    step: int  # updates done at its end
    loss: float
    error: float
    seconds: float
    iterations: int
    lr: float
    loss_scale: Optional[float] = None  # with dynamic loss scaling
    skipped: Optional[int] = None


class OutputSink:
    """Rank 0's outputs into `folder` (see the module's docstring). `log` prints a line once
    per job."""

    def __init__(self, folder: str, log: Callable[[str], None]):
        self.folder, self.log = folder, log
        self.monitors: Optional[TrainingMonitors] = None
        self.board: Optional[TensorBoard] = None
        self._lock: Optional[IO[str]] = None
        self._earlier_evaluation: List[str] = []  # found by claim_for_evaluation

    # ------------------------------------------------------------------ the folder

    def claim_for_training(self, checkpoints: str) -> None:
        """Fail now if the folder cannot be written, not after the first epoch; lock it for
        the run; clear what a kill -9 left."""
        check_writable(self.folder, "monitor path")
        check_subfolders(self.folder, [os.path.relpath(checkpoints, self.folder),
                                       TENSORBOARD_FOLDER, CONFIG_FOLDER], "monitor path")
        self._lock = lock_folder(self.folder, "monitor path")
        for folder in (self.folder, checkpoints):
            for path in remove_stale_temporaries(folder):
                self.log(f"removed {path}, left by an interrupted write")

    def claim_for_evaluation(self, flag: str) -> None:
        """Fail now, not after the evaluation, if results could not be written to the folder
        or would replace a training run's Validation history; create nothing yet. What an
        earlier evaluation wrote there is removed when this one's results are written (not
        now: an evaluation that fails first leaves it), so that none of it (a ReaL series, a
        confusion.png this one does not make) stands beside them as if it were theirs."""
        check_can_create(self.folder, f"monitor path ({flag})")
        refuse_training_run(self.folder, flag)
        self._earlier_evaluation = [os.path.join(self.folder, name) for name in EVALUATION_FILES
                                    if os.path.isfile(os.path.join(self.folder, name))]

    def check_room(self, largest_file: int, total: int) -> None:
        check_room(self.folder, largest_file=largest_file, total=total, what="monitor path")

    # ------------------------------------------------------------------ a training run

    def run_description(self, flags: Mapping[str, Any], config: TrainConfig,
                        config_name: str) -> None:
        """Arguments.txt and the effective recipe as cfg/<its file name>, where the official
        example writes them."""
        atomic_write_text(os.path.join(self.folder, "Arguments.txt"), describe_flags(flags))
        save_config(config, os.path.join(self.folder, CONFIG_FOLDER, config_name))

    def start_session(self, start_epoch: int, start_step: int, resumed: bool,
                      tensorboard: bool) -> None:
        """The series from `start_epoch` / `start_step` on (what an interrupted run wrote after
        its checkpoint is dropped), and TensorBoard's writer unless `tensorboard` is off."""
        self.monitors = TrainingMonitors(self.folder, start_epoch, start_step)
        self.board = open_tensorboard(self.folder, tensorboard, start_step, resumed)

    def session(self, step: int, flags: Mapping[str, Any], config: Mapping[str, Any],
                tags: Iterable[str]) -> None:
        """A session's flags and recipe as text, and both as hyper-parameters (recipe keys as
        `config.<key>.<key>`) against the metrics `tags`."""
        if self.board is not None:
            self.board.text("run/arguments", _code(describe_flags(flags)), step)
            self.board.text("run/config", _code(yaml.safe_dump(dict(config), sort_keys=False)),
                            step)
            self.board.hparams({**flatten(flags), **flatten(config, "config.")}, tags, step)

    def batch(self, grid: Grid, step: int) -> None:
        """train_batch.png, the grid of a batch as fed to the network, and its image."""
        save_png(grid.image, os.path.join(self.folder, TRAIN_BATCH_PNG))
        if self.board is not None:
            self.board.image(os.path.splitext(TRAIN_BATCH_PNG)[0], grid.image, step)

    def iteration(self, point: IterationPoint) -> None:
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
        self.monitors.add(result.epoch, result.loss, result.error, result.seconds,
                          result.iterations)
        if self.board is not None:
            values = {"epoch/train_loss": result.loss, "epoch/train_error": result.error,
                      "epoch/seconds": result.seconds}
            if result.skipped is not None:
                values["epoch/skipped_steps"] = result.skipped
            self.board.scalars(result.step, values)
        self.log(epoch_line(result))

    def validation(self, result: EvaluationResult, epochs_done: int, step: int,
                   part: str = VALIDATION, counts: Optional[ClassCounts] = None,
                   names: Sequence[Optional[str]] = ()) -> None:
        """A validation after `epochs_done` epochs (`step` updates): its series, scalars,
        the confusion matrix (with `counts`, up to 100 classes) and its log line."""
        self._series(result, epochs_done, part)
        if self.board is not None:
            tags = validation_tags(part)
            self.board.scalars(step, {tags[q]: getattr(result, q) for q in QUANTITIES})
            figure = confusion_figure(counts, names) if counts is not None else None
            if figure is not None:
                self.board.image(f"{PART_TAGS[part]}/confusion", figure_pixels(figure), step)
            self.board.flush()
        self.log(validation_line(result, epochs_done, part))

    def weight_file(self, name: str, parameters: Mapping[str, Any]) -> None:
        """`name` (param_NNN.h5, param_ema_NNN.h5) with `parameters`."""
        write_parameters(os.path.join(self.folder, name), parameters)

    def end_of_epoch(self) -> None:
        """The PNG curves of the run so far; TensorBoard's events on disk."""
        plot_monitor(self.folder)
        if self.board is not None:
            self.board.flush()

    def finished(self, step: int) -> None:
        if self.board is not None:
            self.board.finished(step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()

    # ------------------------------------------------------------------ an evaluation

    def evaluation(self, result: EvaluationResult, summary: str, counts: ClassCounts,
                   names: Sequence[Optional[str]], first_batch: Grid) -> None:
        """validation.py's results: the summary on stdout first (a folder that fails now
        loses nothing), then the series (this evaluation's only), per_class.csv,
        confusion.png and val_batch.png."""
        self.summary(summary)
        if self._earlier_evaluation:
            for path in self._earlier_evaluation:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            self.log(f"removed what an earlier evaluation wrote into {self.folder}: "
                     + ", ".join(os.path.basename(p) for p in self._earlier_evaluation))
        os.makedirs(self.folder, exist_ok=True)
        self._series(result, 0, VALIDATION, fresh=True)
        write_per_class(counts, names, self.folder)
        plot_confusion(counts, names, self.folder)
        save_png(first_batch.image, os.path.join(self.folder, VAL_BATCH_PNG))

    def results_table(self, path: str, table: ResultsTable) -> None:
        """validation.py --table: the table so far, CSV at `path` and Markdown beside it,
        each rewritten atomically after every cell."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        atomic_write_text(path, table.csv_text())
        atomic_write_text(markdown_path(path), table.markdown_text())

    def summary(self, text: str) -> None:
        """A result line (or JSON) on stdout."""
        print(text, flush=True)

    def warn(self, text: str) -> None:
        print(text, file=sys.stderr)

    def _series(self, result: EvaluationResult, index: int, part: str,
                fresh: bool = False) -> None:
        record_evaluation(result, self.folder, index, part, fresh)


class NoOutputs(OutputSink):
    """The sink of ranks other than 0: takes every call, writes nothing, logs nothing (the
    log prints on rank 0 alone)."""

    def claim_for_training(self, checkpoints: str) -> None:
        pass

    def claim_for_evaluation(self, flag: str) -> None:
        pass

    def results_table(self, path: str, table: ResultsTable) -> None:
        pass

    def check_room(self, largest_file: int, total: int) -> None:
        pass

    def run_description(self, flags: Mapping[str, Any], config: TrainConfig,
                        config_name: str) -> None:
        pass

    def start_session(self, start_epoch: int, start_step: int, resumed: bool,
                      tensorboard: bool) -> None:
        pass

    def session(self, step: int, flags: Mapping[str, Any], config: Mapping[str, Any],
                tags: Iterable[str]) -> None:
        pass

    def batch(self, grid: Grid, step: int) -> None:
        pass

    def iteration(self, point: IterationPoint) -> None:
        pass

    def epoch(self, result: EpochResult) -> None:
        pass

    def validation(self, result: EvaluationResult, epochs_done: int, step: int,
                   part: str = VALIDATION, counts: Optional[ClassCounts] = None,
                   names: Sequence[Optional[str]] = ()) -> None:
        pass

    def weight_file(self, name: str, parameters: Mapping[str, Any]) -> None:
        pass

    def end_of_epoch(self) -> None:
        pass

    def finished(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass

    def evaluation(self, result: EvaluationResult, summary: str, counts: ClassCounts,
                   names: Sequence[Optional[str]], first_batch: Grid) -> None:
        pass

    def summary(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        pass


def output_sink(folder: str, rank: int, log: Callable[[str], None]) -> OutputSink:
    """Rank 0's sink into `folder`, or on any other rank one that writes nothing."""
    return (OutputSink if rank == 0 else NoOutputs)(folder, log)


def epoch_line(result: EpochResult) -> str:
    overflow = ""
    if result.loss_scale is not None:
        overflow = (f"; {result.skipped} overflow step(s) skipped, loss scale now "
                    f"{result.loss_scale:g}")
    return (f"epoch {result.epoch}: train loss {result.loss:.4f}, error {result.error:.4f}, "
            f"lr {result.lr:.6g} ({result.seconds:.1f} s){overflow}")


def validation_line(result: EvaluationResult, epochs_done: int, part: str) -> str:
    if part == VALIDATION:
        return (f"epoch {epochs_done - 1}: validation loss {result.loss:.4f}, top-1 error "
                f"{result.top1_error:.4f}, top-5 error {result.top5_error:.4f}")
    return f"epoch {epochs_done - 1}: EMA weights: validation top-1 error {result.top1_error:.4f}"


def record_evaluation(result: EvaluationResult, directory: str, index: int,
                      part: str = VALIDATION, fresh: bool = False) -> None:
    """Append loss, top-1 and top-5 error (and ReaL's two errors, when given) at `index` to
    the monitor series in `directory` (`fresh`: to emptied series, this run's only)."""
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
