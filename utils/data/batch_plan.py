"""Which images make each batch: a pure function of (seed, epoch, iteration, rank).

- the epoch order is a global permutation of the whole split drawn from (seed, epoch)
  (the identity for validation); with repeated augmentation (`repeats` k > 1, Hoffer et al.
  2020) epochs come in cycles of k: a cycle's permutation, each image k times in a row, cut
  into k epochs of N images, so an epoch keeps its length and its batches, and over a cycle
  every image is seen exactly k times, its copies side by side (on other ranks, or in the
  same batch) with augmentations of their own;
- the `global_batch` (= num_ranks * batch_size) slots of global iteration i take positions
  i*R*B .. (i+1)*R*B - 1 of that order, rank r getting every R-th one, so shards are disjoint
  and every rank runs the same `ceil(N / (R*B))` iterations; slots past the end repeat
  images from the start of the order and carry mask 0, so an epoch covers every image exactly
  once whatever N, B and R are.

A position in the plan is (epoch, iteration); `BatchPlan.layout` is what that position means
(the split, the batch, the ranks, the seed), saved with it so that a resumed run is refused
where the same position would mean other images. Iteration i covers positions
i*R*B .. (i+1)*R*B - 1 of the order on all ranks together, so a position is a number of
images of the order done: a plan that splits its iterations otherwise (other B and R)
continues it mid-epoch where that number is a whole number of its own iterations.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Dict, Tuple

import numpy as np

from ..labels.file_list import FileList
from ..process.errors import DataError

# Tags keeping the shuffle's random streams apart from the augmentation's.
_SHUFFLE_STREAM, _REPEATED_STREAM = 0x5155, 0x5EA7
# The layout's keys that only split the images of an iteration: a position maps across them.
_SPLIT = ("batch_size", "num_ranks")
# What a layout key saved before it existed meant.
_LAYOUT_DEFAULTS = {"repeats": 1}


def iterations_per_epoch(num_samples: int, batch_size: int, num_ranks: int) -> int:
    return -(-num_samples // (batch_size * num_ranks))


@lru_cache(maxsize=8)  # an epoch's batches all read its order; resizing keeps the epoch
def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool, repeats: int = 1
                ) -> np.ndarray:
    """Sample indices in the order epoch `epoch` visits them (the same on every rank); with
    `repeats` k > 1, part epoch % k of its cycle's permutation with each image k times."""
    if repeats < 1:
        raise ValueError(f"repeats must be positive, got {repeats}")
    if not shuffle:
        order = np.arange(num_samples, dtype=np.int64)
    elif repeats > 1:
        cycle, part = divmod(epoch, repeats)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [_REPEATED_STREAM, seed, cycle, repeats])))
        repeated = np.repeat(rng.permutation(num_samples), repeats)
        order = repeated[part * num_samples:(part + 1) * num_samples].copy()
    else:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [_SHUFFLE_STREAM, seed, epoch])))
        order = rng.permutation(num_samples)
    order.flags.writeable = False  # shared by every caller of the cache
    return order


def batch_positions(
    num_samples: int, batch_size: int, rank: int, num_ranks: int, iteration: int
) -> Tuple[np.ndarray, np.ndarray]:
    """(positions in the epoch order, validity) of rank `rank`'s batch `iteration`.

    Positions past the end wrap to the start of the order and are invalid (padding); ranks
    interleave so that padding spreads evenly over them.
    """
    if not 0 <= rank < num_ranks:
        raise ValueError(f"rank {rank} outside 0..{num_ranks - 1}")
    slots = iteration * batch_size * num_ranks + np.arange(batch_size) * num_ranks + rank
    return slots % num_samples, slots < num_samples


@dataclass(frozen=True)
class Shard:
    """This process's part of the data: rank `rank` of `num_ranks`."""

    rank: int = 0
    num_ranks: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.num_ranks:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_ranks - 1}")


