"""utils/training.py: the resumable state of a run, and checkpoints written before it existed.

`tests/data/checkpoint_before_refactor.json` describes a mid-epoch checkpoint written by the
train.py of commit 3841e13, before `TrainingState` owned the checkpoint's contents:
`mpirun -n 2 train.py -a mobilenet_v3_small -b 4 --spatial-size 32 -e 2 --num-classes 2
--ema-decay 0.9` with mixup 0.2, stopped by SIGUSR1 at epoch 1, iteration 1. It holds that
checkpoint's record as written and every array's name, dtype and shape (with the values of
the small ones: counters, loss scale, mixup random streams). The tests rebuild the file in
the on-disk format (`np.savez` members, SHA-256 over the arrays) with the parameters filled
by a seeded generator, then restore it in-process and resume it with train.py.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Dict, Tuple

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pytest
from data_fixtures import make_batches
from eval_fixtures import run_script
from paths import DATA_DIR, REPO

from utils import training
from utils.checkpoint import checkpoint_dir, load_checkpoint
from utils.comm import Communicator
from utils.config import load_config
from utils.ema import WeightEma
from utils.file_list import read_file_list
from utils.losses import classification_loss, top_n_error_count
from utils.lr_schedules import solver_learning_rate
from utils.monitor import read_series, series_path
from utils.optim import MomentumSolver
from utils.run_spec import RunSpec
from utils.training import TrainingGraph, TrainingState, update_group

DEMO_TRAIN = REPO / "data" / "demo" / "train"
OLD = json.loads((DATA_DIR / "checkpoint_before_refactor.json").read_text())


def fill(name: str, dtype: str, shape: Tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Plausible values for a float tensor the description gives only the shape of."""
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "var":
        return (1.0 + 0.1 * rng.random(shape)).astype(dtype)
    if leaf == "gamma":
        return np.ones(shape, dtype)
    if leaf in ("mean", "beta", "b"):
        return (0.01 * rng.standard_normal(shape)).astype(dtype)
    return (0.05 * rng.standard_normal(shape)).astype(dtype)


def old_arrays() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for entry in OLD["arrays"]:
        name, dtype, shape = entry[0], entry[1], tuple(entry[2])
        arrays[name] = (np.asarray(entry[3], dtype).reshape(shape) if len(entry) > 3
                        else fill(name, dtype, shape, rng))
    return arrays


def write_old_checkpoint(folder: Path) -> Tuple[Path, Dict[str, np.ndarray]]:
    """The described checkpoint in the on-disk format, independent of utils.checkpoint."""
    arrays = old_arrays()
    digest = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        for part in (key.encode(), str(a.dtype).encode(), str(a.shape).encode(), a.tobytes()):
            digest.update(part)
    record = dict(OLD["meta"], sha256=digest.hexdigest())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / OLD["file"]
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in {**arrays, "meta": np.frombuffer(json.dumps(record).encode(),
                                                           np.uint8)}.items():
            with archive.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, value, allow_pickle=False)
    return path, arrays


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "train_label").write_text(OLD["train_label"])
    (tmp_path / "mixup.yaml").write_text(OLD["config"])
    return tmp_path


def test_a_checkpoint_from_before_the_refactor_restores_every_part(inputs):
    path, arrays = write_old_checkpoint(inputs / "checkpoints")
    checkpoint = load_checkpoint(str(path))
    identity = OLD["meta"]["identity"]
    config = load_config(inputs / "mixup.yaml", 2)
    assert config.to_dict() == identity["config"]
    comm = Communicator()
    comm.rank, comm.size = 1, 2  # restore rank 1's part (load_state_dict reads only the rank)
    files = read_file_list(str(inputs / "train_label"), str(DEMO_TRAIN))
    data = make_batches(files, 4, training=True, spatial_size=32, rank=1, num_ranks=2)
    spec = RunSpec(**{**identity, "spatial_size": tuple(identity["spatial_size"]),
                      "config": config})
    assert spec.identity() == identity  # the record on disk is the one of the first version
    nn.seed(0)
    graph = training.build_training_graph(training.TrainingNetwork(
        "mobilenet_v3_small", 2, False, config, comm.rank), data.image_shape)
    solver = MomentumSolver(nn.get_parameters(), config.momentum, config.weight_decay)
    ema = WeightEma(nn.get_parameters(), 0.9)
    state = TrainingState(spec, comm, solver, data, graph, ema)

    state.resume(checkpoint)

    for name, var in nn.get_parameters(grad_only=False).items():
        expected = arrays.get(f"extra/rank1/{name}", arrays[f"param/{name}"])
        assert var.need_grad or f"extra/rank1/{name}" in arrays, name  # statistics per rank
        np.testing.assert_array_equal(var.d, expected, err_msg=name)
    saved_solver = solver.state_dict()
    assert sorted(saved_solver) == sorted(k[len("solver/"):] for k in arrays
                                          if k.startswith("solver/"))
    for key, value in saved_solver.items():
        np.testing.assert_array_equal(value, arrays[f"solver/{key}"], err_msg=key)
    mixup = graph.mixing.state_dict()
    np.testing.assert_array_equal(mixup["key"], arrays["extra/mixup_rng_1"])
    assert mixup["position"] == OLD["meta"]["mixup_rng_pos"][1]
    for name, value in ema.state_dict().items():
        np.testing.assert_array_equal(value, arrays[f"extra/ema/{name}"], err_msg=name)
    assert state.sums == training.EpochSums(*OLD["meta"]["epoch_sums"][1])
    assert state.position == (1, 1)


