"""Watching a run: TensorBoard event files read back with TensorBoard's own reader and its
server, the curves within the epoch, and the batch grids checked against what the network
was fed.

The runs use 40 demo photographs of two classes (bag, trouser) at 32x32 with batch 8: 5
iterations an epoch, a point of the curves every 2 iterations, so that one point's window
spans the end of epoch 0 and the start of epoch 1 (its first half comes from the checkpoint
when the run resumes there).
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from chart_checks import assert_curves_drawn
from data_fixtures import host_images, load_images, make_batches
from eval_fixtures import run_script
from paths import DEMO, REPO
from PIL import Image
from run_fixtures import accumulator, scalars
from tensorboard_server import tensorboard

from utils.labels.file_list import read_file_list
from utils.outputs.batch_grid import (
    TRAIN_BATCH_PNG,
    VAL_BATCH_PNG,
    Grid,
    captions,
    draw_grid,
    to_pixels,
)
from utils.outputs.monitor import read_series, series_path
from utils.outputs.sink import default_interval
from utils.outputs.tensorboard import TensorBoard, flatten, open_tensorboard
from utils.recipe.config import load_config
from utils.train.mixing import MIXUP_SEED, BatchMixing
from utils.train.run import training_class_names
from utils.train.spec import DataSources

BATCH, SIZE, INTERVAL, ITERATIONS = 8, 32, 2, 5
CONFIG = """\
weight_decay: 5.0e-05
momentum: 0.9
epochs: 2
label_smoothing: 0.1
loss_scaling: 128
mixup: 0
cutmix: {cutmix}
lr_scheduler:
  type: EpochCosineLearningRateScheduler
  args:
    base_lr: 0.0005
    warmup_epochs: 0
    epochs:
  per_iteration: true
