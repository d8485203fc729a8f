"""A network run by ONNX Runtime: the CPU's fast path for evaluation and inference.

NNabla's CPU backend runs one thread; the same network, exported by `utils.deploy.export` and
run by ONNX Runtime, runs several times faster on the same cores (docs/evaluation.md). The
model is exported the project's one way (test mode, NCHW, normalised RGB in, logits out),
verified against NNabla on a seeded batch as `export.py` verifies, and kept in the cache
folder of the published weights under a name made of the weight file's content digest, the
network's shape and the version of the export's graph rewrites, so a second run (or another
rank) reuses it and a changed file gets a new export.
"""
from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from ..process.comm import Communicator
from ..weights.download import cache_dir
from ..weights.files import WeightFile
from .export import (
    DEFAULT_OPSET,
    DEFAULT_TOLERANCE,
    Check,
    build_inference_graph,
    check_onnx_support,
    export,
    load_weights,
    onnxruntime_name,
)
from .onnx_graph import GRAPH_REVISION
from .quantize import QUANTIZE_OPSET, Calibration, int8_model

DIGEST_CHARS = 16  # of the weight file's SHA-256 in the model's name


def file_digest(path: str) -> str:
    """SHA-256 of a file's content, read in blocks (a weight file is up to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelKey:
    """What an exported model depends on: the weights' content, the graph's shape and the
    version of the export's graph rewrites."""

    weights_digest: str
    arch: str
    num_classes: int
    batch_size: int
    spatial_size: Tuple[int, int]
    opset: int = DEFAULT_OPSET
    graph_revision: int = GRAPH_REVISION

    def file_name(self) -> str:
        height, width = self.spatial_size
        return (f"{self.arch}-{self.weights_digest[:DIGEST_CHARS]}-{self.num_classes}c-"
                f"b{self.batch_size}-{height}x{width}-opset{self.opset}-g{self.graph_revision}"
                ".onnx")


def onnx_cache_dir() -> str:
    return os.path.join(cache_dir(), "onnx")


def onnx_model(weights: WeightFile, arch: str, num_classes: int, batch_size: int,
               spatial_size: Tuple[int, int], folder: Optional[str] = None,
               tolerance: float = DEFAULT_TOLERANCE, opset: int = DEFAULT_OPSET
               ) -> Tuple[str, Optional[Check]]:
    """The verified ONNX model of `weights` as `arch` for batches of `batch_size` at
    `spatial_size` (`opset` 13 for a model to quantize per channel): (its path, the check of
    a new export; None when it was cached)."""
    check_onnx_support()
    key = ModelKey(file_digest(weights.path), arch, num_classes, batch_size,
                   tuple(spatial_size), opset)
    path = os.path.join(folder or onnx_cache_dir(), key.file_name())
    if os.path.isfile(path):
        return path, None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    graph = build_inference_graph(arch, num_classes, batch_size, key.spatial_size)
    load_weights(graph, weights)
    (exported,) = export(graph, [path], key.opset, tolerance)  # (written atomically)
    return path, exported.check


def threads_per_rank(ranks_on_node: int, cores: Optional[int] = None) -> int:
    """The cores this process may use, shared evenly among the ranks of its machine."""
    if cores is None:
        cores = len(os.sched_getaffinity(0))
    return max(1, cores // max(1, ranks_on_node))


def threads_for(comm: Communicator) -> int:
    """This rank's share of its machine's cores (the ranks on one host found by name)."""
    hosts = comm.all_gather_object(socket.gethostname())
    return threads_per_rank(hosts.count(hosts[comm.rank]))


class OnnxNetwork:
    """An exported model in an ONNX Runtime session on the CPU with `threads` threads."""

    def __init__(self, path: str, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(path, options,
                                                    providers=["CPUExecutionProvider"])
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape: Sequence[int] = tuple(first.shape)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The network's outputs for a batch of normalised NCHW float32 images."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(
            images, dtype=np.float32)})[0]


def onnx_network(weights: WeightFile, arch: str, num_classes: int,
                 image_shape: Sequence[int], comm: Communicator,
                 log: Callable[[str], None],
                 calibration: Optional[Calibration] = None) -> OnnxNetwork:
    """The ONNX Runtime network for batches of `image_shape` (NCHW): exported by rank 0
    while the others wait (then found in the cache), run with this machine's cores shared
    among its ranks. With a `calibration`, the INT8 model quantized from the float model
    (opset 13) on those images, cached in the same way."""
    batch, _, height, width = image_shape
    opset = DEFAULT_OPSET if calibration is None else QUANTIZE_OPSET

    def model() -> Tuple[str, str]:
        path, check = onnx_model(weights, arch, num_classes, batch, (height, width),
                                 opset=opset)
        made = f"exported and verified: {check.summary()}" if check else "cached"
        if calibration is None:
            return path, made
        path, calibrated = int8_model(path, calibration)
        return path, (f"float model {made}; INT8 model " + (
            f"quantized on {calibrated} images ({calibration.describe()})" if calibrated
            else "cached"))

    if comm.is_main:
        path, made = model()
    comm.barrier()
    if not comm.is_main:
        path, made = model()
    threads = threads_for(comm)
    log(f"{onnxruntime_name()}, {threads} thread(s) per rank: {path} ({made})")
    return OnnxNetwork(path, threads)
