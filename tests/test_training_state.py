"""utils/train/state.py: the resumable state of a run, and checkpoints written before it
existed.

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
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pytest
from data_fixtures import make_batches
from eval_fixtures import run_script
from paths import DATA_DIR, REPO

from utils.eval.losses import classification_loss, top_n_error_count
from utils.labels.file_list import read_file_list
from utils.outputs.monitor import read_series, series_path
from utils.process.comm import Communicator
from utils.recipe.config import load_config
from utils.recipe.schedules import solver_learning_rate
from utils.recipe.solvers import MomentumSolver
from utils.train import state as training_state
from utils.train import step as training_step
from utils.train.checkpoint import checkpoint_dir, load_checkpoint
from utils.train.ema import WeightEma
from utils.train.mixing import MIXUP_SEED, BatchMixing
from utils.train.spec import BatchSplit, RunSpec
from utils.train.state import TrainingState
from utils.train.step import TrainingGraph, update_group

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
    """The described checkpoint in the on-disk format, independent of utils.train.checkpoint."""
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


def restored(inputs: Path, rank: int, ranks: int, batch: int, steps: int = 1
             ) -> Tuple[TrainingState, Dict[str, np.ndarray], List[str]]:
    """The described checkpoint resumed by rank `rank` of a run on `ranks` ranks with -b
    `batch` and --accumulate-steps `steps`: the state, the arrays and the log lines."""
    path, arrays = write_old_checkpoint(inputs / "checkpoints")
    checkpoint = load_checkpoint(str(path))
    identity = OLD["meta"]["identity"]
    config = load_config(inputs / "mixup.yaml", 2)
    assert config.to_dict() == identity["config"]
    comm = Communicator()
    comm.rank, comm.size = rank, ranks  # (load_state_dict reads only the rank and size)
    files = read_file_list(str(inputs / "train_label"), str(DEMO_TRAIN))
    data = make_batches(files, batch, training=True, spatial_size=32, rank=rank,
                        num_ranks=ranks)
    spec = RunSpec(**{**identity, "spatial_size": tuple(identity["spatial_size"]),
                      "config": config})
    assert spec.identity() == identity  # the record on disk is the one of the first version
    spec = replace(spec, batch_size=batch, num_ranks=ranks, accumulate_steps=steps)
    nn.seed(0)
    graph = training_step.build_training_graph(training_step.TrainingNetwork(
        "mobilenet_v3_small", 2, False, config, comm.rank), data.image_shape)
    solver = MomentumSolver(nn.get_parameters(), config.momentum, config.weight_decay)
    ema = WeightEma(nn.get_parameters(), 0.9)
    state = TrainingState(spec, comm, solver, data, graph, ema)
    changes = state.resume(checkpoint)
    return state, arrays, changes


def assert_shared_parts_restored(state: TrainingState, arrays: Dict[str, np.ndarray]) -> None:
    """The solver and the EMA, the same on every rank."""
    saved_solver = state.solver.state_dict()
    assert sorted(saved_solver) == sorted(k[len("solver/"):] for k in arrays
                                          if k.startswith("solver/"))
    for key, value in saved_solver.items():
        np.testing.assert_array_equal(value, arrays[f"solver/{key}"], err_msg=key)
    for name, value in state.ema.state_dict().items():
        np.testing.assert_array_equal(value, arrays[f"extra/ema/{name}"], err_msg=name)


def test_a_checkpoint_from_before_the_refactor_restores_every_part(inputs):
    state, arrays, changes = restored(inputs, rank=1, ranks=2, batch=4)
    assert changes == []
    for name, var in nn.get_parameters(grad_only=False).items():
        expected = arrays.get(f"extra/rank1/{name}", arrays[f"param/{name}"])
        assert var.need_grad or f"extra/rank1/{name}" in arrays, name  # statistics per rank
        np.testing.assert_array_equal(var.d, expected, err_msg=name)
    assert_shared_parts_restored(state, arrays)
    mixup = state.mixing.state_dict()
    np.testing.assert_array_equal(mixup["key"], arrays["extra/mixup_rng_1"])
    assert mixup["position"] == OLD["meta"]["mixup_rng_pos"][1]
    assert state.sums == training_state.EpochSums(*OLD["meta"]["epoch_sums"][1])
    assert state.position == (1, 1)


@pytest.mark.parametrize("rank, ranks, batch, steps, position", [
    (0, 1, 8, 1, (1, 1)), (0, 1, 4, 2, (1, 2)), (3, 4, 2, 1, (1, 1))])
def test_a_checkpoint_resumes_on_another_number_of_ranks(inputs, rank, ranks, batch, steps,
                                                         position):
    """The 2-rank checkpoint (-b 4, 8 images of epoch 1 done) on 1 rank with -b 8 or with
    -b 4 --accumulate-steps 2, and as rank 3 of 4 with -b 2: the same images done, the
    shared parts restored, the batch-norm statistics the mean of the two ranks', the
    epoch's sums of both ranks on rank 0 alone, the mixing stream of the same rank if
    there was one."""
    state, arrays, changes = restored(inputs, rank, ranks, batch, steps)
    now = f"{batch} x {ranks} rank{'s' if ranks > 1 else ''}" + (
        f" x {steps} accumulated" if steps > 1 else "")
    assert changes == [f"resuming a 2-rank run on {ranks} rank{'s' if ranks > 1 else ''}: "
                       f"batch 4 x 2 ranks -> {now}, global batch 8 kept"]
    assert state.position == position
    assert_shared_parts_restored(state, arrays)
    statistics = 0
    for name, var in nn.get_parameters(grad_only=False).items():
        other = arrays.get(f"extra/rank1/{name}")
        if other is None:
            np.testing.assert_array_equal(var.d, arrays[f"param/{name}"], err_msg=name)
        else:
            statistics += 1
            np.testing.assert_allclose(var.d, (arrays[f"param/{name}"] + other) / 2,
                                       rtol=1e-6, err_msg=name)
    assert statistics > 10
    sums = np.asarray(OLD["meta"]["epoch_sums"])
    expected = training_state.EpochSums(*sums[:, :3].sum(axis=0), sums[0][3]) if rank == 0 else \
        training_state.EpochSums(skipped=sums[0][3])
    assert state.sums.state_dict() == pytest.approx(expected.state_dict())
    if rank < 2:
        np.testing.assert_array_equal(state.mixing.state_dict()["key"],
                                      arrays[f"extra/mixup_rng_{rank}"])
    else:  # a stream of its own, from its seed, as built
        fresh = BatchMixing(0.2, 0.0, (batch, 3, 32, 32), 2, seed=MIXUP_SEED + rank).state_dict()
        np.testing.assert_array_equal(state.mixing.state_dict()["key"], fresh["key"])
        assert state.mixing.state_dict()["position"] == fresh["position"]


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


@pytest.mark.parametrize("real", [8, 5, 3], ids=lambda n: f"{n}-real")
def test_accumulated_batches_make_the_update_of_one_batch_as_large(real):
    """On a network without batch norm: --accumulate-steps 2 or 4 with batch b equals one step
    with batch 2b or 4b, learning rate included; also in the epoch's last update, where
    padding (the last 8 - `real` slots) fills the last batches, wholly some with 3 real."""
    rng = np.random.RandomState(0)
    images = rng.randn(8, 6).astype(np.float32)
    labels = rng.randint(0, 3, size=(8, 1))
    valid = (np.arange(8) < real).astype(np.float32).reshape(8, 1)

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
            part = slice(i * size, (i + 1) * size)
            image.d, label.d, mask.d = images[part], labels[part], valid[part]
            share = training_step.batch_share(int(valid[part].sum()), 1, real)
            training_step.accumulate_gradients(graph, solver, share)
        assert training_step.apply_update(solver, Communicator(), 0.01, 8)
        return {k: v.d.copy() for k, v in nn.get_parameters().items()}, solver.learning_rate

    whole, rate = one_update(1)
    for batches in (2, 4):
        accumulated, accumulated_rate = one_update(batches)
        assert accumulated_rate == rate == solver_learning_rate(0.01, 8)
        for name, value in whole.items():
            np.testing.assert_allclose(accumulated[name], value, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{batches} batches: {name}")
    share = training_step.batch_share
    assert share(4, 1, 8) == 1 / 2 and share(4, 2, 16) == 1 / 2


def test_a_split_of_another_global_batch_is_refused_with_the_flags_that_keep_it():
    was = BatchSplit(16, 2)
    assert was.global_batch == BatchSplit(32, 1).global_batch == BatchSplit(16, 1, 2).global_batch
    assert str(BatchSplit(16, 1, 2)) == "16 x 1 rank x 2 accumulated"
    assert was.refusal(BatchSplit(16, 1)) == (
        "the run was trained with a global batch of 32 (16 x 2 ranks), not 16 (16 x 1 rank); "
        "on 1 rank use -b 32 or -b 16 --accumulate-steps 2 (a new --monitor-path starts a new "
        "run)")
    assert "not 48 (16 x 3 ranks); on 3 ranks no -b keeps it; on 2 ranks use -b 16 (" in \
        was.refusal(BatchSplit(16, 3))
    assert "on 1 rank use -b 32 --accumulate-steps 1 or -b 8 --accumulate-steps 4 (" in \
        was.refusal(BatchSplit(8, 1, 2))  # the batch asked for, accumulated
    assert "on 8 ranks use -b 4 or -b 2 --accumulate-steps 2 (" in \
        BatchSplit(2, 4, 4).refusal(BatchSplit(2, 8))