"""
# Each scalar tag of the run below -> the series file holding the same values (None: none),
# and whether it is written per point (True) or per epoch (False).
SCALARS: Dict[str, Tuple[object, bool]] = {
    "train/loss": ("Train-loss-iteration", True),
    "train/error": ("Train-error-iteration", True),
    "train/learning_rate": (None, True),
    "train/images_per_second": (None, True),
    "train/loss_scale": (None, True),
    "train/skipped_steps": (None, True),
    "epoch/train_loss": ("Train-loss", False),
    "epoch/train_error": ("Train-error", False),
    "epoch/seconds": (None, False),
    "epoch/skipped_steps": (None, False),
    "validation/loss": ("Validation-loss", False),
    "validation/top1_error": ("Validation-error", False),
    "validation/top5_error": ("Validation-top5-error", False),
    "validation_ema/loss": ("Validation-EMA-loss", False),
    "validation_ema/top1_error": ("Validation-EMA-error", False),
    "validation_ema/top5_error": ("Validation-EMA-top5-error", False),
}
EPOCH_SERIES_OFFSET = {"Train-loss": 1, "Train-error": 1}  # indexed by epoch, not epochs done


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("watching")
    rows = [f"{name}/{f} {c}\n" for c, name in enumerate(("bag", "trouser"))
            for f in sorted(os.listdir(DEMO / "train" / name))[:20]]
    (folder / "train_label").write_text("".join(rows))
    (folder / "label_words.csv").write_text("0,bag\n1,trouser\n")
    for name, cutmix in (("plain", 0), ("cutmix", 1.0)):
        (folder / f"{name}.yaml").write_text(CONFIG.format(cutmix=cutmix))
    return folder


def watched_run_args(inputs: Path, monitor: Path, *extra: object, config: str = "plain",
                     epochs: int = 2) -> List[str]:
    """train.py's arguments for this module's runs: validated on the training images, a
    point of the curves every INTERVAL iterations."""
    return [str(a) for a in (
        "-a", "mobilenet_v3_small", "-b", BATCH, "--spatial-size", SIZE,
        "-C", inputs / f"{config}.yaml", "-e", epochs, "-T", DEMO / "train",
        "--train-list", inputs / "train_label", "-V", DEMO / "train",
        "--val-list", inputs / "train_label", "-m", monitor, "--num-classes", 2, "-v", 1,
        "--dali-num-threads", 1, "--log-interval", INTERVAL, *extra)]


def train(*args: str) -> subprocess.CompletedProcess:
    result = run_script("train.py", *args)
    assert result.returncode == 0, result.stderr
    return result


def expected_steps(per_point: bool, epochs: int) -> List[int]:
    total = epochs * ITERATIONS
    return list(range(INTERVAL, total + 1, INTERVAL)) if per_point else \
        list(range(ITERATIONS, total + 1, ITERATIONS))


def assert_curves(monitor: Path, epochs: int) -> Dict[str, List[Tuple[int, float]]]:
    """Every tag, at exactly the expected steps (none repeated or missing), equal to the
    series files where both exist."""
    found = scalars(monitor)
    assert sorted(found) == sorted(SCALARS)
    for tag, (series, per_point) in SCALARS.items():
        steps = [s for s, _ in found[tag]]
        assert steps == expected_steps(per_point, epochs), tag
        if series is None:
            continue
        rows = read_series(series_path(str(monitor), series))
        offset = EPOCH_SERIES_OFFSET.get(series, 0)
        scale = 1 if per_point else ITERATIONS
        assert [(i + offset) * scale for i, _ in rows] == steps, tag
        np.testing.assert_allclose([v for _, v in found[tag]], [v for _, v in rows],
                                   rtol=1e-5, atol=1e-7, err_msg=tag)
    return found


@pytest.fixture(scope="module")
def runs(inputs: Path) -> Dict[str, Path]:
    """An uninterrupted 2-epoch run; the same run killed while writing its last checkpoint
    (its epoch-2 checkpoint removed: its events up to the end were written) and run again,
    which resumes after epoch 1."""
    extra = ("--dynamic-loss-scaling", "--ema-decay", "0.9")
    reference = inputs / "runs" / "reference"
    train(*watched_run_args(inputs, reference, *extra))
    resumed = inputs / "runs" / "resumed"
    shutil.copytree(reference, resumed)
    (resumed / "checkpoints" / "checkpoint_e0002_i0000000.npz").unlink()
    result = train(*watched_run_args(inputs, resumed, *extra))
    assert "resuming from" in result.stderr and "checkpoint_e0001_i0000000" in result.stderr
    return {"reference": reference, "resumed": resumed, "extra": extra}


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_curves(inputs, runs):
    reference = assert_curves(runs["reference"], epochs=2)
    resumed = assert_curves(runs["resumed"], epochs=2)
    assert len(list((runs["resumed"] / "tensorboard").iterdir())) == 2  # one per session
    for tag in ("train/loss", "train/error", "epoch/train_loss", "validation/top1_error",
                "validation_ema/loss"):
        assert resumed[tag] == reference[tag], tag  # the run repeats itself exactly
    for name in ("Train-loss-iteration", "Train-error-iteration"):
        assert (runs["resumed"] / f"{name}.series.txt").read_text() == \
            (runs["reference"] / f"{name}.series.txt").read_text()
    # Given more epochs, it goes on from where it ended.
    extended = inputs / "extended"
    shutil.copytree(runs["reference"], extended)
    result = train(*watched_run_args(inputs, extended, *runs["extra"], epochs=3))
    assert "extending 2 -> 3 epochs" in result.stderr
    found = assert_curves(extended, epochs=3)
    assert found["train/loss"][:5] == reference["train/loss"]


@pytest.mark.slow
def test_text_images_and_hyper_parameters_are_written(runs):
    events = accumulator(runs["reference"])
    tags = events.Tags()
    assert sorted(tags["images"]) == ["train_batch", "validation/confusion"]
    assert [e.step for e in events.Images("validation/confusion")] == [5, 10]
    assert [e.step for e in events.Images("train_batch")] == [0]
    png = events.Images("train_batch")[0].encoded_image_string
    written = np.asarray(Image.open(runs["reference"] / TRAIN_BATCH_PNG).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), written)
    assert {"run/arguments/text_summary", "run/config/text_summary"} <= set(tags["tensors"])
    text = events.Tensors("run/arguments/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "arch=mobilenet_v3_small" in text and "log_interval=2" in text
    assert "_hparams_/session_start_info" in events.summary_metadata


@pytest.mark.slow
def test_the_tensorboard_server_shows_the_runs(runs, tmp_path):
    """The real server on 127.0.0.1 over the parent folder: both runs, their scalars and the
    HParams view with the final validation errors."""
    parent = runs["reference"].parent
    expected = ["reference/tensorboard", "resumed/tensorboard"]
    command = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(parent),
               "--reload_interval", "1"]
    with tensorboard(command, tmp_path / "tensorboard.log") as server:
        assert sorted(server.runs(expected)) == expected, server.log.read_text()
        for run in expected:
            monitor = parent / run.split("/")[0]
            rows = server.get(f"/data/plugin/scalars/scalars?run={run}"
                              "&tag=validation/top1_error")
            series = read_series(series_path(str(monitor), "Validation-error"))
            assert [r[1] for r in rows] == [5, 10]
            np.testing.assert_allclose([r[2] for r in rows], [v for _, v in series], rtol=1e-5)
            rows = server.get(f"/data/plugin/scalars/scalars?run={run}&tag=train/loss")
            assert [r[1] for r in rows] == [2, 4, 6, 8, 10]  # the killed session's purged
        groups = server.get("/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 10, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                "STATUS_RUNNING"]})["sessionGroups"]
    assert sorted(g["name"] for g in groups) == expected
    for group in groups:
        monitor = parent / group["name"].split("/")[0]
        assert group["hparams"]["arch"] == "mobilenet_v3_small"
        assert group["hparams"]["config.lr_scheduler.args.base_lr"] == 0.0005
        metrics = {m["name"]["tag"]: m["value"] for m in group["metricValues"]}
        final = read_series(series_path(str(monitor), "Validation-error"))[-1][1]
        assert metrics["validation/top1_error"] == pytest.approx(final, rel=1e-5)
        assert set(metrics) == {t for t in SCALARS if t.startswith("validation")}
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"


@pytest.mark.slow
def test_no_tensorboard_writes_no_event_files_and_the_same_series(inputs, runs, tmp_path):
    monitor = tmp_path / "off"
    train(*watched_run_args(inputs, monitor, *runs["extra"], "--no-tensorboard"))
    assert not (monitor / "tensorboard").exists()
    for name in ("Train-loss-iteration", "Train-loss", "Validation-error"):
        assert (monitor / f"{name}.series.txt").read_text() == \
            (runs["reference"] / f"{name}.series.txt").read_text()


# --------------------------------------------------------------------------- the batch grids


def first_training_batch(inputs: Path, config: str
                         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Rank 0's first training batch as train.py feeds it, rebuilt here from the same
    deterministic pipeline and mixing stream: (images, mixed images, labels, targets'
    weights or None)."""
    files = read_file_list(str(inputs / "train_label"), str(DEMO / "train"), 2)
    recipe = load_config(inputs / f"{config}.yaml")
    with make_batches(files, BATCH, training=True, spatial_size=SIZE,
                      augmentation=recipe.augmentation) as batches:
        batch = next(batches.epoch(0))
        images, labels = host_images(batch).astype(np.float64), batch.labels.copy()
    if recipe.cutmix == 0:
        return images, images, labels, None
    mixing = BatchMixing(0.0, recipe.cutmix, images.shape, 2, False, MIXUP_SEED)
    mixing.resample()  # the graph draws once when built and once per batch fed
    mixing.keep.forward()  # (the map is computed in the graph)
    keep = mixing.keep.d.astype(np.float64)
    return images, keep * images + (1 - keep) * images[::-1], labels, mixing.lam.d.copy()


