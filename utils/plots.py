"""PNG training curves from a monitor folder: loss, top-1 and top-5 error against epochs.

Reads the `<Name>.series.txt` files train.py and validation.py write (one `<epoch> <value>`
line each) and draws the training and validation series of each quantity on one chart, like
the curves of the README. Headless (matplotlib's Agg canvas, no display or pyplot state), so
train.py can redraw them after every epoch; each PNG is replaced atomically.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .atomic import atomic_path
from .monitor import read_series, series_path


@dataclass(frozen=True)
class Chart:
    file_name: str
    ylabel: str
    series: Tuple[Tuple[str, str], ...]  # (series name, legend label)


CHARTS: Tuple[Chart, ...] = (
    Chart("loss.png", "loss", (("Train-loss", "training"), ("Validation-loss", "validation"))),
    Chart("error.png", "top-1 error",
          (("Train-error", "training"), ("Validation-error", "validation"))),
    Chart("top5-error.png", "top-5 error",
          (("Train-top5-error", "training"), ("Validation-top5-error", "validation"))),
)


def _save_png(figure, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png", dpi=100)


def plot_chart(chart: Chart, directory: str, out_dir: str, title: str) -> Optional[str]:
    """Draw one chart from the series present in `directory`; None if none is."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    curves = [(label, read_series(series_path(directory, name))) for name, label in chart.series]
    curves = [(label, rows) for label, rows in curves if rows]
    if not curves:
        return None
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    for label, rows in curves:
        epochs, values = zip(*rows)
        axes.plot(epochs, values, marker="o" if len(rows) < 30 else None, markersize=3,
                  label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel(chart.ylabel)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = os.path.join(out_dir, chart.file_name)
    _save_png(figure, path)
    return path


def plot_monitor(directory: str, out_dir: Optional[str] = None,
                 charts: Sequence[Chart] = CHARTS) -> List[str]:
    """Write the charts whose series exist in monitor folder `directory` (PNG paths back)."""
    out_dir = directory if out_dir is None else out_dir
    os.makedirs(out_dir, exist_ok=True)
    title = os.path.basename(os.path.normpath(os.path.abspath(directory)))
    written = [plot_chart(chart, directory, out_dir, title) for chart in charts]
    return [path for path in written if path is not None]
