"""For the tests that run train.py: its command line on the demo set, and the comparison of
two runs that must have ended the same (an interrupted and resumed run against an
uninterrupted one)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from paths import DEMO

from utils.outputs.monitor import read_series, timer_path
from utils.outputs.tensorboard import tensorboard_folder
from utils.train.checkpoint import checkpoint_dir, list_checkpoints, load_checkpoint
from utils.weights.files import read_parameters

SERIES = ("Train-loss", "Train-error", "Validation-loss", "Validation-error",
          "Validation-top5-error")


def train_command(monitor: Path, config: Path, train_list: object, val_list: Path,
                  *extra: object, arch: str = "mobilenet_v3_small", classes: int = 2,
                  batch: int = 8, train_dir: Path = DEMO / "train") -> List[str]:
    """train.py's arguments for a run on the demo photographs at 32x32, one DALI thread;
    `extra` last, so that it overrides."""
    args = ["-a", arch, "--num-classes", classes, "--spatial-size", 32, "-b", batch,
            "-C", config, "-T", train_dir, "--train-list", train_list, "-V", DEMO / "val",
            "--val-list", val_list, "--dali-num-threads", 1, "-m", monitor, *extra]
    return [str(a) for a in args]


def checkpoint_names(monitor: Path) -> List[str]:
    """The run's checkpoint files, newest first."""
    return [os.path.basename(p) for p in list_checkpoints(checkpoint_dir(str(monitor)))]


def accumulator(monitor: Path):
    """The run's TensorBoard event files (all its sessions), loaded whole."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(tensorboard_folder(str(monitor)),
                              size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalars(monitor: Path) -> Dict[str, List[Tuple[int, float]]]:
    """Tag -> (step, value) of every scalar the run wrote to TensorBoard."""
    events = accumulator(monitor)
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def param_files(monitor: Path) -> List[str]:
    return sorted(p.name for p in monitor.glob("param_*.h5"))


def assert_same_run(expected: Path, actual: Path, series: Sequence[str] = SERIES,
                    weight_files: Optional[Sequence[str]] = None,
                    checkpoint: bool = True) -> None:
    """Identical series and epoch timer indices, weight files (all of `expected`'s unless
    named) and, with `checkpoint`, the same newest checkpoint (parameters, solver state,
    extras and data position)."""
    for name in series:
        assert (actual / f"{name}.series.txt").read_text() == \
            (expected / f"{name}.series.txt").read_text(), name
    timer = [[row[0] for row in read_series(timer_path(str(run), "Epoch-time"))]
             for run in (expected, actual)]
    assert timer[1] == timer[0]
    if weight_files is None:
        assert param_files(actual) == param_files(expected)
    for name in weight_files or param_files(expected):
        a, b = read_parameters(str(expected / name)), read_parameters(str(actual / name))
        assert list(a) == list(b)
        for key in a:
            np.testing.assert_array_equal(b[key].data, a[key].data, err_msg=f"{name} {key}")
    if not checkpoint:
        return
    assert checkpoint_names(actual) == checkpoint_names(expected)
    newest = checkpoint_names(expected)[0]
    a = load_checkpoint(str(expected / "checkpoints" / newest))
    b = load_checkpoint(str(actual / "checkpoints" / newest))
    for part in ("params", "solver", "extra"):
        x, y = getattr(a, part), getattr(b, part)
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(y[key], x[key], err_msg=f"{part} {key}")
    assert b.meta["train_data"] == a.meta["train_data"]
