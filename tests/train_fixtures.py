"""The demo data, recipes and helpers of the tests that run train.py (test_train.py,
test_resume.py): two classes of demo photographs, bag (0) and trouser (1), 90 training images
(with batch 8 the 12th batch has 6 padded slots) and 24 validation images, at 32x32."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from data_fixtures import write_list
from eval_fixtures import run_script
from paths import DEMO, HANG_GUARD, REPO
from run_fixtures import assert_same_run, train_command

from utils.outputs.monitor import read_series, series_path
from utils.process.pause_point import PAUSE_ENV
from utils.train.run import PREEMPTED_EXIT_STATUS

CLASSES = ("bag", "trouser")
TRAIN_IMAGES_PER_CLASS = 45  # 90 images: 12 batches of 8, the last with 2 real samples
BATCH = 8
ITERATIONS = 12
EPOCHS = 3
PREEMPTED = PREEMPTED_EXIT_STATUS
TIMEOUT = HANG_GUARD

CONFIG = """\
weight_decay: 5.0e-05
momentum: 0.9
epochs: {epochs}
label_smoothing: 0.1
loss_scaling: 128
mixup: {mixup}
lr_scheduler:
  type: EpochCosineLearningRateScheduler
  args:
    base_lr: {base_lr}
    warmup_epochs: 0
    epochs:
  per_iteration: true
"""


@dataclass(frozen=True)
class Setup:
    folder: Path
    train_list: Path  # 90 images, 2 classes
    small_list: Path  # 48 images, 2 classes (resnet18)
    three_list: Path  # 24 images, 3 classes (fine-tuning to another class count)
    val_list: Path  # 24 images, 2 classes
    plain: Path  # config: no mixup
    mixup: Path  # config: mixup 0.2
    frozen: Path  # config: a learning rate too small to change any float32 weight


def demo_class_ids() -> Dict[str, int]:
    """Class ids of the demo set (sorted folder names, as create_input_files.py numbers them)."""
    return {name: i for i, name in enumerate(sorted(os.listdir(DEMO / "train")))}


def class_images(name: str, count: int) -> List[str]:
    return [f"{name}/{f}" for f in sorted(os.listdir(DEMO / "train" / name))[:count]]


def make_setup(folder: Path) -> Setup:
    """The lists and recipes in `folder`."""
    train_rows = [(p, c) for c, name in enumerate(CLASSES)
                  for p in class_images(name, TRAIN_IMAGES_PER_CLASS)]
    small_rows = [(p, c) for c, name in enumerate(CLASSES) for p in class_images(name, 24)]
    three_rows = [(p, c) for c, name in enumerate(("bag", "sneaker", "trouser"))
                  for p in class_images(name, 8)]
    ids = [demo_class_ids()[name] for name in CLASSES]
    truth = [int(v) for v in (DEMO / "val_ground_truth.txt").read_text().split()]
    val_rows = [(f"ILSVRC2012_val_{i:08d}.JPEG", ids.index(t))
                for i, t in enumerate(truth, start=1) if t in ids][:24]
    configs = {}
    for name, base_lr, mixup in (("plain", 0.0005, 0), ("mixup", 0.0005, 0.2),
                                 ("frozen", 1e-20, 0)):
        configs[name] = folder / f"{name}.yaml"
        configs[name].write_text(CONFIG.format(epochs=EPOCHS, mixup=mixup, base_lr=base_lr))
    lists = {name: Path(write_list(str(folder / f"{name}_label"), rows)) for name, rows in
             (("train", train_rows), ("small", small_rows), ("three", three_rows),
              ("val", val_rows))}
    return Setup(folder, lists["train"], lists["small"], lists["three"], lists["val"],
                 **configs)


def train_args(setup: Setup, monitor: Path, *extra: object, arch: str = "mobilenet_v3_small",
               config: Optional[Path] = None, train_list: Optional[Path] = None,
               epochs: int = EPOCHS, classes: int = 2) -> List[str]:
    """A complete train.py command line (after the script) for the demo subset."""
    return train_command(monitor, config or setup.plain, train_list or setup.train_list,
                         setup.val_list, "-e", epochs, "-v", 1, "-s", 2,
                         "--keep-checkpoints", 2, *extra, arch=arch, classes=classes,
                         batch=BATCH)


def run_train(*args: str, mpi_ranks: int = 0) -> subprocess.CompletedProcess:
    return run_script("train.py", *args, mpi_ranks=mpi_ranks)


def start_train(args: Sequence[str], log: Path, pause: str = "") -> subprocess.Popen:
    """train.py in the background, its stderr (log and progress bars) going to `log`;
    `pause`: a point where it waits for a stop signal or a kill (utils/process/pause_point.py)."""
    with open(log, "w") as err:
        return subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "MPLBACKEND": "Agg", PAUSE_ENV: pause})


def wait_for(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"train.py ended ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def epoch_bar_shown(log: Path, epoch: int):
    """Whether the progress bar of `epoch` has started (tqdm draws it at 0 % first)."""
    pattern = re.compile(rf"epoch {epoch}: +0%")
    return lambda: bool(pattern.search(log.read_text(errors="replace")))


def paused_at(log: Path, point: str):
    """Whether train.py has reached the pause `point` (and waits there)."""
    return lambda: f"test pause: {point}" in log.read_text(errors="replace")


def values(monitor: Path, name: str) -> List[float]:
    return [v for _, v in read_series(series_path(str(monitor), name))]


def indices(monitor: Path, name: str) -> List[int]:
    return [i for i, _ in read_series(series_path(str(monitor), name))]


def assert_resumes_exactly(args: Sequence[str], checkpoint: Path, reference: Path,
                           monitor: Path) -> None:
    """Running the command again resumes from `checkpoint` and ends as `reference` did."""
    result = run_train(*args)
    assert result.returncode == 0, result.stderr
    assert f"resuming from {checkpoint}" in result.stderr
    assert_same_run(reference, monitor)