def tiles(png: Path, layout: Grid, count: int) -> List[np.ndarray]:
    """The tiles of a written grid at the input's resolution, checking that each input pixel
    is an exact square of the grid's scale."""
    image = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert image.shape == layout.image.shape
    s, found = layout.scale, []
    for top, left in layout.origins[:count]:
        block = image[top:top + SIZE * s, left:left + SIZE * s]
        assert np.array_equal(block, block[::s, ::s].repeat(s, axis=0).repeat(s, axis=1))
        found.append(block[::s, ::s])
    return found


@pytest.mark.slow
@pytest.mark.parametrize("config", ["plain", "cutmix"])
def test_train_batch_png_is_the_batch_the_network_was_fed(inputs, tmp_path, config):
    monitor = tmp_path / config
    train(*watched_run_args(inputs, monitor, "-v", 0, config=config, epochs=1))
    images, mixed, labels, weights = first_training_batch(inputs, config)
    expected = to_pixels(mixed, channel_last=False, norm="default")
    layout = draw_grid(expected, captions(labels, ["bag", "trouser"], weights))
    for i, tile in enumerate(tiles(monitor / TRAIN_BATCH_PNG, layout, BATCH)):
        assert np.abs(tile - expected[i]).max() <= 1, i  # float32 in the graph, float64 here
    # Captions included, the picture is what the grid of the expected batch looks like (up
    # to the pixels the rounding above changes).
    written = np.asarray(Image.open(monitor / TRAIN_BATCH_PNG).convert("RGB"))
    assert np.mean(np.any(written != layout.image, axis=2)) < 0.001
    if weights is not None:  # the boxes pasted from the mirror images are what was shown
        plain = to_pixels(images, channel_last=False, norm="default")
        assert np.abs(plain.astype(int) - expected).max() > 100
        assert 0 < float(np.mean(weights)) < 1


