"""DALI input pipelines for training and validation, one definition for CPU and GPU.

On a GPU the images are decoded by DALI's "mixed" decoder and processed by GPU operators; on
a CPU-only machine (`device_id=None`) the same graph runs with DALI's CPU operators.

A pipeline is made of parts: the `BatchPlan` (`utils.data.batch_plan`: which images make each
batch, a pure function of (seed, epoch, iteration, rank)), the `ImageFormat` the network takes
(size, channels, layout, precision, normalisation, validation crop), the `DaliOptions` (threads,
prefetch, device) and the training `Augmentation`. What goes into every batch is decided in
Python and fed to DALI through an external source: the plan's images, and for training the
random-resized-crop window and flip of each image, drawn from (seed, epoch, iteration, rank)
and the image's size read from its header, and random erasing's box and noise; DALI only
executes them (decode the window, resize, flip, normalise, paste the noise over the box).

So DALI holds no random state: `state_dict()` is just (epoch, iteration) and restoring it
reproduces the same batches bit for bit, mid-epoch included; changing the resolution is
replacing the format's size. Images are used as shown: the EXIF orientation is applied, as
DALI's decoders do by default (and the official example), and the crop windows refer to the
turned image.

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
from dataclasses import dataclass, replace
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from models import DEFAULT_CROP_PCT, NORMALIZATIONS

from ..labels.file_list import FileList
from ..process.errors import DataError, UsageError
from ..process.memory import available_memory, check_batch_fits
from ..process.native_stderr import filter_decoder_errors
from ..recipe.augmentation import OFFICIAL, Augmentation
from .augmentation import apply_policy, augmentation_plan, erasing_plan, policy_seed
from .batch_plan import BatchPlan, PlannedBatch, Shard
from .image_probe import probe_image, verify_image

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


def validation_resize(spatial_size: SpatialSize, crop_pct: float = DEFAULT_CROP_PCT,
                      val_resize: Optional[int] = None) -> Tuple[int, int]:
    """The (height, width) an image is resized to cover (aspect kept) before the centre crop.

    For a square size s this is resizing the shorter side to `resize_for_crop(s, crop_pct)`;
    `val_resize` N resizes the shorter side to N whatever the size (FixRes: torchvision's
    recipe trains at 176 and tests 224 px after resizing to 232).
    """
    if val_resize is not None:
        return val_resize, val_resize
    h, w = to_hw(spatial_size)
    return resize_for_crop(h, crop_pct), resize_for_crop(w, crop_pct)


def check_val_resize(val_resize: Optional[int], spatial_size: SpatialSize, name: str) -> None:
    """Refuse a validation resize (`name`: the flag or key that set it) whose centre crop
    would not fit."""
    h, w = to_hw(spatial_size)
    if val_resize is not None and val_resize < max(h, w):
        raise UsageError(f"{name} {val_resize} is smaller than the input size {h}x{w}: the "
                         f"centre crop needs a shorter side of at least {max(h, w)}")


def pipeline_bytes(batch_size: int, spatial_size: Tuple[int, int], channels: int,
                   itemsize: int, prefetch: int, resized: Optional[Tuple[int, int]]) -> int:
    """A lower bound of the memory the pipeline's pixels take: for each batch in flight, the
    resized images (uint8 RGB; validation resizes to cover `resized` before its crop) and
    the output. Decoded originals and the network come on top."""
    h, w = spatial_size
    rh, rw = resized or spatial_size
    return batch_size * max(prefetch, 1) * (rh * rw * 3 + h * w * channels * itemsize)


# --------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class ImageFormat:
    """The images as the network takes them: `spatial_size` (one number or height, width),
    `channels` 3 (or 4, a zero 4th channel for mixed-precision NHWC networks), NHWC with
    `channel_last`, float32 or float16, a key of NORMALIZATIONS, and validation's centre crop
    over the resized shorter side (size / crop_pct, or `val_resize` pixels)."""

    spatial_size: Tuple[int, int] = (224, 224)
    channels: int = 3
    channel_last: bool = False
    dtype: np.dtype = np.dtype(np.float32)
    norm: str = "default"
    crop_pct: float = DEFAULT_CROP_PCT
    val_resize: Optional[int] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "spatial_size", to_hw(self.spatial_size))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.channels not in (3, 4):
            raise ValueError(f"channels must be 3 or 4, got {self.channels}")
        if self.norm not in NORMALIZATIONS:
            raise ValueError(f"unknown normalisation '{self.norm}'; choose from "
                             f"{', '.join(NORMALIZATIONS)}")
        if self.dtype not in (np.float32, np.float16):
            raise ValueError(f"dtype must be float32 or float16, got {self.dtype}")
        check_val_resize(self.val_resize, self.spatial_size, "validation resize")

    def batch_shape(self, batch_size: int) -> Tuple[int, ...]:
        """(B, C, H, W), or (B, H, W, C) channel-last."""
        h, w = self.spatial_size
        c = self.channels
        return (batch_size, h, w, c) if self.channel_last else (batch_size, c, h, w)

    def at(self, spatial_size: SpatialSize) -> ImageFormat:
        """This format at another size (progressive resizing)."""
        return replace(self, spatial_size=to_hw(spatial_size))


@dataclass(frozen=True)
class DaliOptions:
    """How DALI runs: worker threads, batches prefetched, the GPU (None: the CPU) and
    nvJPEG's device and host memory padding in bytes (GPU only)."""

    num_threads: int = 4
    prefetch: int = 2
    device_id: Optional[int] = None
    decoder_padding: Optional[int] = None

    @property
    def on_gpu(self) -> bool:
        return self.device_id is not None


