"""PNG training curves from monitor folders: loss, top-1 and top-5 error against epochs, and
the training loss and error within the epoch against iterations.

Reads the `<Name>.series.txt` files train.py and validation.py write (one `<epoch> <value>`
line each, `<iterations> <value>` for the `Train-*-iteration` series) and draws the training
and validation series of each quantity on one chart (and the weight EMA's validation, when
recorded). Several runs go on the same charts to compare
them: a colour per run, a line style per series. Headless (matplotlib's Agg canvas, no
display or pyplot state), so train.py can redraw them after every epoch; each PNG is replaced
atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

from ..process.atomic import atomic_path
from .monitor import (
    TRAIN,
    VALIDATION,
    VALIDATION_EMA,
    iteration_series_name,
    read_series,
    series_name,
    series_path,
)


@dataclass(frozen=True)
class Chart:
    file_name: str
    ylabel: str
    series: Tuple[Tuple[str, str], ...]  # (series name, legend label)
    xlabel: str = "epoch"


def _chart(file_name: str, ylabel: str, quantity: str) -> Chart:
    return Chart(file_name, ylabel, ((series_name(TRAIN, quantity), "training"),
                                     (series_name(VALIDATION, quantity), "validation"),
                                     (series_name(VALIDATION_EMA, quantity), "validation (EMA)")))


CHARTS: Tuple[Chart, ...] = (
    _chart("loss.png", "loss", "loss"),
    _chart("error.png", "top-1 error", "top1_error"),
    _chart("top5-error.png", "top-5 error", "top5_error"),
    Chart("loss-iteration.png", "loss", ((iteration_series_name("loss"), "training"),),
          "iterations"),
    Chart("error-iteration.png", "top-1 error",
          ((iteration_series_name("top1_error"), "training"),), "iterations"),
)
LINE_STYLES = ("--", "-", ":")  # training, validation, EMA validation, for several runs


@dataclass(frozen=True)
class Line:
    label: str
    epochs: Tuple[float, ...]
    values: Tuple[float, ...]
    color: Optional[str]  # None: matplotlib's cycle (one run)
    style: str


def run_names(directories: Sequence[str]) -> List[str]:
    """Legend names: each folder's own name, or its whole path where two names clash."""
    names = [os.path.basename(os.path.abspath(d)) for d in directories]
    return [n if names.count(n) == 1 else os.path.normpath(d) for n, d in zip(names, directories)]


def chart_lines(chart: Chart, directories: Sequence[str]) -> List[Line]:
    """The lines of `chart` for the runs in `directories`, from the series they hold."""
    several = len(directories) > 1
    lines = []
    for run, (name, directory) in enumerate(zip(run_names(directories), directories)):
        for kind, (series, label) in enumerate(chart.series):
            rows = read_series(series_path(directory, series))
            if rows:
                epochs, values = zip(*rows)
                lines.append(Line(f"{name}: {label}" if several else label, epochs, values,
                                  f"C{run}" if several else None,
                                  LINE_STYLES[kind] if several else "-"))
    return lines


def _save_png(figure, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def plot_chart(chart: Chart, directories: Sequence[str], out_dir: str,
               title: str) -> Optional[str]:
    """Draw one chart from the series present in `directories` into its PNG; None if none
    is."""
    figure = draw_chart(chart, directories, title)
    if figure is None:
        return None
    path = os.path.join(out_dir, chart.file_name)
    _save_png(figure, path)
    return path


def draw_chart(chart: Chart, directories: Sequence[str], title: str) -> Optional[Any]:
    """The matplotlib Figure of one chart (None: no series), apart from its saving so that
    what is drawn can be read back."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    lines = chart_lines(chart, directories)
    if not lines:
        return None
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    for line in lines:
        axes.plot(line.epochs, line.values, marker="o" if len(line.epochs) < 30 else None,
                  markersize=3, label=line.label, color=line.color, linestyle=line.style)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(chart.xlabel)
    axes.set_ylabel(chart.ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small" if len(lines) > 4 else None)
    figure.tight_layout()
    return figure


def plot_runs(directories: Sequence[str], out_dir: str,
              charts: Sequence[Chart] = CHARTS) -> List[str]:
    """Write the charts whose series exist in any of the monitor folders (PNG paths back)."""
    os.makedirs(out_dir, exist_ok=True)
    title = run_names(directories)[0] if len(directories) == 1 else "runs compared"
    written = [plot_chart(chart, directories, out_dir, title) for chart in charts]
    return [path for path in written if path is not None]


def plot_monitor(directory: str, out_dir: Optional[str] = None,
                 charts: Sequence[Chart] = CHARTS) -> List[str]:
    """One run's charts, written into its monitor folder unless `out_dir` is given."""
    return plot_runs([directory], directory if out_dir is None else out_dir, charts)