@dataclass(frozen=True)
class PlannedBatch:
    """One rank's batch as planned: its position, the images and which slots count."""

    epoch: int
    iteration: int
    indices: np.ndarray  # into the FileList; padding repeats real images
    valid: np.ndarray  # bool: False for padding


@dataclass(frozen=True, eq=False)
class BatchPlan:
    """The batches of a split for one rank: `training` shuffles every epoch, otherwise the
    list's order; `batch_size` is per rank, every batch has exactly that many samples;
    `repeats` > 1 (training only) is repeated augmentation's copies of an image a cycle."""

    files: FileList = field(repr=False)
    batch_size: int
    training: bool
    seed: int = 0
    shard: Shard = Shard()
    repeats: int = 1

    def __post_init__(self) -> None:
        if len(self.files) == 0:
            raise DataError(f"{self.files.source or 'the image list'}: no images")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be positive, got {self.batch_size}")
        if self.repeats < 1 or (self.repeats > 1 and not self.training):
            raise ValueError(f"repeats {self.repeats}: a positive number, 1 unless training")

    @property
    def num_samples(self) -> int:
        return len(self.files)

    @property
    def global_batch(self) -> int:
        """Images per iteration over all ranks."""
        return self.batch_size * self.shard.num_ranks

    @property
    def iterations_per_epoch(self) -> int:
        return iterations_per_epoch(self.num_samples, self.batch_size, self.shard.num_ranks)

    def images_in(self, iteration: int, count: int) -> int:
        """Real images (padding left out) of all ranks in `count` iterations from
        `iteration`."""
        start = iteration * self.global_batch
        return max(0, min(self.num_samples, start + count * self.global_batch) - start)

    def batch(self, epoch: int, iteration: int) -> PlannedBatch:
        positions, valid = batch_positions(self.num_samples, self.batch_size, self.shard.rank,
                                           self.shard.num_ranks, iteration)
        order = epoch_order(self.num_samples, self.seed, epoch, self.training, self.repeats)
        return PlannedBatch(epoch, iteration, order[positions], valid)

    @cached_property
    def layout(self) -> Dict[str, Any]:
        """What a position means: saved with it, compared when it is restored."""
        digest = hashlib.sha1("\n".join(self.files.paths).encode("utf-8"))
        digest.update(self.files.labels.astype("<i4").tobytes())
        return {"files": digest.hexdigest(), "num_samples": self.num_samples,
                "batch_size": self.batch_size, "num_ranks": self.shard.num_ranks,
                "seed": self.seed, "training": self.training, "repeats": self.repeats}

    def position_of(self, state: Dict[str, Any]) -> Tuple[int, int]:
        """(epoch, iteration) of a saved position (`layout` included) in this plan: the same
        images of the epoch's order done. A different list, seed or shuffling is refused
        mid-epoch (the position would mean other images), and so is a batch per iteration
        (B x R) that does not divide the images done; at an epoch boundary a different
        layout is allowed, with a warning unless only the batch per iteration changed."""
        epoch, iteration = int(state["epoch"]), int(state["iteration"])
        saved = {**_LAYOUT_DEFAULTS, **state}
        changed = {k: (saved.get(k), v) for k, v in self.layout.items() if saved.get(k) != v}
        images_done = iteration * state["batch_size"] * state["num_ranks"]
        split = {k: changed.pop(k) for k in _SPLIT if k in changed}
        if iteration and (changed or images_done % self.global_batch):
            detail = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in
                               {**changed, **split}.items())
            raise DataError(f"cannot resume mid-epoch {epoch} (iteration {iteration}): "
                            f"the data layout changed ({detail})")
        if changed:
            from nnabla.logger import logger

            logger.warning(f"data layout changed since the saved state ({', '.join(changed)}); "
                           f"epoch {epoch} onwards follows the new layout")
        iteration = images_done // self.global_batch
        if not 0 <= iteration <= self.iterations_per_epoch:
            raise DataError(f"iteration {iteration} outside 0..{self.iterations_per_epoch}")
        return epoch, iteration
