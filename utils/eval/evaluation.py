"""The one evaluation loop (validation.py, and train.py between epochs) and its network.

`build_evaluation_graph` builds an architecture in test mode on an input Variable of the
batches' shape, with the loss (no label smoothing) and the top-1 / top-5 error counts of the
samples whose mask is 1, optionally over a subset of the classes (ImageNet-A/-R). Built
after a training graph, it shares that graph's parameters (they are found by name), so
train.py validates the weights it is training. `evaluate` runs it over one epoch of
`ImageBatches` and sums the counts over ranks: every image is counted exactly once whatever
the dataset size, batch size and number of ranks. Observers (per-class counts,
ReaL hits) see each batch's scores on the host and are summed over ranks the same way.

`network_for_weights` is the set-up infer.py and validation.py share to run a weight file:
its layout, input channels and class count are read from the file, not from flags.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Dict, Iterator, Optional, Protocol, Sequence, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np

from models import build_network

from ..data.batch_plan import Shard
from ..data.pipelines import ImageBatches, InputPipeline
from ..deploy.nnp_model import NnpModel, NnpNetwork
from ..deploy.quantize import (
    DEFAULT_CALIBRATION_IMAGES,
    Calibration,
    calibration_digest,
    calibration_files,
)
from ..labels.file_list import FileList
from ..process.comm import Communicator
from ..process.context import float_context
from ..process.errors import NonFiniteOutputs, UsageError
from ..process.progress import Progress
from ..process.runtime import Runtime
from ..process.watchdog import heartbeat
from ..weights.files import WeightFile, runnable_layout
from ..weights.published import norm_warning
from .losses import smoothed_cross_entropy, top_n_error_count
from .sets import RealErrors

TOP_K = 5
# Device sums are moved to float64 host sums this often (a GPU waits for nothing meanwhile).
FLUSH_EVERY = 10


@dataclass
class EvaluationGraph:
    """Inputs to fill per batch and outputs of the evaluation network."""

    image: nn.Variable  # (B, C, H, W) or (B, H, W, C)
    label: nn.Variable  # int (B, 1)
    mask: nn.Variable  # float (B, 1): 1 counts the sample, 0 is padding
    scores: nn.Variable  # (B, K): the logits, masked-out classes at MASKED_SCORE
    probabilities: nn.Variable  # softmax of the scores, float32
    sums: nn.Variable  # (3,): masked sum of losses, top-1 errors, top-5 errors
    ctx: Any  # the network's context (where images are copied to)
    # Another runtime's network (images -> logits on the host), set into `logits` before
    # each forward pass; None: NNabla's network in the graph computes them.
    external: Optional[Callable[[np.ndarray], np.ndarray]] = None
    logits: Optional[nn.Variable] = None

    @property
    def batch_size(self) -> int:
        return self.image.shape[0]

    def forward(self, output: nn.Variable) -> None:
        """Compute `output` (the sums, the probabilities) for the batch in `image`."""
        if self.external is not None:
            self.logits.d = self.external(self.image.d)
        output.forward(clear_buffer=True)


@dataclass(frozen=True)
class EvaluationResult:
    """Mean loss and error rates over every image of the split, on all ranks together."""

    loss: float
    top1_error: float
    top5_error: float
    num_images: int
    seconds: float
    real: Optional[RealErrors] = None  # ImageNet-ReaL's errors, when its labels were given

    @property
    def images_per_second(self) -> float:
        return self.num_images / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> Dict[str, float]:
        return {**asdict(self), "images_per_second": self.images_per_second}

    def summary(self) -> str:
        real = "" if self.real is None else (
            f", ReaL top-1 error {100 * self.real.top1_error:.2f} %, top-5 error "
            f"{100 * self.real.top5_error:.2f} % ({self.real.num_images} images with ReaL "
            "labels)")
        return (f"{self.num_images} images: top-1 error {100 * self.top1_error:.2f} %, "
                f"top-5 error {100 * self.top5_error:.2f} %, loss {self.loss:.4f}{real} "
                f"({self.images_per_second:.1f} images/s)")


class BatchObserver(Protocol):
    """Sees each batch's scores on the host (per-class counts, ReaL hits); summed over ranks
    at the end of the evaluation."""

    def add(self, scores: np.ndarray, batch: Any) -> None: ...

    def all_reduce(self, comm: Communicator) -> None: ...


def build_evaluation_graph(
    arch: str,
    image_shape: Sequence[int],
    num_classes: int,
    channel_last: bool = False,
    ctx: Any = None,
    class_penalty: Optional[np.ndarray] = None,
    external: Optional[Callable[[np.ndarray], np.ndarray]] = None,
    flip: bool = False,
) -> EvaluationGraph:
    """The test-mode network of `arch` on images of `image_shape`, with its metrics.

    The network runs in `ctx` (default: the current context); loss, errors and
    probabilities are computed in float32 even when the network runs in half precision.
    `class_penalty` (1, K), if given, is added to the logits (see `ClassMask.penalty`).
    `external` (images -> logits, e.g. `utils.deploy.onnx_runtime.OnnxNetwork.logits`) replaces
    NNabla's network: the graph then holds the metrics alone, on logits set per batch.
    `flip`: test-time augmentation, the logits of each image and of its mirror averaged.
    """
    ctx = nn.get_current_context() if ctx is None else ctx
    batch = image_shape[0]
    logits = None
    with nn.context_scope(ctx):
        image = nn.Variable(tuple(image_shape))
        if external is None:
            scores, _ = build_network(image, num_classes, arch, test=True,
                                      channel_last=channel_last)
            if flip:  # (the second network shares the first's parameters, found by name)
                mirror = F.flip(image, axes=[2 if channel_last else 3])
                mirrored, _ = build_network(mirror, num_classes, arch, test=True,
                                            channel_last=channel_last)
                scores = (scores + mirrored) * 0.5
    if external is not None:
        if flip:
            network = external

            def external(images: np.ndarray) -> np.ndarray:  # (NCHW: width is the last axis)
                return (network(images) + network(images[..., ::-1])) * 0.5

        with nn.context_scope(float_context(ctx)):
            scores = logits = nn.Variable((batch, num_classes))
    label = nn.Variable((batch, 1))
    mask = nn.Variable((batch, 1))
    mask.d = 1
    with nn.context_scope(float_context(ctx)):
        if class_penalty is not None:
            penalty = nn.Variable.from_numpy_array(class_penalty)
            scores = scores + F.broadcast(penalty, scores.shape)
        scores.persistent = True  # read after the metrics' forward pass (observers)
        loss = F.sum(smoothed_cross_entropy(scores, label) * mask)
        top1 = top_n_error_count(scores, label, 1, mask)
        top5 = top_n_error_count(scores, label, min(TOP_K, num_classes), mask)
        sums = F.stack(loss, top1, top5)
        probabilities = F.softmax(scores, axis=1)
    return EvaluationGraph(image, label, mask, scores, probabilities, sums, ctx, external, logits)


def evaluate(
    graph: EvaluationGraph,
    batches: ImageBatches,
    comm: Communicator,
    epoch: int = 0,
    progress: bool = True,
    description: str = "Validation",
    observers: Sequence[BatchObserver] = (),
) -> EvaluationResult:
    """Loss and top-1/top-5 error of `graph` over epoch `epoch` of `batches`, all ranks.

    Padding slots (mask 0) are not counted, so the result is over exactly the split's images.
    The progress bar (rank 0, unless `progress` is False) shows the rate, the ETA and rank
    0's running loss and top-1 error. Each of `observers` sees every batch and is summed
    over ranks.
    """
    if tuple(batches.image_shape) != tuple(graph.image.shape):
        raise ValueError(f"batches of {batches.image_shape} for a network input of "
                         f"{graph.image.shape}")
    bar = Progress(comm, len(batches), description,
                   images_per_iteration=batches.plan.global_batch) \
        if progress else None
    host = np.zeros(4, np.float64)  # loss, top-1, top-5, images
    start = time.perf_counter()
    with nn.context_scope(float_context(graph.ctx)):
        device = nn.NdArray((3,))
        device.zero()
        pending, flushed = 0, 0.0  # batches not yet summed on the host; images that are
        for batch in batches.epoch(epoch):
            batch.copy_to(graph.image, graph.ctx)
            graph.label.d = batch.labels
            graph.mask.d = batch.mask
            graph.forward(graph.sums)
            device += graph.sums.data
            for observer in observers:
                observer.add(graph.scores.d, batch)
            host[3] += batch.num_valid
            pending += 1
            if pending == FLUSH_EVERY or batch.iteration + 1 == len(batches):
                host[:3] += device.data
                device.zero()
                pending = 0
                flushed = host[3]
            if bar is not None:
                bar.update(**({"loss": host[0] / flushed, "top1_error": host[1] / flushed}
                              if flushed else {}))
            heartbeat()
    if bar is not None:
        bar.close()
    loss, top1, top5, count = comm.all_reduce_sum(host.tolist())
    for observer in observers:
        observer.all_reduce(comm)
    count = int(round(count))
    if count != batches.plan.num_samples:
        raise RuntimeError(f"evaluated {count} images of {batches.plan.num_samples}")
    check_finite_outputs(loss, description)
    return EvaluationResult(loss / count, top1 / count, top5 / count, count,
                            time.perf_counter() - start)


def check_finite_outputs(loss_sum: float, description: str) -> None:
    """A NaN logit counts as no error in the top-n error, so a network whose outputs
    overflowed would be reported as 0 % wrong: refuse it."""
    if not math.isfinite(loss_sum):
        raise NonFiniteOutputs(f"{description}: the network's outputs are not finite (loss "
                               f"{loss_sum}); its errors would be meaningless (in half "
                               "precision, try -t float)")


@dataclass(frozen=True)
class CalibrationSource:
    """The images an INT8 model is calibrated on (--calibration, --calibration-root,
    --calibration-images)."""

    source: str  # a list file or a folder of images
    root: Optional[str] = None  # the list's image folder (None: the list's own folder)
    count: int = DEFAULT_CALIBRATION_IMAGES


def calibration_of(pipeline: InputPipeline, source: CalibrationSource, batch_size: int
                   ) -> Calibration:
    """The calibration of `source`: its sampled images, preprocessed
    by `pipeline` (validation's resize and crop, its normalisation, NCHW float32) in batches
    of the model's `batch_size`, all of them on every rank."""
    whole = replace(pipeline.formatted(channels=3, channel_last=False, dtype=np.float32),
                    shard=Shard())
    files = calibration_files(source.source, source.root, source.count)

    def batches() -> Iterator[np.ndarray]:
        with whole.batches(files, batch_size, training=False) as loaded:
            images = nn.NdArray(loaded.image_shape)
            for batch in loaded.epoch(0):
                batch.copy_to(images)
                yield images.data.copy()

    return Calibration(files, calibration_digest(files, repr(whole.image)), batches)


def network_for_weights(
    weights: WeightFile,
    arch: str,
    num_classes: int,
    files: FileList,
    batch_size: int,
    runtime: Runtime,
    pipeline: InputPipeline,
    class_penalty: Optional[np.ndarray] = None,
    engine: str = "nnabla",
    flip: bool = False,
    calibration: Optional[CalibrationSource] = None,
) -> Tuple[ImageBatches, EvaluationGraph]:
    """Batches of `files` and the evaluation network of `arch` with `weights` loaded.

    Both in the layout this machine runs (see `runnable_layout`), in `pipeline`'s other
    options (see `utils.cli.flags.input_pipeline`; its normalisation included). Logs what was
    loaded and warns (rank 0) when a published file is run with another normalisation than
    its own. `engine` "onnxruntime" (--runtime): the network is the weight file's exported
    ONNX model (`utils.deploy.onnx_runtime`; NCHW, 3 channels), NNabla computes the metrics;
    "onnxruntime-int8": that model quantized to INT8 on the `calibration` images.
    `flip`: the logits of each image and its mirror averaged (test-time augmentation).
    """
    if engine in ("onnxruntime", "onnxruntime-int8"):
        from ..deploy.onnx_runtime import onnx_network

        pipeline = pipeline.formatted(channels=3, channel_last=False)
        batches = pipeline.batches(files, batch_size, training=False)
        calibrated = None
        if engine == "onnxruntime-int8":
            if calibration is None:
                raise UsageError("--runtime onnxruntime-int8 needs --calibration: a list file "
                                 "or a folder of training images")
            calibrated = calibration_of(pipeline, calibration, batch_size)
        network = onnx_network(weights, arch, num_classes, batches.image_shape, runtime.comm,
                               runtime.log, calibrated)
        graph = build_evaluation_graph(arch, batches.image_shape, num_classes, False,
                                       runtime.ctx, class_penalty, external=network.logits,
                                       flip=flip)
        runtime.log(weights.describe(num_classes, None))
    else:
        layout = runnable_layout(weights.layout, on_gpu=runtime.backend != "cpu")
        pipeline = pipeline.formatted(channels=layout.channels,
                                      channel_last=layout.channel_last)
        batches = pipeline.batches(files, batch_size, training=False)
        graph = build_evaluation_graph(arch, batches.image_shape, num_classes,
                                       layout.channel_last, runtime.ctx, class_penalty, flip=flip)
        note = weights.load_into(arch)
        runtime.log(weights.describe(num_classes, note))
    warning = norm_warning(weights.path, pipeline.image.norm)
    if warning and runtime.comm.is_main:
        print(warning, file=sys.stderr)
    return batches, graph


def network_for_nnp(
    model: NnpModel,
    files: FileList,
    batch_size: int,
    runtime: Runtime,
    pipeline: InputPipeline,
    class_penalty: Optional[np.ndarray] = None,
    flip: bool = False,
) -> Tuple[ImageBatches, EvaluationGraph]:
    """Batches of `files` and the evaluation metrics on an NNP file's network (run by NNabla
    on the host): its input size, layout and, where the file says them, its normalisation
    and crop; `pipeline`'s (the flags') otherwise."""
    said = {key: value for key, value in (("norm", model.norm), ("crop_pct", model.crop_pct))
            if value is not None}
    pipeline = pipeline.formatted(channels=3, channel_last=False, dtype=np.float32,
                                  spatial_size=model.spatial_size, **said)
    batches = pipeline.batches(files, batch_size, training=False)
    network = NnpNetwork(model, batch_size)

    def logits(images: np.ndarray) -> np.ndarray:  # (the batches are NCHW)
        return network.logits(images.transpose(0, 2, 3, 1) if model.channel_last else images)

    graph = build_evaluation_graph("nnp", batches.image_shape, model.num_classes, False,
                                   runtime.ctx, class_penalty, external=logits, flip=flip)
    runtime.log(model.describe() + f"; preprocessing {pipeline.image.norm} norm, crop "
                f"{pipeline.image.crop_pct:g}")
    return batches, graph
