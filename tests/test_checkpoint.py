"""Checkpoints: exact round trip, damage detection with fallback, pruning, run identity."""
import errno
import io
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from paths import REPO

from utils.outputs.monitor import MonitorSeries, MonitorTimer, read_series, truncate_series
from utils.process.atomic import atomic_path, atomic_write_text
from utils.process.errors import OutputError
from utils.train.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    identity_mismatch,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def state(seed):
    rng = np.random.RandomState(seed)
    params = {"conv1/conv/W": rng.randn(4, 3, 3, 3).astype(np.float32),
              "conv1/bn/mean": rng.randn(1, 4, 1, 1).astype(np.float32)}
    solver = {"momentum/conv1/conv/W": rng.randn(4, 3, 3, 3).astype(np.float32),
              "steps": np.array(seed, np.int64)}
    return params, solver


def test_round_trip_is_exact(tmp_path):
    params, solver = state(1)
    extra = {"rng": np.arange(5, dtype=np.uint32)}
    path = save_checkpoint(str(tmp_path), 3, 17, {"identity": {"arch": "resnet18"}},
                           params, solver, extra)
    assert os.path.basename(path) == "checkpoint_e0003_i0000017.npz"
    ck = load_checkpoint(path)
    assert ck.meta["epoch"] == 3 and ck.meta["iteration"] == 17
    assert ck.meta["identity"] == {"arch": "resnet18"}
    for name in params:
        np.testing.assert_array_equal(ck.params[name], params[name])
        assert ck.params[name].dtype == np.float32
    np.testing.assert_array_equal(ck.solver["momentum/conv1/conv/W"],
                                  solver["momentum/conv1/conv/W"])
    assert int(ck.solver["steps"]) == 1
    np.testing.assert_array_equal(ck.extra["rng"], extra["rng"])
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(path)]