@pytest.mark.slow
def test_val_batch_png_is_the_first_validation_batch(inputs, runs, tmp_path):
    out = tmp_path / "val"
    result = run_script("validation.py", runs["reference"] / "param_002.h5", "-a",
                        "mobilenet_v3_small", "--spatial-size", SIZE, "-V", DEMO / "train",
                        "--val-list", inputs / "train_label", "-b", BATCH, "-M", out,
                        "--labels", inputs / "label_words.csv", "--json", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["num_images"] == 40  # the peek consumed no image
    paths = [str(DEMO / "train" / line.split()[0])
             for line in (inputs / "train_label").read_text().splitlines()[:BATCH]]
    expected = to_pixels(load_images(paths, SIZE), channel_last=False, norm="default")
    labels = np.array([[int(line.split()[1])] for line in
                       (inputs / "train_label").read_text().splitlines()[:BATCH]])
    layout = draw_grid(expected, captions(labels, ["bag", "trouser"]))
    for i, tile in enumerate(tiles(out / VAL_BATCH_PNG, layout, BATCH)):
        assert np.array_equal(tile, expected[i]), i
    written = np.asarray(Image.open(out / VAL_BATCH_PNG).convert("RGB"))
    assert np.array_equal(written, layout.image)  # the names below the tiles too


def test_a_new_session_purges_what_the_last_one_wrote_past_its_checkpoint(tmp_path):
    """Session 1 writes steps 1..10 and dies; its checkpoint was after 6 iterations. Session
    2 (start step 6) writes 7..10 again: the reader shows each step once, the newer values
    from step 7 on. A fresh start in the folder shows none of the old steps."""
    folder = str(tmp_path / "tensorboard")
    first = TensorBoard(folder, 0)
    first.scalars(0, {"run/started": 1.0})
    for step in range(1, 11):
        first.scalars(step, {"train/loss": float(step)})
    first.close()
    second = open_tensorboard(str(tmp_path), True, 6, resumed=True)
    for step in range(7, 11):
        second.scalars(step, {"train/loss": 100.0 + step})
    second.close()
    assert scalars(tmp_path)["train/loss"] == [(s, float(s)) for s in range(1, 7)] + [
        (s, 100.0 + s) for s in range(7, 11)]
    assert scalars(tmp_path)["run/started"] == [(0, 1.0)]
    fresh = open_tensorboard(str(tmp_path), True, 0, resumed=False)
    fresh.scalars(3, {"train/loss": 3.5})
    fresh.close()
    assert {tag: v for tag, v in scalars(tmp_path).items() if v} == {"train/loss": [(3, 3.5)]}
    assert len(os.listdir(folder)) == 3  # a file per session, none overwritten
    assert open_tensorboard(str(tmp_path), False, 0, resumed=False) is None


def test_default_interval_and_flattened_hyper_parameters():
    assert default_interval(5005) == 50  # ImageNet, batch 256: 100 points an epoch
    assert default_interval(1668) == 17  # 4 x 192
    assert default_interval(5) == 1
    assert flatten({"a": 1, "b": {"c": [1, 2], "d": None, "e": "x", "f": True}}, "config.") == {
        "config.a": 1, "config.b.c": "[1, 2]", "config.b.d": "None", "config.b.e": "x",
        "config.b.f": True}


@pytest.mark.slow
def test_two_ranks_curves_are_of_all_ranks_and_written_once(inputs, tmp_path):
    """Under mpirun -n 2 (3 iterations an epoch, the last padded), with a point every 3
    iterations each point's window is one whole epoch: its loss and error are the epoch's
    over both ranks, as the Train-loss series, and rank 0 alone wrote one event file."""
    monitor = tmp_path / "two"
    args = watched_run_args(inputs, monitor, "-v", 0)
    args[args.index("--log-interval") + 1] = "3"
    result = run_script("train.py", *args, mpi_ranks=2)
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(monitor / "tensorboard")) == 1
    found = scalars(monitor)
    assert [s for s, _ in found["train/loss"]] == [s for s, _ in found["epoch/train_loss"]] \
        == [3, 6]
    for point, epoch in (("train/loss", "epoch/train_loss"), ("train/error",
                                                              "epoch/train_error")):
        np.testing.assert_allclose([v for _, v in found[point]],
                                   [v for _, v in found[epoch]], rtol=1e-5)
    np.testing.assert_allclose([v for _, v in found["epoch/train_loss"]],
                               [v for _, v in read_series(series_path(str(monitor),
                                                                      "Train-loss"))],
                               rtol=1e-5)
    errors = [v for _, v in found["train/error"]]
    assert all(abs(e * 40 - round(e * 40)) < 1e-3 for e in errors)  # of the 40 images