# --------------------------------------------------------------------------- batches


# The stream NNabla-CUDA launches its kernels and cuDNN calls on: the NULL handle (it is built
# without per-thread default streams), which is the legacy default stream. DALI takes the
# handle as it is; cudaStreamLegacy's own handle, 1, is DALI's "no stream" and must not be
# passed.
NNABLA_STREAM = ctypes.c_void_p(0)


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
        On a GPU the copy is queued on the stream NNabla computes on (see NNABLA_STREAM): it
        starts after the kernels still reading the previous batch from this buffer and ends
        before the next ones read it. (Given no stream, DALI copies on a stream of its own
        that does not wait for NNabla's, and could overwrite a batch still in use.)
        """
        import nnabla as nn
        from nnabla.ext_utils import get_extension_context

        array = x.data if isinstance(x, nn.Variable) else x
        if tuple(array.shape) != self.image_shape:
            raise ValueError(f"images are {self.image_shape}, input is {array.shape}")
        if self.on_gpu:
            ctx = nn.get_current_context() if ctx is None else ctx
            ptr = array.data_ptr(self.dtype, ctx, write_only=True)
            # non_blocking: DALI's stream, not the host, waits for the copy before DALI
            # reuses its buffer.
            self._images.copy_to_external(ctypes.c_void_p(ptr), cuda_stream=NNABLA_STREAM,
                                          non_blocking=True)
        else:
            ptr = array.data_ptr(self.dtype, get_extension_context("cpu"), write_only=True)
            self._images.as_tensor().copy_to_external(ctypes.c_void_p(ptr))


def check_pipeline_memory(plan: BatchPlan, image: ImageFormat, prefetch: int) -> None:
    """Refuse, before any work, batches whose pixels exceed the memory there is (CPU)."""
    resized = None if plan.training else validation_resize(image.spatial_size, image.crop_pct,
                                                           image.val_resize)
    need = pipeline_bytes(plan.batch_size, image.spatial_size, image.channels,
                          image.dtype.itemsize, prefetch, resized)
    h, w = image.spatial_size
    what = f"{plan.batch_size} image(s) at {h}x{w}" + (
        "" if resized is None else
        f", resized to {resized[0]}x{resized[1]} for the crop" + (
            f" of --crop-pct {image.crop_pct:g}," if image.val_resize is None else ","))
    check_batch_fits(need, available_memory(), what, "lower --spatial-size or -b" + (
        "" if resized is None else ", or raise --crop-pct" if image.val_resize is None
        else ", or lower the validation resize"))


class _Feed:
    """DALI's external source for one stream of batches: reads the planned files (and draws
    the training crops) for each batch DALI prefetches, and keeps what it fed until DALI
    hands the batch out."""

    def __init__(self, plan: BatchPlan, image: ImageFormat, augmentation: Augmentation,
                 epoch: int, iteration: int):
        self.plan, self.image, self.augmentation = plan, image, augmentation
        self.cursor = (epoch, iteration)  # of the next batch to feed
        self.inflight: Deque[PlannedBatch] = collections.deque()

    @property
    def position(self) -> Tuple[int, int]:
        """(epoch, iteration) of the next batch DALI hands out."""
        if self.inflight:
            return self.inflight[0].epoch, self.inflight[0].iteration
        return self.cursor

    def __call__(self) -> Union[List[np.ndarray], Tuple[List[np.ndarray], ...]]:
        plan, files = self.plan, self.plan.files
        planned = plan.batch(*self.cursor)
        encoded, sizes = [], []
        for index in planned.indices:
            try:
                with open(files.full_path(index), "rb") as f:
                    data = f.read()
                sizes.append(probe_image(data)[1:])
            except (OSError, DataError) as e:
                raise ImageDecodeError(f"cannot decode {files.where(index)}: {e}") from None
            encoded.append(np.frombuffer(data, dtype=np.uint8))
        self.inflight.append(planned)
        epoch, iteration = planned.epoch, planned.iteration + 1
        self.cursor = (epoch + 1, 0) if iteration == plan.iterations_per_epoch else (
            epoch, iteration)
        if not plan.training:
            return encoded
        crops = augmentation_plan(sizes, plan.seed, planned.epoch, planned.iteration,
                                  plan.shard.rank, self.augmentation)
        feed = (encoded, [np.array(c[:2], dtype=np.int32) for c in crops],
                [np.array(c[2:4], dtype=np.int32) for c in crops],
                [np.array(c[4], dtype=np.int32) for c in crops])
        if not erases(self.augmentation):
            return feed
        return feed + self._erasing(planned)

    def _erasing(self, planned: PlannedBatch) -> Tuple[List[np.ndarray], ...]:
        """fn.multi_paste's regions and the noise: the whole image, then the fill over the
        box (an empty one for an image kept). Channel-first images are pasted as one
        (C*H, W, 1) plane stack, a region per channel; the fill has a 4th channel of zeros."""
        channels, (height, width) = self.image.channels, self.image.spatial_size
        planes = 1 if self.image.channel_last else channels
        whole = [[0, 0, 0, 0, planes * height, width]]
        in_anchors, out_anchors, shapes, fills = [], [], [], []
        for box, fill in erasing_plan(self.plan.batch_size, self.image.spatial_size,
                                      self.plan.seed, planned.epoch, planned.iteration,
                                      self.plan.shard.rank, self.augmentation):
            y, x, h, w = box or (0, 0, 0, 0)
            if channels == 4:
                fill = np.concatenate([fill, np.zeros_like(fill[..., :1])], axis=-1)
            fill = fill.astype(self.image.dtype).view(_PASTED[self.image.dtype.type])
            regions = np.array(whole + [[c * h, 0, c * height + y, x, h, w]
                                        for c in range(planes)], np.int32)
            in_anchors.append(np.ascontiguousarray(regions[:, 0:2]))
            out_anchors.append(np.ascontiguousarray(regions[:, 2:4]))
            shapes.append(np.ascontiguousarray(regions[:, 4:6]))
            fills.append(fill if self.image.channel_last else
                         np.ascontiguousarray(fill.transpose(2, 0, 1)).reshape(planes * h, w, 1))
        return in_anchors, out_anchors, shapes, fills


# multi_paste's type for each image dtype: float16 has none, its bits are pasted as int16.
_PASTED = {np.float32: np.float32, np.float16: np.int16}


def erases(augmentation: Augmentation) -> bool:
    return augmentation.random_erasing > 0


def dali_graph(feed: _Feed, image: ImageFormat, dali: DaliOptions, training: bool,
               augmentation: Augmentation) -> Any:
    """The DALI graph: decode (the crop window only, in training), resize, [the policy of
    `augmentation`, in training], flip, normalise, lay out, [random erasing, in training]."""
    from nvidia.dali import fn, types

    decoder = {"device": "mixed" if dali.on_gpu else "cpu", "output_type": types.RGB}
    if dali.on_gpu and dali.decoder_padding is not None:
        decoder.update(device_memory_padding=dali.decoder_padding,
                       host_memory_padding=dali.decoder_padding)
    device = "gpu" if dali.on_gpu else "cpu"
    h, w = image.spatial_size
    layout = "HWC" if image.channel_last else "CHW"
    dtype = types.FLOAT16 if image.dtype == np.float16 else types.FLOAT
    erasing = training and erases(augmentation)
    if training:
        data, anchor, shape, mirror, *erased = fn.external_source(
            source=feed, num_outputs=8 if erasing else 4, batch=True,
            dtype=[types.UINT8, types.INT32, types.INT32, types.INT32] + (
                [types.INT32] * 3 + [types.to_dali_type(_PASTED[image.dtype.type])]
                if erasing else []),
            ndim=[1, 1, 1, 0] + ([2, 2, 2, 3] if erasing else []),
            layout=["", "", "", ""] + (["", "", "", "HWC"] if erasing else []))
        images = fn.decoders.image_slice(
            data, anchor, shape, axis_names="WH", normalized_anchor=False,
            normalized_shape=False, **decoder)
        images = fn.resize(images, device=device, size=[h, w])
        if augmentation.policy != "none":
            images = apply_policy(images, augmentation)
    else:
        data = fn.external_source(source=feed, batch=True, dtype=types.UINT8, ndim=1)
        images = fn.decoders.image(data, **decoder)
        images = fn.resize(images, device=device,
                           size=list(validation_resize((h, w), image.crop_pct,
                                                       image.val_resize)),
                           mode="not_smaller")
        mirror = 0
    mean, std = NORMALIZATIONS[image.norm]
    images = fn.crop_mirror_normalize(
        images, device=device, crop=[h, w], crop_pos_x=0.5, crop_pos_y=0.5,
        mirror=mirror, mean=list(mean), std=list(std),
        dtype=dtype, output_layout=layout, pad_output=image.channels == 4)
    if not erasing:
        return images
    # Not fn.erase: it fills with constants only. The noise drawn in Python (resumable) is
    # pasted over the box by multi_paste (HWC only: a channel-first image is a plane stack).
    in_anchors, out_anchors, shapes, fill = erased
    if dali.on_gpu:
        fill = fill.gpu()
    planes = 1 if image.channel_last else image.channels
    canvas = fn.reinterpret(images, dtype=types.to_dali_type(_PASTED[image.dtype.type]),
                            shape=[planes * h, w, image.channels // planes], layout="HWC")
    pasted = fn.multi_paste(canvas, *[fill] * planes, in_anchors=in_anchors,
                            out_anchors=out_anchors, shapes=shapes,
                            output_size=[planes * h, w], device=device)
    return fn.reinterpret(pasted, dtype=dtype, shape=list(image.batch_shape(1)[1:]),
                          layout=layout)


class ImageBatches:
    """This rank's batches of a split, epoch by epoch, from a DALI pipeline: the batches of
    `plan` in `image`'s format, run as `dali` says, augmented (in training) by
    `augmentation`."""

    def __init__(self, plan: BatchPlan, image: ImageFormat = ImageFormat(),
                 dali: DaliOptions = DaliOptions(), augmentation: Augmentation = OFFICIAL):
        self.plan, self.image, self.dali, self.augmentation = plan, image, dali, augmentation
        # A policy draws from DALI's random state: its pipeline starts afresh every epoch
        # with a seed of (seed, epoch, rank), and a resumed epoch replays the batches before.
        self._per_epoch_streams = plan.training and augmentation.policy != "none"
        self._stream_epoch = -1
        self._epoch, self._iteration = 0, 0
        self._pipe: Any = None
        self._feed: Optional[_Feed] = None
        if not dali.on_gpu:  # (on a GPU the pixels are in its memory)
            check_pipeline_memory(plan, image, dali.prefetch)

    @property
    def image_shape(self) -> Tuple[int, ...]:
        """Shape of a batch of images."""
        return self.image.batch_shape(self.plan.batch_size)

    @property
    def iterations_per_epoch(self) -> int:
        return self.plan.iterations_per_epoch

    def __len__(self) -> int:
        return self.plan.iterations_per_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of `epoch`, from the restored iteration if `epoch` is the restored one.

        A yielded batch counts as consumed: `state_dict()` taken while holding it resumes
        with the next one.
        """
        start = self._iteration if epoch == self._epoch else 0
        self._epoch, self._iteration = epoch, start
        position = self._feed.position if self._feed is not None else None
        # Validation passes are all alike: a pipeline already prefetching one is reused.
        reusable = position is not None and (
            position == (epoch, start) or (not self.plan.training and position[1] == start))
        if self._per_epoch_streams and self._stream_epoch != epoch:
            reusable = False
        if self._pipe is None or not reusable:
            self._start_stream(epoch, start)
        while self._iteration < self.plan.iterations_per_epoch:
            batch = self._next_batch(epoch)
            self._iteration += 1
            yield batch
        self._epoch, self._iteration = epoch + 1, 0

    def set_spatial_size(self, spatial_size: SpatialSize) -> None:
        """Make the batches `spatial_size` from the next one on, continuing from the same
        position (progressive resizing). A DALI pipeline is built for one size: a new size
        starts a new one."""
        image = self.image.at(spatial_size)
        if image == self.image:
            return
        if not self.dali.on_gpu:
            check_pipeline_memory(self.plan, image, self.dali.prefetch)
        self.close()
        self.image = image

    def state_dict(self) -> Dict[str, Any]:
        """Where the next batch comes from, plus what it depends on (JSON-serialisable)."""
        return {"epoch": self._epoch, "iteration": self._iteration, **self.plan.layout}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue exactly where `state_dict()` was taken (see `BatchPlan.position_of`)."""
        self._epoch, self._iteration = self.plan.position_of(state)

    def close(self) -> None:
        """Release the DALI pipeline (its threads and buffers)."""
        self._pipe = self._feed = None

    def __enter__(self) -> ImageBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the DALI side

    def _start_stream(self, epoch: int, iteration: int) -> None:
        from nvidia.dali import pipeline_def

        self.close()
        self._stream_epoch = epoch
        policy = self._per_epoch_streams
        seed = policy_seed(self.plan.seed, epoch, self.plan.shard.rank) if policy else \
            self.plan.seed + self.plan.shard.rank
        self._feed = _Feed(self.plan, self.image, self.augmentation, epoch,
                           0 if policy else iteration)
        filter_decoder_errors()  # a broken image is named by our line, not DALI's
        # pipeline_def rather than Pipeline: the policies' operators need its conditionals.
        self._pipe = pipeline_def(
            dali_graph, batch_size=self.plan.batch_size, num_threads=self.dali.num_threads,
            device_id=self.dali.device_id, seed=seed, prefetch_queue_depth=self.dali.prefetch,
            enable_conditionals=policy)(
                self._feed, self.image, self.dali, self.plan.training, self.augmentation)
        self._pipe.build()
        if policy:
            for _ in range(iteration):  # where DALI's random state was at this iteration
                self._pipe.run()
                self._feed.inflight.popleft()

    def _next_batch(self, epoch: int) -> Batch:
        try:
            (images,) = self._pipe.run()
        except ImageDecodeError:
            self.close()
            raise
        except Exception as e:
            pending = list(self._feed.inflight)
            self.close()
            culprit = self._find_undecodable(pending)
            if culprit is None:
                raise
            raise culprit from e
        planned = self._feed.inflight.popleft()
        labels = self.plan.files.labels[planned.indices].reshape(-1, 1).astype(np.int32)
        return Batch(epoch, planned.iteration, planned.indices, labels,
                     planned.valid.astype(np.float32).reshape(-1, 1), self.image.dtype,
                     self.dali.on_gpu, images)

    def _find_undecodable(self, pending: List[PlannedBatch]) -> Optional[ImageDecodeError]:
        """The first file of the batches in flight that Pillow cannot decode either."""
        files, seen = self.plan.files, set()
        for planned in pending:
            for index in planned.indices:
                if index not in seen:
                    seen.add(index)
                    reason = verify_image(files.full_path(index))
                    if reason is not None:
                        return ImageDecodeError(f"cannot decode {files.where(index)}: {reason}")
        return None


@dataclass(frozen=True)
class InputPipeline:
    """The options a script's flags and runtime decide, shared by its splits: the format,
    how DALI runs and this rank's shard; `batches` adds a split's own."""

    image: ImageFormat
    dali: DaliOptions = DaliOptions()
    shard: Shard = Shard()

    def formatted(self, **changes: Any) -> InputPipeline:
        """These options with `changes` to the image format (layout, channels, norm, ...)."""
        return replace(self, image=replace(self.image, **changes))

    def batches(self, files: FileList, batch_size: int, training: bool, seed: int = 0,
                augmentation: Augmentation = OFFICIAL) -> ImageBatches:
        """`files` in batches of `batch_size` per rank (see `BatchPlan`); in training, each
        image `augmentation.repeated_augmentation` times a cycle of that many epochs."""
        plan = BatchPlan(files, batch_size, training, seed, self.shard,
                         augmentation.repeated_augmentation if training else 1)
        return ImageBatches(plan, self.image, self.dali, augmentation)
