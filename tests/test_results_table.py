"""validation.py --table (utils/outputs/results_table.py): several models over several
validation sets in one CSV and Markdown table, resumable cell by cell (issue 33, item 4)."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from eval_fixtures import DEMO, REPO, make_weight_file, run_script
from fault_fixtures import Process, paused

from utils.eval.evaluation import EvaluationResult
from utils.outputs.results_table import Cell, ModelSize, markdown_path, read_results_table
from utils.process.errors import UsageError

CLASSES = sorted(os.listdir(DEMO / "train"))


def class_tree(root, first: int, per_class: int) -> str:
    """A class-folder set of demo training images (symbolic links), `per_class` a class."""
    for name in CLASSES:
        os.makedirs(root / name)
        for image in sorted(os.listdir(DEMO / "train" / name))[first:first + per_class]:
            os.symlink(DEMO / "train" / name / image, root / name / image)
    return str(root)


def labels_file(path) -> str:
    path.write_text("".join(f"{i},{name}\n" for i, name in enumerate(CLASSES)))
    return str(path)


def test_the_table_keeps_finished_cells_and_lists_the_missing(tmp_path):
    path = str(tmp_path / "t.csv")
    table = read_results_table(path, ["a.h5", "b.h5"], ["v1", "v2"])
    assert table.missing() == [("a.h5", "v1"), ("a.h5", "v2"), ("b.h5", "v1"), ("b.h5", "v2")]
    table.add("a.h5", "v2", Cell.of(EvaluationResult(0.5, 0.25, 0.125, 10, 2.0)),
              ModelSize(1_500_000, 4_000_000))
    with open(path, "w") as f:
        f.write(table.csv_text())
    again = read_results_table(path, ["a.h5", "b.h5"], ["v1", "v2"])
    assert again.missing() == [("a.h5", "v1"), ("b.h5", "v1"), ("b.h5", "v2")]
    assert again.rows()[0] == ["a.h5", "1.50", "0.004", "", "", "", "", "25.00", "12.50", "",
                               "5.0"]
    assert "| a.h5 | 1.50 | 0.004 | - | - | - | - | 25.00 | 12.50 | - | 5.0 |" in \
        again.markdown_text()
    assert markdown_path(path) == str(tmp_path / "t.md")
    (tmp_path / "other.csv").write_text("arch,size\n")
    with pytest.raises(UsageError, match="not a results table of validation.py"):
        read_results_table(str(tmp_path / "other.csv"), ["a.h5"], ["v1"])


@pytest.mark.slow  # (validation.py over 2 x 2 cells, killed once, then 2 more cells)
def test_a_2x2_table_in_one_command_killed_halfway_measures_only_the_missing_cells(tmp_path):
    models = [str(make_weight_file(tmp_path / f"m{i}.h5", "resnet18", seed=i)) for i in (1, 2)]
    sets = [class_tree(tmp_path / "s1", 0, 2), class_tree(tmp_path / "s2", 2, 2)]
    table = tmp_path / "results.csv"
    command = [sys.executable, str(REPO / "validation.py"), *models, "-a", "resnet18",
               "--num-classes", "10", "--spatial-size", "32", "-V", *sets, "--labels",
               labels_file(tmp_path / "labels.csv"), "-b", "10", "--no-progress", "-M",
               str(tmp_path / "M"), "--table", str(table)]
    # killed once the first cell is in the table (it waits there: utils/process/pause_point.py)
    first = Process(command[1:], tmp_path, "first", pause="table cell written")
    first.wait_for(paused("table cell written"))
    first.kill()
    rows = list(csv.DictReader(table.open()))
    kept = {(r["model"], s): r[f"{s}:images_per_s"] for r in rows for s in sets
            if r[f"{s}:top1_error"]}
    assert list(kept) == [(models[0], sets[0])]  # the first cell, and only it

    rerun = subprocess.run(command, cwd=REPO, env={**os.environ, "MPLBACKEND": "Agg"},
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(kept)} of 4 cells measured earlier, {4 - len(kept)} to measure" in \
        rerun.stderr
    measured = [line.split("[nnabla][INFO]: ", 1)[1] for line in rerun.stderr.splitlines()
                if "[nnabla][INFO]: cell " in line]
    assert len(measured) == 4 - len(kept)
    assert not any(f": {m} on {s}" in line for m, s in kept for line in measured)
    rows = list(csv.DictReader(table.open()))
    assert [r["model"] for r in rows] == models
    assert rows[0]["parameters_M"] == rows[1]["parameters_M"] and \
        float(rows[0]["parameters_M"]) > 10 and float(rows[0]["GMACs"]) > 0
    for r in rows:
        for s in sets:
            assert 0 <= float(r[f"{s}:top1_error"]) <= 100
            assert float(r[f"{s}:top5_error"]) <= float(r[f"{s}:top1_error"])
            assert float(r[f"{s}:images_per_s"]) > 0 and r[f"{s}:real_top1_error"] == ""
    for (model, s), rate in kept.items():  # (not measured again: the killed run's values)
        assert next(r for r in rows if r["model"] == model)[f"{s}:images_per_s"] == rate
    markdown = (tmp_path / "results.md").read_text().splitlines()
    assert len(markdown) == 4  # (only the ReaL columns empty: no --real-labels)
    assert all(line.count(" - ") == 2 for line in markdown[2:])
    assert (tmp_path / "M" / "m1.h5" / "s2" / "per_class.csv").exists()

    alone = run_script("validation.py", *models, "-a", "resnet18", "-V", sets[0])
    assert alone.returncode == 2 and "several WEIGHTS or -V folders make a table" in \
        alone.stderr