def test_newest_intact_checkpoint_is_used_and_damage_reported(tmp_path):
    d = str(tmp_path)
    for epoch in range(1, 4):
        save_checkpoint(d, epoch, 0, {}, *state(epoch))
    newest = list_checkpoints(d)[0]
    data = bytearray(open(newest, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the arrays
    open(newest, "wb").write(bytes(data))
    ck, skipped = latest_checkpoint(d)
    assert ck.meta["epoch"] == 2
    assert len(skipped) == 1 and newest in skipped[0]
    # A checkpoint cut short by a crash (never renamed) is invisible; a truncated one is skipped.
    open(os.path.join(d, ".tmp-abc.npz"), "wb").write(b"partial")
    second = list_checkpoints(d)[1]
    open(second, "wb").write(open(second, "rb").read()[:100])
    ck, skipped = latest_checkpoint(d)
    assert ck.meta["epoch"] == 1 and len(skipped) == 2
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(second)


def test_only_the_newest_are_kept(tmp_path):
    d = str(tmp_path)
    for epoch in range(6):
        save_checkpoint(d, epoch, 0, {}, *state(epoch), keep=2)
    save_checkpoint(d, 5, 40, {}, *state(9), keep=2)
    assert [os.path.basename(p) for p in list_checkpoints(d)] == [
        "checkpoint_e0005_i0000040.npz", "checkpoint_e0005_i0000000.npz"]


def test_three_are_kept_unless_told_and_at_least_one_must_be(tmp_path):
    d = str(tmp_path)
    for epoch in range(5):
        save_checkpoint(d, epoch, 0, {}, *state(epoch))
    assert [os.path.basename(p)[:16] for p in list_checkpoints(d)] == [
        "checkpoint_e0004", "checkpoint_e0003", "checkpoint_e0002"]
    save_checkpoint(d, 5, 0, {}, *state(5), keep=1)
    assert [os.path.basename(p) for p in list_checkpoints(d)] == ["checkpoint_e0005_i0000000.npz"]
    with pytest.raises(ValueError, match=r"^keep must be at least 1 \(the checkpoint just "
                                         r"written\), got 0$"):
        save_checkpoint(d, 6, 0, {}, *state(6), keep=0)
    assert checkpoint_dir(os.path.join("runs", "a")) == os.path.join("runs", "a", "checkpoints")


def test_the_newest_is_ordered_by_epoch_first_then_iteration(tmp_path):
    d = str(tmp_path)
    save_checkpoint(d, 1, 50, {}, *state(1))
    save_checkpoint(d, 2, 3, {}, *state(2))
    assert [os.path.basename(p) for p in list_checkpoints(d)] == [
        "checkpoint_e0002_i0000003.npz", "checkpoint_e0001_i0000050.npz"]
    ck = load_checkpoint(list_checkpoints(d)[0])
    assert ck.path == list_checkpoints(d)[0] and ck.meta["iteration"] == 3


def rewrite(path, change):
    """Write `path` again with `change(arrays)` applied to its arrays (the record kept)."""
    with np.load(path, allow_pickle=True) as data:
        arrays = {k: data[k] for k in data.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("change", [
    lambda a: a.update({"param/conv1/conv/W": a["param/conv1/conv/W"].view(np.int32)}),
    lambda a: a.update({"param/conv1/conv/W": a["param/conv1/conv/W"].reshape(12, 9)}),
], ids=["same bytes as another type", "same bytes in another shape"])
def test_the_checksum_covers_each_arrays_type_and_shape(tmp_path, change):
    path = save_checkpoint(str(tmp_path), 1, 0, {}, *state(1))
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=r"checksum mismatch \(the file was damaged\)$"):
        load_checkpoint(path)


def test_a_file_without_a_usable_record_or_with_pickled_objects_is_named(tmp_path):
    path = save_checkpoint(str(tmp_path), 1, 0, {}, *state(1))
    rewrite(path, lambda a: a.update({"meta": np.frombuffer(b"{not json", np.uint8)}))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(path)}: damaged record \("):
        load_checkpoint(path)
    rewrite(path, lambda a: a.pop("meta"))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(path)}: not a checkpoint \(no "
                                              r"record\)$"):
        load_checkpoint(path)
    rewrite(path, lambda a: a.update({"meta": np.array([{"epoch": 1}], dtype=object)}))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(path)}: unreadable checkpoint \("):
        load_checkpoint(path)  # never unpickled: a checkpoint holds plain arrays
    with pytest.raises(ValueError, match="pickle"):
        save_checkpoint(str(tmp_path), 2, 0, {}, *state(2),
                        extra={"objects": np.array([{"a": 1}], dtype=object)})


def test_no_checkpoint_in_a_new_directory(tmp_path):
    assert latest_checkpoint(str(tmp_path / "none")) == (None, [])


def test_identity_mismatch_names_each_difference():
    saved = {"arch": "resnet18", "batch_size": 32, "config": {"epochs": 90}}
    assert identity_mismatch(saved, dict(saved)) is None
    message = identity_mismatch(saved, {"arch": "resnet50", "batch_size": 32,
                                        "config": {"epochs": 90}})
    assert message == "arch: 'resnet18' in the checkpoint, 'resnet50' now"


def test_identity_mismatch_names_nested_and_one_sided_keys_each_once():
    saved = {"arch": "resnet18", "config": {"epochs": 90, "lr": {"base": 0.1}}}
    current = {"arch": "resnet18", "config": {"epochs": 90, "lr": 0.1, "ema": True},
               "seed": 3}
    assert identity_mismatch(saved, current) == (
        "config.ema: None in the checkpoint, True now; "
        "config.lr: {'base': 0.1} in the checkpoint, 0.1 now; "
        "seed: None in the checkpoint, 3 now")


def test_monitor_series_append_truncate_and_torn_lines(tmp_path):
    m = MonitorSeries(str(tmp_path), "Train-loss")
    for epoch, value in enumerate([2.5, 1.25, 0.123456789]):
        m.add(epoch, value)
    path = tmp_path / "Train-loss.series.txt"
    assert path.read_text() == "0 2.5\n1 1.25\n2 0.123457\n"
    with open(path, "a") as f:
        f.write("3 0.1")  # a crash in the middle of a line
    assert read_series(str(path)) == [(0, 2.5), (1, 1.25), (2, 0.123457)]
    truncate_series(str(path), 1)
    assert path.read_text() == "0 2.5\n1 1.25\n"
    t = MonitorTimer(str(tmp_path), "Epoch-time")
    t.add(0, 10.0)
    t.add(1, 2.5)
    # NNabla's MonitorTimeElapsed lines: index, seconds since the last, 1, seconds in all
    assert (tmp_path / "Epoch-time.timer.txt").read_text() == "0 10 1 10\n1 2.5 1 12.5\n"
    resumed = MonitorTimer(str(tmp_path), "Epoch-time")
    resumed.truncate_after(0)
    resumed.add(1, 4.0)
    assert (tmp_path / "Epoch-time.timer.txt").read_text() == "0 10 1 10\n1 4 1 14\n"


def rewrite_member(path: str, member: str, change) -> None:
    """Replace the bytes of one member of the zip at `path` by `change(bytes)`, writing a
    valid zip (fresh CRCs): damage only the checkpoint's own checksum can see."""
    with zipfile.ZipFile(path) as archive:
        contents = {info.filename: archive.read(info) for info in archive.infolist()}
    contents[member] = change(contents[member])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in contents.items():
            archive.writestr(name, data)


def test_a_changed_value_that_the_zip_layer_accepts_fails_the_checksum(tmp_path):
    d = str(tmp_path)
    save_checkpoint(d, 1, 0, {}, *state(1))
    newest = save_checkpoint(d, 2, 0, {}, *state(2))

    def one_weight_changed(data: bytes) -> bytes:
        array = np.load(io.BytesIO(data))
        array.flat[5] += 1.0
        out = io.BytesIO()
        np.save(out, array)
        return out.getvalue()

    rewrite_member(newest, "param/conv1/conv/W.npy", one_weight_changed)
    with np.load(newest) as data:  # the zip and the array read back without complaint
        assert data["param/conv1/conv/W"].flat[5] == state(2)[0]["conv1/conv/W"].flat[5] + 1
    with pytest.raises(CheckpointError, match=r"checksum mismatch \(the file was damaged\)$"):
        load_checkpoint(newest)
    ck, skipped = latest_checkpoint(d)
    assert ck.meta["epoch"] == 1 and skipped == [f"{newest}: checksum mismatch (the file was "
                                                 "damaged)"]


def test_an_os_error_while_writing_names_the_file_and_leaves_the_old_one(tmp_path):
    """The writer's own OSError (a full disk in mid-write) and the atomic step's (the name is
    a folder, so the rename fails): each one error naming the file, no temporary file left,
    what was there before unchanged."""
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    with pytest.raises(OutputError) as caught:
        with atomic_path(str(target)) as tmp:
            with open(tmp, "w") as f:
                f.write("new, half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(caught.value) == f"cannot write {target}: No space left on device"
    assert caught.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    assert target.read_text() == "old\n"

    folder = tmp_path / "taken"
    (folder / "inside").mkdir(parents=True)
    with pytest.raises(OutputError, match=rf"^cannot write {folder}: Is a directory$"):
        atomic_write_text(str(folder), "text\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "taken"]
    assert [p.name for p in folder.iterdir()] == ["inside"]


def test_a_file_size_limit_met_in_mid_write_is_one_error(tmp_path):
    """A real OS error from the kernel (EFBIG past `ulimit -f`), in a child process."""
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))\n"
        "from utils.process.atomic import atomic_write_text\n"
        "try:\n"
        "    atomic_write_text(sys.argv[1], 'x' * 5000)\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, e)\n")
    target = tmp_path / "big.txt"
    target.write_text("kept\n")
    result = subprocess.run([sys.executable, "-c", script, str(target)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.stdout == f"OutputError cannot write {target}: File too large\n", result
    assert [p.name for p in tmp_path.iterdir()] == ["big.txt"]
    assert target.read_text() == "kept\n"
