"""DALI input pipelines for training and validation, one definition for CPU and GPU.

On a GPU the images are decoded by DALI's "mixed" decoder and processed by GPU operators; on
a CPU-only machine (`device_id=None`) the same graph runs with DALI's CPU operators.

What goes into every batch is decided in Python, as a pure function of
(seed, epoch, iteration, rank), and fed to DALI through an external source:

- the epoch order is a global permutation of the whole split drawn from (seed, epoch)
  (the identity for validation);
- the `num_ranks * batch_size` slots of global iteration i take positions
  i*R*B .. (i+1)*R*B - 1 of that order, rank r getting every R-th one, so shards are disjoint
  and every rank runs the same `ceil(N / (R*B))` iterations; slots past the end repeat
  images from the start of the order and carry mask 0, so an epoch covers every image exactly
  once whatever N, B and R are;
- the random-resized-crop window and the flip of each training image are drawn in Python
  from (seed, epoch, iteration, rank) and the image's size read from its header, and DALI
  only executes them (decode the window, resize, flip, normalise).

So DALI holds no random state: `state()` is just (epoch, iteration) and restoring it
reproduces the same batches bit for bit, mid-epoch included. Images are used as shown: the
EXIF orientation is applied, as DALI's decoders do by default (and the official example), and
the crop windows refer to the turned image.

Broken images: a file whose header cannot be read (empty, garbage, a format DALI does not
decode) is reported before it reaches DALI; a file that fails inside DALI's decoder is found
by decoding the batches in flight with Pillow. Both stop with an `ImageDecodeError` naming
the file and its list line: skipping it would change the epoch (and break exact resume), so
the run stops where it can be resumed from its last checkpoint once the file is fixed or
removed (`create_input_files.py --verify` finds all such files up front).
"""
from __future__ import annotations

import collections
import ctypes
import hashlib
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from models import DEFAULT_CROP_PCT, NORMALIZATIONS

from .augmentation import OFFICIAL, Augmentation, apply_policy, augmentation_plan, policy_seed
from .errors import DataError, UsageError
from .file_list import FileList
from .image_probe import probe_image, verify_image
from .native_stderr import filter_decoder_errors

# Tag keeping the shuffle's random stream apart from the augmentation's.
_SHUFFLE_STREAM = 0x5155

SpatialSize = Union[int, Sequence[int]]


class ImageDecodeError(DataError):
    """An image listed for training or validation cannot be decoded; names file and line."""


# --------------------------------------------------------------------------- pure maths


def resize_for_crop(size: int, crop_pct: float = DEFAULT_CROP_PCT) -> int:
    """Validation resize target for crop `size`: size / crop_pct (the official 256/224),
    rounded to an even number."""
    return int(round(size / crop_pct / 2) * 2)


def to_hw(spatial_size: SpatialSize) -> Tuple[int, int]:
    """(height, width) from one size (square) or two."""
    if isinstance(spatial_size, (int, np.integer)):
        return int(spatial_size), int(spatial_size)
    sizes = [int(s) for s in spatial_size]
    if len(sizes) == 1:
        return sizes[0], sizes[0]
    if len(sizes) != 2:
        raise ValueError(f"spatial size must be one or two numbers, got {spatial_size!r}")
    return sizes[0], sizes[1]


def validation_resize(spatial_size: SpatialSize, crop_pct: float = DEFAULT_CROP_PCT
                      ) -> Tuple[int, int]:
    """The (height, width) an image is resized to cover (aspect kept) before the centre crop.

    For a square size s this is resizing the shorter side to `resize_for_crop(s, crop_pct)`.
    """
    h, w = to_hw(spatial_size)
    return resize_for_crop(h, crop_pct), resize_for_crop(w, crop_pct)


