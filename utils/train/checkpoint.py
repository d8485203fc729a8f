"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is one `.npz` file in `<monitor>/checkpoints/`: the parameters (batch-norm
statistics included), the solver state, any extra arrays (e.g. an RNG state) and a JSON
record of where the run stands (epoch, iteration, data position, run identity). A SHA-256
over all arrays is stored in the record and checked on load, so a file damaged after it
was written is detected and the previous checkpoint used instead. Files are written to a
temporary name, synced and renamed, so a crash (kill -9, a full disk) never leaves a
half-written checkpoint under a real name; the last few are kept.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..process.atomic import atomic_path, check_room_for
from ..process.errors import UserError
from ..process.pause_point import pause_at

PARAM_PREFIX = "param/"
SOLVER_PREFIX = "solver/"
EXTRA_PREFIX = "extra/"
_META_KEY = "meta"
_NAME = re.compile(r"checkpoint_e(\d+)_i(\d+)\.npz$")


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used: damaged, or from a different run."""


@dataclass
class Checkpoint:
    path: str
    meta: Dict[str, Any]
    params: Dict[str, np.ndarray]
    solver: Dict[str, np.ndarray]
    extra: Dict[str, np.ndarray]

    @property
    def state(self) -> Dict[str, Dict[str, Any]]:
        """The contents as `save_checkpoint` took them (the meta with the position added)."""
        return {"meta": self.meta, "params": self.params, "solver": self.solver,
                "extra": self.extra}


def checkpoint_dir(monitor_path: str) -> str:
    return os.path.join(monitor_path, "checkpoints")


def checkpoint_name(epoch: int, iteration: int) -> str:
    """Names sort by position: epoch `epoch` with `iteration` of its iterations done."""
    return f"checkpoint_e{epoch:04d}_i{iteration:07d}.npz"


def _digest(arrays: Dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(key.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_checkpoint(
    directory: str,
    epoch: int,
    iteration: int,
    meta: Dict[str, Any],
    params: Dict[str, np.ndarray],
    solver: Dict[str, np.ndarray],
    extra: Optional[Dict[str, np.ndarray]] = None,
    keep: int = 3,
) -> str:
    """Write a checkpoint atomically, then delete all but the newest `keep`; return its path."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (the checkpoint just written), got {keep}")
    os.makedirs(directory, exist_ok=True)
    arrays: Dict[str, np.ndarray] = {}
    arrays.update({PARAM_PREFIX + k: np.asarray(v) for k, v in params.items()})
    arrays.update({SOLVER_PREFIX + k: np.asarray(v) for k, v in solver.items()})
    arrays.update({EXTRA_PREFIX + k: np.asarray(v) for k, v in (extra or {}).items()})
    record = dict(meta, epoch=epoch, iteration=iteration, sha256=_digest(arrays))
    arrays[_META_KEY] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    path = os.path.join(directory, checkpoint_name(epoch, iteration))
    check_room_for(path, sum(a.nbytes for a in arrays.values()), "checkpoint folder")
    with atomic_path(path, ".npz") as tmp:
        _write_npz(tmp, arrays)
        pause_at("checkpoint written")
    for old in list_checkpoints(directory)[keep:]:
        os.remove(old)
    return path


def _write_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """`np.savez`'s format (one `<key>.npy` per array in an uncompressed zip), with the zip
    closed even when a write fails: np.savez leaves it to the garbage collector, which then
    prints a second error for a full disk."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def list_checkpoints(directory: str) -> List[str]:
    """Checkpoint files, newest first (temporary files of an interrupted write excluded)."""
    found: List[Tuple[Tuple[int, int], str]] = []
    for path in glob.glob(os.path.join(directory, "checkpoint_e*_i*.npz")):
        m = _NAME.search(os.path.basename(path))
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), path))
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: str) -> Checkpoint:
    """Read and verify one checkpoint; CheckpointError if it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({e})") from None
    if _META_KEY not in arrays:
        raise CheckpointError(f"{path}: not a checkpoint (no record)")
    try:
        meta = json.loads(arrays.pop(_META_KEY).tobytes().decode())
    except ValueError as e:
        raise CheckpointError(f"{path}: damaged record ({e})") from None
    if meta.get("sha256") != _digest(arrays):
        raise CheckpointError(f"{path}: checksum mismatch (the file was damaged)")

    def arrays_under(prefix: str) -> Dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

    return Checkpoint(path, meta, arrays_under(PARAM_PREFIX), arrays_under(SOLVER_PREFIX),
                      arrays_under(EXTRA_PREFIX))


def latest_checkpoint(directory: str) -> Tuple[Optional[Checkpoint], List[str]]:
    """The newest intact checkpoint (or None) and a note for each damaged one skipped."""
    skipped = []
    for path in list_checkpoints(directory):
        try:
            return load_checkpoint(path), skipped
        except CheckpointError as e:
            skipped.append(str(e))
    return None, skipped


def _differences(saved: Any, current: Any, key: str) -> List[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        return [diff for k in sorted(set(saved) | set(current))
                for diff in _differences(saved.get(k), current.get(k), f"{key}.{k}")]
    return [] if saved == current else [f"{key}: {saved!r} in the checkpoint, {current!r} now"]


def identity_mismatch(saved: Dict[str, Any], current: Dict[str, Any]) -> Optional[str]:
    """Say how the run being resumed differs from the one that wrote the checkpoint: each
    differing key, nested ones dotted (`config.epochs: 90 in the checkpoint, 100 now`)."""
    diffs = [diff for key in sorted(set(saved) | set(current))
             for diff in _differences(saved.get(key), current.get(key), key)]
    return "; ".join(diffs) if diffs else None
