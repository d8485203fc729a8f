"""Which classes fail: per-class tallies of an evaluation and the worst classes (their csv
and confusion-matrix picture are written by `utils.outputs.class_report`).

`ClassCounts` adds up, per true class, the top-1 predictions (a confusion matrix) and the
top-5 hits of every counted image (padding excluded), then sums them over ranks, so that each
image counts exactly once, as for the totals.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

CONFUSION_LIMIT = 100  # classes: a larger confusion matrix is not drawn
WORST = 10


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