def test_class_names_come_from_labels_or_beside_the_training_list(inputs, tmp_path):
    def names(train_list: Path, classes: int, labels=None):
        return training_class_names(DataSources(".", str(train_list), ".", "val_label", labels),
                                    classes)

    assert names(inputs / "train_label", 2) == ["bag", "trouser"]
    assert names(inputs / "train_label", 3) == [None] * 3  # another count: ids
    assert names(tmp_path / "train_label", 1000)[0].startswith("tench")  # ImageNet's
    (tmp_path / "label_words.csv").write_text("not a csv line\n")
    assert names(tmp_path / "train_label", 2) == [None, None]
    with pytest.raises(ValueError, match="names 2 classes"):
        names(tmp_path / "train_label", 3, labels=str(inputs / "label_words.csv"))


FULL_DISK = """\
import resource, signal, sys
import numpy as np
from utils.outputs.tensorboard import TensorBoard
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
board = TensorBoard(sys.argv[1], 0)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
board.image("big", np.random.RandomState(0).randint(0, 256, (300, 300, 3)).astype(np.uint8), 1)
board.flush()
board.close()
print("went on")
"""


def test_an_event_file_that_cannot_be_written_is_a_warning(tmp_path):
    """A full disk (here a file size limit) in tensorboardX's writing thread: one warning
    line, no traceback, and the process goes on."""
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "tb")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "went on\n", result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "warning: TensorBoard events no longer written: [Errno 27] File too large" \
        in result.stderr


def test_plot_curves_draws_the_curves_within_the_epoch(tmp_path):
    from plot_curves import main as plot_curves
    from utils.outputs.monitor import TrainingMonitors
    from utils.outputs.plots import CHARTS, draw_chart

    monitors = TrainingMonitors(str(tmp_path), 0)
    for step in range(2, 21, 2):
        monitors.add_iteration(step, 1.0 / step, 0.5 - step / 100)
    monitors.add(0, 0.3, 0.4, 1.0, 10)
    assert plot_curves([str(tmp_path)]) == 0
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "error.png").is_file()
    for name in ("loss-iteration.png", "error-iteration.png"):
        assert_curves_drawn(tmp_path / name)
    chart = next(c for c in CHARTS if c.file_name == "loss-iteration.png")
    (line,) = draw_chart(chart, [str(tmp_path)], "run").axes[0].get_lines()
    assert chart.xlabel == "iterations" and tuple(line.get_xdata()) == tuple(range(2, 21, 2))
    assert list(line.get_ydata()) == pytest.approx([1.0 / s for s in range(2, 21, 2)],
                                                   rel=1e-5)
    # A resumed run keeps the points up to its checkpoint's step and drops the rest.
    TrainingMonitors(str(tmp_path), 1, 10)
    assert [i for i, _ in read_series(series_path(str(tmp_path), "Train-loss-iteration"))] \
        == [2, 4, 6, 8, 10]
