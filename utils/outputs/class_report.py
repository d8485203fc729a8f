"""The per-class report of an evaluation as files: `per_class.csv` and the confusion matrix
(`confusion.png`, and the figure TensorBoard shows)."""
from __future__ import annotations

import functools
import os
from typing import Any, FrozenSet, Optional, Sequence

import numpy as np

from ..eval.per_class import CONFUSION_LIMIT, ClassCounts
from ..labels.file_list import write_csv
from ..process.atomic import atomic_path

LABEL_CHARS = 24  # of a class name on the confusion matrix's axes


def write_per_class(counts: ClassCounts, names: Sequence[Optional[str]], folder: str) -> str:
    """`per_class.csv` in `folder` (written atomically); returns its path."""
    path = os.path.join(folder, "per_class.csv")
    header = ["class", "name", "images", "top1_error", "top5_error", "most_frequent_wrong_class",
              "its_name"]
    write_csv(path, [header] + [
        [r["class"], r["name"] or "", r["images"], f"{r['top1_error']:.6g}",
         f"{r['top5_error']:.6g}", "" if r["confused_with"] is None else r["confused_with"],
         r["confused_with_name"] or ""] for r in counts.rows(names)])
    return path


@functools.lru_cache(maxsize=1)
def _glyphs() -> FrozenSet[int]:
    """The characters matplotlib's default font can draw."""
    from matplotlib import font_manager, ft2font

    path = font_manager.findfont(font_manager.FontProperties())
    return frozenset(ft2font.FT2Font(path).get_charmap())


def drawable(text: str) -> bool:
    """Whether every character of `text` has a glyph in matplotlib's default font: a class
    name in another script would be drawn as empty boxes, with a warning per character; its
    id is drawn instead."""
    return all(ord(char) in _glyphs() for char in text if not char.isspace())


def confusion_figure(counts: ClassCounts, names: Sequence[Optional[str]]) -> Any:
    """The confusion matrix of the classes with images as a matplotlib Figure (rows: true
    class, columns: top-1 prediction, each row as fractions), labelled with their names;
    None above CONFUSION_LIMIT classes."""
    shown = np.nonzero(counts.images)[0]
    if len(shown) > CONFUSION_LIMIT:
        return None
    from matplotlib.figure import Figure

    matrix = counts.confusion[np.ix_(shown, shown)].astype(np.float64)
    matrix /= counts.images[shown][:, None]
    # ImageNet's names list synonyms ("tench, Tinca tinca"): the first, cut, fits the margin.
    labels = [names[c].split(",")[0][:LABEL_CHARS] if names[c] and drawable(names[c])
              else str(c) for c in shown]
    side = max(4.0, 0.25 * len(shown) + 2.5)
    figure = Figure(figsize=(side + 1, side))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(shown)), labels, rotation=90, fontsize=7)
    axes.set_yticks(range(len(shown)), labels, fontsize=7)
    axes.set_xlabel("predicted (top-1)")
    axes.set_ylabel("true class")
    figure.colorbar(image, ax=axes, label="fraction of the class's images")
    figure.tight_layout()
    return figure


def plot_confusion(counts: ClassCounts, names: Sequence[Optional[str]], folder: str
                   ) -> Optional[str]:
    """`confusion.png` of `confusion_figure`; None above CONFUSION_LIMIT classes."""
    figure = confusion_figure(counts, names)
    if figure is None:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = os.path.join(folder, "confusion.png")
    with atomic_path(path, ".png") as tmp:
        FigureCanvasAgg(figure).print_png(tmp)
    return path
