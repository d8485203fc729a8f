"""Monitor files in NNabla's formats, so `nnabla_cli plot_series` and our plots read them.

`<Name>.series.txt` holds one `<index> <value>` line per epoch and `<Name>.timer.txt` the
lines of NNabla's `MonitorTimeElapsed` added once per epoch: `<index> <training seconds of
the epoch> 1 <their sum over the run's epochs>` (not the wall time between two adds, which
the official's are: docs/differences.md says why). Lines are appended and
flushed as they come; a resumed run first drops the lines after the epoch it resumes from,
so an interrupted and resumed run leaves the same series as an uninterrupted one.

The series names are the official ones, `<run part>-<quantity>`: `Train-loss`,
`Validation-error` (top-1), `Validation-EMA-top5-error`, ...; they are spelled here only.
`Train-loss-iteration` and `Train-error-iteration` (ours) are the curves within the epoch:
one line every few iterations, indexed by the iterations done over the whole run, each the
mean over all ranks of the iterations since the line before.
Our own writer rather than `nnabla.monitor.MonitorSeries`: that one averages over an interval
and cannot drop the lines a resumed run is about to write again.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from ..labels.file_list import open_text
from ..process.atomic import LOCK_NAME, atomic_write_text
from ..process.errors import DataError, OutputError

TRAIN = "Train"
VALIDATION = "Validation"
VALIDATION_EMA = "Validation-EMA"  # the weight EMA's validation (train.py --ema-decay)
VALIDATION_REAL = "Validation-ReaL"  # validation.py --real-labels: ImageNet-ReaL's errors
# Each quantity's name in the series names (top-1 error keeps the official "error").
QUANTITIES = {"loss": "loss", "top1_error": "error", "top5_error": "top5-error"}
EPOCH_TIME = "Epoch-time"  # a timer file, as the official
ITERATION_TIME = "Iteration-time"  # a series: seconds per iteration of each epoch (ours)
PER_ITERATION = "-iteration"  # suffix of the series within the epoch, by iterations done


def iteration_series_name(quantity: str) -> str:
    """`Train-loss-iteration` for "loss"."""
    return series_name(TRAIN, quantity) + PER_ITERATION


def series_name(part: str, quantity: str) -> str:
    """`Validation-error` for (VALIDATION, "top1_error")."""
    return f"{part}-{QUANTITIES[quantity]}"


def training_run_mark(folder: str) -> Optional[str]:
    """A file that shows `folder` holds a training run (train.py's lock, arguments,
    checkpoints or training series), or None."""
    marks = (LOCK_NAME, "Arguments.txt", "checkpoints", f"{TRAIN}-loss.series.txt")
    return next((os.path.join(folder, m) for m in marks
                 if os.path.exists(os.path.join(folder, m))), None)


def refuse_training_run(folder: str, flag: str) -> None:
    """Fresh series written into a training run's folder would replace its Validation
    history with one line: refuse, naming what shows the run."""
    mark = training_run_mark(folder)
    if mark is not None:
        raise OutputError(f"{folder} ({flag}) holds a training run ({mark}): its Validation "
                          f"series would be replaced; give another folder, e.g. "
                          f"{flag} {os.path.join(folder, 'validation')}")


def series_path(directory: str, name: str) -> str:
    return os.path.join(directory, f"{name}.series.txt")


def timer_path(directory: str, name: str) -> str:
    return os.path.join(directory, f"{name}.timer.txt")


def _rows(path: str) -> List[Tuple[int, float, str]]:
    """(index, value, line) of each whole line; a torn last line (a crash while appending)
    is left out, any other line that does not parse is a DataError naming it."""
    rows = []
    with open_text(path, "series file") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                break
            parts = line.split()
            try:
                rows.append((int(parts[0]), float(parts[1]), line))
            except (IndexError, ValueError):
                raise DataError(f"{path}:{number}: expected '<index> <value>', got "
                                f"{line.strip()!r}") from None
    return rows


def read_series(path: str) -> List[Tuple[int, float]]:
    """(index, value) pairs of a series or timer file."""
    return [(i, v) for i, v, _ in _rows(path)] if os.path.exists(path) else []


def truncate_series(path: str, last_index: int) -> None:
    """Keep only the whole lines with index <= last_index (used when resuming)."""
    if os.path.exists(path):
        atomic_write_text(path, "".join(line for i, _, line in _rows(path) if i <= last_index))


class MonitorFile:
    """Appends lines to one monitor file (rank 0's sink holds them: see `utils.outputs.sink`)."""

    def __init__(self, path: str):
        self.path = path

    def _append(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_after(self, last_index: int) -> None:
        truncate_series(self.path, last_index)


class MonitorSeries(MonitorFile):
    def __init__(self, directory: str, name: str):
        super().__init__(series_path(directory, name))

    def add(self, index: int, value: float) -> None:
        self._append(f"{index} {value:.6g}")


class MonitorTimer(MonitorFile):
    """`MonitorTimeElapsed` lines with one `add` per epoch; the running total goes on from
    the kept lines when a resumed run truncates the file."""

    def __init__(self, directory: str, name: str):
        super().__init__(timer_path(directory, name))
        self.total = 0.0

    def truncate_after(self, last_index: int) -> None:
        super().truncate_after(last_index)
        if os.path.exists(self.path):
            with open(self.path) as f:
                lines = f.read().split()
            self.total = float(lines[-1]) if lines else 0.0

    def add(self, index: int, seconds: float) -> None:
        """One epoch of `seconds`."""
        self.total += seconds
        self._append(f"{index} {seconds:.6g} 1 {self.total:.6g}")


class TrainingMonitors:
    """The training series of a run, per epoch and within the epoch; the validation ones are
    written by `utils.outputs.sink.record_evaluation`. `start_step`: the updates done at the
    start (those of the resumed checkpoint)."""

    def __init__(self, path: str, start_epoch: int, start_step: int = 0):
        self.loss = MonitorSeries(path, series_name(TRAIN, "loss"))
        self.error = MonitorSeries(path, series_name(TRAIN, "top1_error"))
        self.epoch_time = MonitorTimer(path, EPOCH_TIME)
        self.iteration_time = MonitorSeries(path, ITERATION_TIME)
        self.iteration_loss = MonitorSeries(path, iteration_series_name("loss"))
        self.iteration_error = MonitorSeries(path, iteration_series_name("top1_error"))
        for m in (self.iteration_loss, self.iteration_error):
            m.truncate_after(start_step)
        # Drop what an interrupted run wrote after the checkpoint resumed from (all of it when
        # starting afresh): training series are indexed by epoch (0..), validation series by
        # epochs done (1..).
        for m in (self.loss, self.error, self.epoch_time, self.iteration_time):
            m.truncate_after(start_epoch - 1)
        for part in (VALIDATION, VALIDATION_EMA):
            for quantity in QUANTITIES:
                truncate_series(series_path(path, series_name(part, quantity)), start_epoch)

    def add(self, epoch: int, loss: float, error: float, seconds: float, iterations: int) -> None:
        self.loss.add(epoch, loss)
        self.error.add(epoch, error)
        self.epoch_time.add(epoch, seconds)
        self.iteration_time.add(epoch, seconds / iterations)

    def add_iteration(self, step: int, loss: float, error: float) -> None:
        """A point of the curves within the epoch, after `step` iterations in all."""
        self.iteration_loss.add(step, loss)
        self.iteration_error.add(step, error)
