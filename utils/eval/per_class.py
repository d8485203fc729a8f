"""Which classes fail: per-class tallies of an evaluation, as a csv, a confusion-matrix picture
and the worst classes.

`ClassCounts` adds up, per true class, the top-1 predictions (a confusion matrix) and the
top-5 hits of every counted image (padding excluded), then sums them over ranks, so that each
image counts exactly once, as for the totals.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Sequence

import numpy as np

from ..labels.file_list import write_csv
from ..process.atomic import atomic_path

CONFUSION_LIMIT = 100  # classes: a larger confusion matrix is not drawn
WORST = 10
LABEL_CHARS = 24  # of a class name on the confusion matrix's axes


def top_classes(scores: np.ndarray, k: int) -> np.ndarray:
    """(B, min(k, K)) the classes of the highest scores of each row, best first (ties: the
    lower class id first, as argmax)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, :min(k, scores.shape[1])]


@dataclass
class ClassCounts:
    """Per-class counts over an evaluation."""

    confusion: np.ndarray  # (K, K): [true class, top-1 prediction] image counts
    top5_hits: np.ndarray  # (K,): images of each class with their class among the top 5

    @classmethod
    def empty(cls, num_classes: int) -> ClassCounts:
        return cls(np.zeros((num_classes, num_classes), np.int64),
                   np.zeros(num_classes, np.int64))

    def add(self, scores: np.ndarray, batch: Any) -> None:
        """One batch's scores (B, K); `batch.labels` (B, 1) and `batch.mask` (B, 1) (0:
        padding) are its truth."""
        keep = batch.mask[:, 0] > 0
        top = top_classes(scores[keep], 5)
        labels = batch.labels[keep, 0].astype(np.int64)
        np.add.at(self.confusion, (labels, top[:, 0]), 1)
        np.add.at(self.top5_hits, labels[(top == labels[:, None]).any(axis=1)], 1)

    def all_reduce(self, comm: Any) -> None:
        """Sum over ranks (in place)."""
        flat = np.concatenate([self.confusion.ravel(), self.top5_hits]).astype(np.float64)
        total = np.rint(np.asarray(comm.all_reduce_sum(flat))).astype(np.int64)
        self.confusion = total[:self.confusion.size].reshape(self.confusion.shape)
        self.top5_hits = total[self.confusion.size:]

    @property
    def images(self) -> np.ndarray:
        return self.confusion.sum(axis=1)

    def rows(self, names: Sequence[Optional[str]]) -> List[Dict[str, Any]]:
        """One record per class that has images: id, name, images, top-1 and top-5 error, and
        the class its images are most often taken for (None: never wrong)."""
        rows = []
        for c in np.nonzero(self.images)[0]:
            wrong = self.confusion[c].copy()
            wrong[c] = 0
            confused = int(wrong.argmax()) if wrong.any() else None
            rows.append({
                "class": int(c), "name": names[c], "images": int(self.images[c]),
                "top1_error": 1 - self.confusion[c, c] / self.images[c],
                "top5_error": 1 - self.top5_hits[c] / self.images[c],
                "confused_with": confused,
                "confused_with_name": None if confused is None else names[confused]})
        return rows

    def worst(self, names: Sequence[Optional[str]], count: int = WORST
              ) -> List[Dict[str, Any]]:
        """The `count` classes of highest top-1 error (ties: more images first)."""
        return sorted(self.rows(names), key=lambda r: (-r["top1_error"], -r["images"],
                                                       r["class"]))[:count]


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