def test_train_py_resumes_a_checkpoint_from_before_the_refactor(inputs):
    monitor = inputs / "monitor"
    write_old_checkpoint(Path(checkpoint_dir(str(monitor))))
    result = run_script(
        "train.py", "-a", "mobilenet_v3_small", "-b", "4", "--spatial-size", "32", "-C",
        str(inputs / "mixup.yaml"), "-e", "2", "-T", str(DEMO_TRAIN), "--train-list",
        str(inputs / "train_label"), "-v", "0", "-m", str(monitor), "--num-classes", "2",
        "--ema-decay", "0.9", "--dali-num-threads", "1", mpi_ranks=2)
    assert result.returncode == 0, result.stderr
    assert re.search(r"resuming from \S+checkpoint_e0001_i0000001\.npz \(epoch 1, "
                     r"iteration 1\)", result.stderr), result.stderr
    assert [i for i, _ in read_series(series_path(str(monitor), "Train-loss"))] == [1]
    final = load_checkpoint(str(monitor / "checkpoints" / "checkpoint_e0002_i0000000.npz"))
    assert final.meta["identity"] == OLD["meta"]["identity"]
    assert sorted(final.params) == sorted(k[len("param/"):] for k in old_arrays()
                                          if k.startswith("param/"))
    assert (monitor / "param_002.h5").exists() and (monitor / "param_ema_002.h5").exists()


def test_update_groups():
    # 7 iterations, updates of 3 batches: [0 1 2] [3 4 5] [6]
    groups = [update_group(i, 7, 3) for i in range(7)]
    assert groups == [(True, False, 3), (False, False, 3), (False, True, 3),
                      (True, False, 3), (False, False, 3), (False, True, 3), (True, True, 1)]
    assert all(update_group(i, 5, 1) == (True, True, 1) for i in range(5))


def test_two_accumulated_batches_make_the_update_of_one_batch_twice_as_large():
    """On a network without batch norm: --accumulate-steps 2 with batch b equals one step with
    batch 2b, learning rate included."""
    rng = np.random.RandomState(0)
    images = rng.randn(8, 6).astype(np.float32)
    labels = rng.randint(0, 3, size=(8, 1))

    def one_update(batches: int) -> Tuple[Dict[str, np.ndarray], float]:
        nn.clear_parameters()
        nn.seed(1)
        size = 8 // batches
        image, label, mask = nn.Variable((size, 6)), nn.Variable((size, 1)), nn.Variable((size, 1))
        logits = PF.affine(F.tanh(PF.affine(image, 5, name="hidden")), 3, name="out")
        graph = TrainingGraph(image, label, mask, logits,
                              classification_loss(logits, label, 0.1, weight=mask),
                              top_n_error_count(logits, label, 1, weight=mask), None)
        solver = MomentumSolver(nn.get_parameters(), 0.9, 1e-4)
        solver.zero_grad()
        for i in range(batches):
            image.d, label.d, mask.d = images[i * size:(i + 1) * size], \
                labels[i * size:(i + 1) * size], 1
            training.accumulate_gradients(graph, solver, batches)
        assert training.apply_update(solver, Communicator(), 0.01, 8)
        return {k: v.d.copy() for k, v in nn.get_parameters().items()}, solver.learning_rate

    whole, rate = one_update(1)
    accumulated, accumulated_rate = one_update(2)
    assert accumulated_rate == rate == solver_learning_rate(0.01, 8)
    for name, value in whole.items():
        np.testing.assert_allclose(accumulated[name], value, rtol=1e-5, atol=1e-7,
                                   err_msg=name)
