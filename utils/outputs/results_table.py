"""validation.py --table: one table of several models over several validation sets, kept as
each cell is measured, so that a run stopped halfway and started again measures only the
cells still missing.

A row per model (its parameters and GMACs), for each set its top-1 and top-5 error, ReaL
top-1 error (when --real-labels was given) and images/s. The CSV is the record the rerun
reads back; the Markdown table beside it (same name, .md) is for reading.
"""
from __future__ import annotations

import csv
import io
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..eval.evaluation import EvaluationResult
from ..process.errors import UsageError

MODEL_COLUMNS = ("model", "parameters_M", "GMACs")
SET_MEASURES = ("top1_error", "top5_error", "real_top1_error", "images_per_s")


@dataclass(frozen=True)
class Cell:
    """One model on one set: what is shown of its evaluation."""

    top1_error: float
    top5_error: float
    real_top1_error: Optional[float]
    images_per_s: float

    @classmethod
    def of(cls, result: EvaluationResult) -> Cell:
        return cls(result.top1_error, result.top5_error,
                   None if result.real is None else result.real.top1_error,
                   result.images_per_second)

    def values(self) -> List[str]:
        percent = [None if v is None else f"{100 * v:.2f}"
                   for v in (self.top1_error, self.top5_error, self.real_top1_error)]
        return ["" if v is None else v for v in percent] + [f"{self.images_per_s:.1f}"]


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    macs_per_image: int


def model_size(arch: str, num_classes: int, spatial_size: Tuple[int, int]) -> ModelSize:
    """Trainable parameters and MACs per image of `arch`, counted as benchmark.py counts
    them, on a network of its own (the loaded weights are left alone)."""
    import nnabla as nn

    from models import build_network

    from ..weights.stats import model_stats

    with nn.parameter_scope("", OrderedDict()):
        logits, _ = build_network(nn.Variable((1, 3) + tuple(spatial_size)), num_classes, arch,
                                  test=True)
        stats = model_stats(logits)
    return ModelSize(stats.parameters, stats.macs_per_image)


def set_column(set_name: str, measure: str) -> str:
    return f"{set_name}:{measure}"


@dataclass
class ResultsTable:
    """The cells measured so far, by (model, set), and each model's size."""

    models: Sequence[str]
    sets: Sequence[str]
    cells: Dict[Tuple[str, str], List[str]]
    sizes: Dict[str, List[str]]

    def missing(self) -> List[Tuple[str, str]]:
        """The (model, set) cells still to measure, in row order."""
        return [(m, s) for m in self.models for s in self.sets if (m, s) not in self.cells]

    def add(self, model: str, set_name: str, cell: Cell, size: Optional[ModelSize]) -> None:
        """A measured cell; `size` None: not known (an NNP file)."""
        self.cells[(model, set_name)] = cell.values()
        self.sizes[model] = ["", ""] if size is None else [
            f"{size.parameters / 1e6:.2f}", f"{size.macs_per_image / 1e9:.3f}"]

    def header(self) -> List[str]:
        return list(MODEL_COLUMNS) + [set_column(s, m) for s in self.sets for m in SET_MEASURES]

    def rows(self) -> List[List[str]]:
        return [[model] + self.sizes.get(model, ["", ""])
                + [v for s in self.sets for v in self.cells.get((model, s),
                                                                [""] * len(SET_MEASURES))]
                for model in self.models]

    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.header())
        writer.writerows(self.rows())
        return out.getvalue()

    def markdown_text(self) -> str:
        """Errors in %, a missing cell as '-'."""
        titles = {"top1_error": "top-1 %", "top5_error": "top-5 %",
                  "real_top1_error": "ReaL top-1 %", "images_per_s": "img/s"}
        header = ["model", "params M", "GMACs"] + [f"{s} {titles[m]}" for s in self.sets
                                                   for m in SET_MEASURES]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows():
            lines.append("| " + " | ".join(v if v != "" else "-" for v in row) + " |")
        return "\n".join(lines) + "\n"


def markdown_path(csv_path: str) -> str:
    return os.path.splitext(csv_path)[0] + ".md"


def read_results_table(path: str, models: Sequence[str], sets: Sequence[str]) -> ResultsTable:
    """The table of `models` x `sets`, with the cells an earlier run of the same table wrote
    to `path` (none when there is no file); a file of another table is refused."""
    table = ResultsTable(list(models), list(sets), {}, {})
    if not os.path.exists(path):
        return table
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--table {path}: cannot read it: {e}") from None
    if not rows or rows[0][:len(MODEL_COLUMNS)] != list(MODEL_COLUMNS):
        raise UsageError(f"--table {path}: not a results table of validation.py; name a new "
                         "file")
    header = rows[0]
    for row in rows[1:]:
        model = row[0]
        if model not in models:
            continue
        values = dict(zip(header, row))
        for set_name in sets:
            cell = [values.get(set_column(set_name, m), "") for m in SET_MEASURES]
            if cell[0] != "":
                table.cells[(model, set_name)] = cell
                table.sizes[model] = [values.get("parameters_M", ""), values.get("GMACs", "")]
    return table