def iterations_per_epoch(num_samples: int, batch_size: int, num_ranks: int) -> int:
    return -(-num_samples // (batch_size * num_ranks))


def epoch_order(num_samples: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Sample indices in the order epoch `epoch` visits them (the same on every rank)."""
    if not shuffle:
        return np.arange(num_samples, dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [_SHUFFLE_STREAM, seed, epoch])))
    return rng.permutation(num_samples)


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


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """One rank's batch: images (on the pipeline's device), labels, and which slots count.

    The images stay in DALI's memory and are valid until the next batch is requested.
    """

    epoch: int
    iteration: int
    indices: np.ndarray  # (B,) indices into the FileList; padding repeats real images
    labels: np.ndarray  # int32 (B, 1)
    mask: np.ndarray  # float32 (B, 1): 1 for real samples, 0 for padding
    dtype: np.dtype  # of the images
    on_gpu: bool
    _images: Any  # DALI TensorListCPU or TensorListGPU

    @property
    def num_valid(self) -> int:
        return int(self.mask.sum())

    @property
    def image_shape(self) -> Tuple[int, ...]:
        """(B, C, H, W) or (B, H, W, C)."""
        return tuple(self._images.as_tensor().shape())

    def copy_to(self, x: Any, ctx: Any = None) -> None:
        """Copy the images into `x` (an nn.Variable or nn.NdArray of the same shape).

        One device-to-device copy on a GPU (DALI's `copy_to_external` into the array's
        buffer on the context `ctx`, by default the current one), one host copy on a CPU.
        """
        import nnabla as nn
        from nnabla.ext_utils import get_extension_context

        array = x.data if isinstance(x, nn.Variable) else x
        if tuple(array.shape) != self.image_shape:
            raise ValueError(f"images are {self.image_shape}, input is {array.shape}")
        if self.on_gpu:
            ctx = nn.get_current_context() if ctx is None else ctx
            ptr = array.data_ptr(self.dtype, ctx, write_only=True)
            self._images.copy_to_external(ctypes.c_void_p(ptr))
        else:
            ptr = array.data_ptr(self.dtype, get_extension_context("cpu"), write_only=True)
            self._images.as_tensor().copy_to_external(ctypes.c_void_p(ptr))


def _check_options(files: FileList, batch_size: int, rank: int, num_ranks: int,
                   channels: int, norm: str, dtype: Any) -> None:
    if len(files) == 0:
        raise DataError(f"{files.source or 'the image list'}: no images")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if not 0 <= rank < num_ranks:
        raise ValueError(f"rank {rank} outside 0..{num_ranks - 1}")
    if channels not in (3, 4):
        raise ValueError(f"channels must be 3 or 4, got {channels}")
    if norm not in NORMALIZATIONS:
        raise ValueError(f"unknown normalisation '{norm}'; choose from "
                         f"{', '.join(NORMALIZATIONS)}")
    if np.dtype(dtype) not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {np.dtype(dtype)}")


GIBIBYTE = 1 << 30


def available_memory() -> Optional[int]:
    """Bytes this process can still allocate: the system's available memory, or less under
    a container's (cgroup) limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f, open(usage) as g:
                found.append(int(f.read()) - int(g.read()))  # "max" (no limit): ValueError
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def pipeline_bytes(batch_size: int, spatial_size: Tuple[int, int], channels: int,
                   itemsize: int, prefetch: int, resized: Optional[Tuple[int, int]]) -> int:
    """A lower bound of the memory the pipeline's pixels take: for each batch in flight, the
    resized images (uint8 RGB; validation resizes to cover `resized` before its crop) and
    the output. Decoded originals and the network come on top."""
    h, w = spatial_size
    rh, rw = resized or spatial_size
    return batch_size * max(prefetch, 1) * (rh * rw * 3 + h * w * channels * itemsize)


def check_batch_fits(need: int, available: Optional[int], what: str, remedy: str) -> None:
    """Refuse, before any work, a batch whose pixels alone exceed the memory there is (DALI
    ended with std::bad_alloc and a traceback)."""
    if available is not None and need > available:
        raise UsageError(f"{what} need at least {need / GIBIBYTE:.1f} GiB in the input "
                         f"pipeline, more than the {max(available, 0) / GIBIBYTE:.1f} GiB of "
                         f"memory available: {remedy}")


@dataclass
class _Planned:
    """What the external source fed for one batch, waiting for DALI's output."""

    epoch: int
    iteration: int
    indices: np.ndarray
    valid: np.ndarray


class ImageBatches:
    """This rank's batches of a split, epoch by epoch, from a DALI pipeline.

    Args:
        files: the split (see `file_list.read_file_list`).
        batch_size: per-rank batch size; every batch has exactly this many samples.
        training: random-resized-crop + flip and a per-epoch shuffle; otherwise resize,
            centre crop, file-list order.
        spatial_size: output size, one number or (height, width).
        channels: 3, or 4 for a zero 4th channel (mixed-precision NHWC networks).
        channel_last: NHWC output instead of NCHW.
        dtype: float32 or float16 output.
        norm: a key of NORMALIZATIONS.
        rank, num_ranks: this process's shard.
        seed: shuffle and augmentation seed (same on all ranks).
        num_threads, prefetch: DALI worker threads and prefetch queue depth.
        device_id: GPU to decode and process on, None for the CPU.
        decoder_padding: nvJPEG device and host memory padding in bytes (GPU only).
        crop_pct: validation's centre crop over the resized shorter side (size / crop_pct).
        augmentation: training's crop ranges and policy (see `Augmentation`).
    """

    def __init__(
        self,
        files: FileList,
        batch_size: int,
        training: bool,
        spatial_size: SpatialSize = 224,
        channels: int = 3,
        channel_last: bool = False,
        dtype: Any = np.float32,
        norm: str = "default",
        rank: int = 0,
        num_ranks: int = 1,
        seed: int = 0,
        num_threads: int = 4,
        prefetch: int = 2,
        device_id: Optional[int] = None,
        decoder_padding: Optional[int] = None,
        crop_pct: float = DEFAULT_CROP_PCT,
        augmentation: Augmentation = OFFICIAL,
    ):
        _check_options(files, batch_size, rank, num_ranks, channels, norm, dtype)
        self.dtype = np.dtype(dtype)
        self.files = files
        self.batch_size = batch_size
        self.training = training
        self.spatial_size = to_hw(spatial_size)
        self.channels = channels
        self.channel_last = channel_last
        self.norm = norm
        self.rank = rank
        self.num_ranks = num_ranks
        self.seed = seed
        self.num_threads = num_threads
        self.prefetch = prefetch
        self.device_id = device_id
        self.decoder_padding = decoder_padding
        self.crop_pct = crop_pct
        self.augmentation = augmentation
        # A policy draws from DALI's random state: its pipeline starts afresh every epoch
        # with a seed of (seed, epoch, rank), and a resumed epoch replays the batches before.
        self._per_epoch_streams = training and augmentation.policy != "none"
        self._stream_epoch = -1
        self.num_samples = len(files)
        self.iterations_per_epoch = iterations_per_epoch(self.num_samples, batch_size, num_ranks)
        self._epoch, self._iteration = 0, 0
        self._pipe: Any = None
        self._cursor = (0, 0)
        self._inflight: Deque[_Planned] = collections.deque()
        self._orders: Dict[int, np.ndarray] = {}
        self._fingerprint: Optional[str] = None
        if device_id is None:  # (on a GPU the pixels are in its memory)
            self._check_memory()

    def _check_memory(self) -> None:
        resized = None if self.training else validation_resize(self.spatial_size,
                                                                self.crop_pct)
        need = pipeline_bytes(self.batch_size, self.spatial_size, self.channels,
                              self.dtype.itemsize, self.prefetch, resized)
        h, w = self.spatial_size
        what = f"{self.batch_size} image(s) at {h}x{w}" + (
            "" if resized is None else
            f", resized to {resized[0]}x{resized[1]} for the crop of --crop-pct "
            f"{self.crop_pct:g},")
        check_batch_fits(need, available_memory(), what, "lower --spatial-size or -b" + (
            "" if resized is None else ", or raise --crop-pct"))

    # ------------------------------------------------------------------ public interface

    @property
    def image_shape(self) -> Tuple[int, ...]:
        """Shape of a batch of images."""
        h, w = self.spatial_size
        c = self.channels
        return (self.batch_size, h, w, c) if self.channel_last else (self.batch_size, c, h, w)

    def __len__(self) -> int:
        return self.iterations_per_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of `epoch`, from the restored iteration if `epoch` is the restored one.

        A yielded batch counts as consumed: `state()` taken while holding it resumes with the
        next one.
        """
        start = self._iteration if epoch == self._epoch else 0
        self._epoch, self._iteration = epoch, start
        position = self._stream_position()
        # Validation passes are all alike: a pipeline already prefetching one is reused.
        reusable = position == (epoch, start) or (not self.training and position[1] == start)
        if self._per_epoch_streams and self._stream_epoch != epoch:
            reusable = False
        if self._pipe is None or not reusable:
            self._start_stream(epoch, start)
        while self._iteration < self.iterations_per_epoch:
            batch = self._next_batch(epoch)
            self._iteration += 1
            yield batch
        self._epoch, self._iteration = epoch + 1, 0

    def resized(self, spatial_size: SpatialSize) -> ImageBatches:
        """The same batches at another output size, from this one's position (which closes:
        progressive resizing)."""
        other = ImageBatches(
            self.files, self.batch_size, self.training, spatial_size, self.channels,
            self.channel_last, self.dtype, self.norm, self.rank, self.num_ranks, self.seed,
            self.num_threads, self.prefetch, self.device_id, self.decoder_padding,
            self.crop_pct, self.augmentation)
        other.restore(self.state())
        self.close()
        return other

    def state(self) -> Dict[str, Any]:
        """Where the next batch comes from, plus what it depends on (JSON-serialisable)."""
        return {"epoch": self._epoch, "iteration": self._iteration, **self._layout()}

    def restore(self, state: Dict[str, Any]) -> None:
        """Continue exactly where `state()` was taken.

        A different split, batch size, rank count, seed or mode is refused mid-epoch (the
        position would mean other images) and allowed with a warning at an epoch boundary.
        """
        epoch, iteration = int(state["epoch"]), int(state["iteration"])
        changed = {k: (state.get(k), v) for k, v in self._layout().items() if state.get(k) != v}
        if changed and iteration:
            detail = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise DataError(f"cannot resume mid-epoch {epoch} (iteration {iteration}): "
                            f"the data layout changed ({detail})")
        if changed:
            from nnabla.logger import logger

            logger.warning(f"data layout changed since the saved state ({', '.join(changed)}); "
                           f"epoch {epoch} onwards follows the new layout")
        if not 0 <= iteration <= self.iterations_per_epoch:
            raise DataError(f"iteration {iteration} outside 0..{self.iterations_per_epoch}")
        self._epoch, self._iteration = epoch, iteration

    def close(self) -> None:
        """Release the DALI pipeline (its threads and buffers)."""
        self._pipe = None
        self._inflight.clear()

    def __enter__(self) -> ImageBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ planning (pure)

    def _layout(self) -> Dict[str, Any]:
        if self._fingerprint is None:
            digest = hashlib.sha1("\n".join(self.files.paths).encode("utf-8"))
            digest.update(self.files.labels.astype("<i4").tobytes())
            self._fingerprint = digest.hexdigest()
        return {"files": self._fingerprint, "num_samples": self.num_samples,
                "batch_size": self.batch_size, "num_ranks": self.num_ranks, "seed": self.seed,
                "training": self.training}

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 3:
                del self._orders[min(self._orders)]
            self._orders[epoch] = epoch_order(self.num_samples, self.seed, epoch, self.training)
        return self._orders[epoch]

    def _plan(self, epoch: int, iteration: int) -> _Planned:
        positions, valid = batch_positions(
            self.num_samples, self.batch_size, self.rank, self.num_ranks, iteration)
        return _Planned(epoch, iteration, self._order(epoch)[positions], valid)

    # ------------------------------------------------------------------ the DALI side

    def _stream_position(self) -> Tuple[int, int]:
        if self._inflight:
            return self._inflight[0].epoch, self._inflight[0].iteration
        return self._cursor

    def _start_stream(self, epoch: int, iteration: int) -> None:
        self.close()
        self._stream_epoch = epoch
        if not self._per_epoch_streams:
            self._cursor = (epoch, iteration)
            self._pipe = self._build_pipeline(self.seed + self.rank)
            return
        self._cursor = (epoch, 0)
        self._pipe = self._build_pipeline(policy_seed(self.seed, epoch, self.rank))
        for _ in range(iteration):  # where DALI's random state was at this iteration
            self._pipe.run()
            self._inflight.popleft()

    def _source(self) -> Union[List[np.ndarray], Tuple[List[np.ndarray], ...]]:
        """Called by DALI for each batch it prefetches: read the files, plan the crops."""
        epoch, iteration = self._cursor
        plan = self._plan(epoch, iteration)
        encoded, sizes = [], []
        for index in plan.indices:
            try:
                with open(self.files.full_path(index), "rb") as f:
                    data = f.read()
                sizes.append(probe_image(data)[1:])
            except (OSError, DataError) as e:
                raise ImageDecodeError(f"cannot decode {self.files.where(index)}: {e}") from None
            encoded.append(np.frombuffer(data, dtype=np.uint8))
        self._inflight.append(plan)
        iteration += 1
        self._cursor = (epoch + 1, 0) if iteration == self.iterations_per_epoch else (
            epoch, iteration)
        if not self.training:
            return encoded
        crops = augmentation_plan(sizes, self.seed, plan.epoch, plan.iteration, self.rank,
                                  self.augmentation)
        return (encoded, [np.array(c[:2], dtype=np.int32) for c in crops],
                [np.array(c[2:4], dtype=np.int32) for c in crops],
                [np.array(c[4], dtype=np.int32) for c in crops])

    def _build_pipeline(self, seed: int) -> Any:
        from nvidia.dali import pipeline_def

        filter_decoder_errors()  # a broken image is named by our line, not DALI's
        # pipeline_def rather than Pipeline: the policies' operators need its conditionals.
        pipe = pipeline_def(self._graph, batch_size=self.batch_size,
                            num_threads=self.num_threads, device_id=self.device_id, seed=seed,
                            prefetch_queue_depth=self.prefetch,
                            enable_conditionals=self._per_epoch_streams)()
        pipe.build()
        return pipe

    def _graph(self) -> Any:
        """The DALI graph: decode (the crop window only, in training), resize, [policy],
        flip, normalise, lay out."""
        from nvidia.dali import fn, types

        gpu = self.device_id is not None
        decoder = {"device": "mixed" if gpu else "cpu", "output_type": types.RGB}
        if gpu and self.decoder_padding is not None:
            decoder.update(device_memory_padding=self.decoder_padding,
                           host_memory_padding=self.decoder_padding)
        device = "gpu" if gpu else "cpu"
        h, w = self.spatial_size
        if self.training:
            data, anchor, shape, mirror = fn.external_source(
                source=self._source, num_outputs=4, batch=True,
                dtype=[types.UINT8, types.INT32, types.INT32, types.INT32], ndim=[1, 1, 1, 0])
            images = fn.decoders.image_slice(
                data, anchor, shape, axis_names="WH", normalized_anchor=False,
                normalized_shape=False, **decoder)
            images = fn.resize(images, device=device, size=[h, w])
            if self._per_epoch_streams:
                images = apply_policy(images, self.augmentation)
        else:
            data = fn.external_source(source=self._source, batch=True, dtype=types.UINT8,
                                      ndim=1)
            images = fn.decoders.image(data, **decoder)
            images = fn.resize(images, device=device,
                               size=list(validation_resize((h, w), self.crop_pct)),
                               mode="not_smaller")
            mirror = 0
        mean, std = NORMALIZATIONS[self.norm]
        return fn.crop_mirror_normalize(
            images, device=device, crop=[h, w], crop_pos_x=0.5, crop_pos_y=0.5,
            mirror=mirror, mean=list(mean), std=list(std),
            dtype=types.FLOAT16 if self.dtype == np.float16 else types.FLOAT,
            output_layout="HWC" if self.channel_last else "CHW",
            pad_output=self.channels == 4)

    def _next_batch(self, epoch: int) -> Batch:
        try:
            (images,) = self._pipe.run()
        except ImageDecodeError:
            self.close()
            raise
        except Exception as e:
            pending = list(self._inflight)
            self.close()
            culprit = self._find_undecodable(pending)
            if culprit is None:
                raise
            raise culprit from e
        plan = self._inflight.popleft()
        return Batch(epoch, plan.iteration, plan.indices,
                     self.files.labels[plan.indices].reshape(-1, 1).astype(np.int32),
                     plan.valid.astype(np.float32).reshape(-1, 1), self.dtype,
                     self.device_id is not None, images)

    def _find_undecodable(self, pending: List[_Planned]) -> Optional[ImageDecodeError]:
        """The first file of the batches in flight that Pillow cannot decode either."""
        seen = set()
        for plan in pending:
            for index in plan.indices:
                if index not in seen:
                    seen.add(index)
                    reason = verify_image(self.files.full_path(index))
                    if reason is not None:
                        return ImageDecodeError(
                            f"cannot decode {self.files.where(index)}: {reason}")
        return None
