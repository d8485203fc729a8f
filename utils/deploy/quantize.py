"""INT8 models: ONNX Runtime's post-training static quantization of an exported float model.

Why ONNX Runtime's quantizer and not NNabla's converter: the converter quantizes only on its
TFLite path (which needs TensorFlow) and exports float ONNX. ONNX Runtime runs calibration
images through the float model, fixes each activation's range from them, and writes a QDQ
model (QuantizeLinear/DequantizeLinear pairs that its CPU provider fuses into INT8 kernels).

Choices, for convolutional networks on x86: weights int8 per output channel (needs opset 13),
activations uint8 per tensor, ranges the calibration images' min and max; 7-bit weights
(`reduce_range`) where the CPU lacks VNNI, whose u8 x s8 multiply-adds can saturate on AVX2
alone. The model is shape-inferred and optimised first (`quant_pre_process`), as ONNX Runtime
recommends.

The calibration images are a seeded sample of a list file or an image folder, preprocessed by
the caller (the project's validation preprocessing); the INT8 model is cached beside the float
model under a name made of the float model's and of a digest of the calibration (the images'
content, their order and the preprocessing), so another calibration set gets another model.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Tuple

import numpy as np

from ..labels.file_list import FileList, read_file_list
from ..labels.image_folders import is_image_name
from ..process.atomic import atomic_path
from ..process.errors import UsageError

DEFAULT_CALIBRATION_IMAGES = 300
CALIBRATION_SEED = 0
QUANTIZE_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (an axis) needs opset 13
DIGEST_CHARS = 16


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU multiplies u8 x s8 without saturating (AVX-512 VNNI or AVX-VNNI)."""
    try:
        with open(cpuinfo) as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni"})


def calibration_files(source: str, root: Optional[str] = None,
                      count: int = DEFAULT_CALIBRATION_IMAGES,
                      flag: str = "--calibration") -> FileList:
    """A seeded sample of `count` images (all, when fewer) of a list file (paths relative to
    `root`, by default the list's folder) or of the images under a folder; sorted, so the
    sample, and with it the INT8 model, depends on the set alone. A list sorted by class
    would give the first classes only without the sample."""
    if os.path.isdir(source):
        paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(source)
                       for name in names if is_image_name(name))
        if not paths:
            raise UsageError(f"{flag} {source}: no images in this folder")
        files = FileList.from_files(paths)
    elif os.path.isfile(source):
        files = read_file_list(source, root if root is not None
                               else os.path.dirname(os.path.abspath(source)), flag=flag)
        if not len(files):
            raise UsageError(f"{flag} {source}: the list names no images")
    else:
        raise UsageError(f"{flag} {source}: no such list file or folder")
    if len(files) <= count:
        return files
    chosen = np.sort(np.random.RandomState(CALIBRATION_SEED).choice(len(files), count,
                                                                    replace=False))
    return FileList(files.root, [files.paths[i] for i in chosen], files.labels[chosen],
                    files.source, None if files.line_numbers is None
                    else files.line_numbers[chosen])


def calibration_digest(files: FileList, preprocessing: str) -> str:
    """SHA-256 of the calibration: each image's name and content, in order, and the
    preprocessing that turns them into the network's inputs."""
    digest = hashlib.sha256(preprocessing.encode())
    for i, path in enumerate(files.paths):
        digest.update(f"\n{path}\n".encode())
        with open(files.full_path(i), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Calibration:
    """The calibration images and how to read them as the model's input batches."""

    files: FileList
    digest: str  # of the images and their preprocessing (`calibration_digest`)
    batches: Callable[[], Iterable[np.ndarray]]  # normalised NCHW float32, the model's batch

    def describe(self) -> str:
        where = self.files.source or (os.path.dirname(self.files.paths[0]) if self.files.paths
                                      else "")
        return f"{len(self.files)} calibration images from {where}"


def int8_model_name(float_model: str, calibration_digest: str, reduce_range: bool) -> str:
    """The INT8 model's file name: the float model's, the calibration's digest, the weights'
    bits (7 with `reduce_range`)."""
    stem = os.path.splitext(os.path.basename(float_model))[0]
    bits = "int7w" if reduce_range else "int8"
    return f"{stem}-{bits}-cal{calibration_digest[:DIGEST_CHARS]}.onnx"


class _Batches:
    """ONNX Runtime's CalibrationDataReader over batches of normalised NCHW images."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self._input = input_name
        self._batches: Iterator[np.ndarray] = iter(batches)
        self.count = 0

    def get_next(self) -> Optional[dict]:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += batch.shape[0]
        return {self._input: np.ascontiguousarray(batch, dtype=np.float32)}


def quantize_model(float_model: str, output: str, calibration: Iterable[np.ndarray],
                   reduce_range: Optional[bool] = None) -> int:
    """Write the INT8 model of `float_model` (opset 13) to `output`, atomically, with its
    activation ranges measured on the `calibration` batches (of the model's input shape);
    returns the number of calibration images run."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise ValueError("no calibration images")
    input_name = onnx.load_model(float_model, load_external_data=False).graph.input[0].name
    reader = _Batches(input_name, itertools.chain([first], batches))
    quantizer_log = logging.getLogger("onnxruntime.quantization")
    level = quantizer_log.level
    quantizer_log.setLevel(logging.WARNING)  # (its INFO names the temporary files)
    with tempfile.TemporaryDirectory(prefix="quantize-") as scratch, \
            contextlib.ExitStack() as restore:
        restore.callback(quantizer_log.setLevel, level)
        prepared = os.path.join(scratch, "prepared.onnx")
        quant_pre_process(float_model, prepared)
        with atomic_path(output, ".onnx") as tmp:
            quantize_static(prepared, tmp, reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8,
                            reduce_range=not cpu_has_vnni() if reduce_range is None
                            else reduce_range,
                            calibrate_method=CalibrationMethod.MinMax)
    return reader.count


def int8_model(float_model: str, calibration: Calibration, folder: Optional[str] = None,
               reduce_range: Optional[bool] = None) -> Tuple[str, int]:
    """The cached INT8 model of `float_model` for `calibration` (made when missing, beside
    the float model unless `folder`): (its path, the number of images calibrated on, 0 when
    it was cached)."""
    reduce = not cpu_has_vnni() if reduce_range is None else reduce_range
    path = os.path.join(folder or os.path.dirname(float_model),
                        int8_model_name(float_model, calibration.digest, reduce))
    if os.path.isfile(path):
        return path, 0
    return path, quantize_model(float_model, path, calibration.batches(), reduce)


@dataclass(frozen=True)
class Agreement:
    """How closely the INT8 model's logits follow the float model's on the same images."""

    images: int
    top1_agreements: int
    mean_cosine: float

    def summary(self) -> str:
        return (f"INT8 vs float on {self.images} calibration images: top-1 equal for "
                f"{self.top1_agreements}/{self.images}, mean cosine of the logits "
                f"{self.mean_cosine:.4f}")


def agreement(float_logits: np.ndarray, int8_logits: np.ndarray) -> Agreement:
    """Top-1 agreements and the mean cosine similarity of two models' logits, row by row."""
    a, b = float_logits.astype(np.float64), int8_logits.astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.maximum(norms, np.finfo(np.float64).tiny)
    return Agreement(a.shape[0], int(np.sum(a.argmax(1) == b.argmax(1))),
                     float(np.mean(cosine)))
