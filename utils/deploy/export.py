"""Inference-only models for deployment: NNabla's .nnp and ONNX, each checked after export.

The network is built in test mode (batch-norm running statistics, no dropout) in NCHW, the
layout every runtime accepts, for a fixed batch and input size, and saved as an NNP file with
one network and one executor. ONNX files are converted from that NNP by NNabla's own
converter (`nnabla-converter`, the optional export extra, see requirements-export.txt).

Every exported file is run before it is put in place (NNabla's `NnpLoader` for .nnp,
onnxruntime for .onnx) on a seeded random image batch, and its output is compared with the
NNabla network's; files are written next to their destination under a temporary name and
renamed only when all of them pass, so a failed export leaves no partial or wrong file.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import nnabla as nn
import nnabla.functions as F
import numpy as np
from nnabla.utils.nnp_graph import NnpLoader
from nnabla.utils.save import save

from models import NORMALIZATIONS, build_network

from ..process.atomic import atomic_path, nearest_existing
from ..process.errors import UserError
from ..process.startup import quiet_nnabla_info
from ..weights.files import WeightFile
from .nnp_model import add_preprocessing, is_nnp_file
from .onnx_graph import simplify

# The opsets nnabla-converter 1.39.0 implements; it silently writes opset 7 for any other.
ONNX_OPSETS = (7, 9, 10, 11, 13)
DEFAULT_OPSET = 11
DEFAULT_TOLERANCE = 1e-3
# The ONNX IR version written: the one of ONNX 1.13 (opsets up to 18), named here because
# nnabla-converter looks up the installed onnx's own in a table that stops at onnx 1.16.0
# (and then writes no version at all), while ONNX Runtime's quantizer needs onnx >= 1.16.
ONNX_IR_VERSION = 8
DEFAULT_SEED = 0
# Converter thread: room for a recursion as deep as the largest network has functions.
DEEP_RECURSION_LIMIT = 50_000
DEEP_STACK_BYTES = 512 << 20
NETWORK_NAME = "inference"
EXECUTOR_NAME = "runtime"
INPUT_NAME = "image"
INSTALL_HINT = (
    "ONNX export needs the export extra: run 'bash scripts/setup.sh --export' "
    "(or: pip install --no-deps -r requirements-export.txt)"
)


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked: output format, missing extra, missing folder."""


class VerificationError(RuntimeError):
    """An exported model whose outputs differ from the NNabla network's beyond the tolerance."""


@dataclass
class InferenceGraph:
    """The test-mode network with its own parameter scope (the global one is left alone)."""

    arch: str
    image: nn.Variable  # (B, 3, H, W), normalised RGB
    output: nn.Variable  # (B, K) logits, or probabilities with softmax
    output_name: str
    scope: OrderedDict[str, object]

    def parameters(self) -> Dict[str, nn.Variable]:
        with nn.parameter_scope("", self.scope):
            return nn.get_parameters(grad_only=False)

    def forward(self, images: np.ndarray) -> np.ndarray:
        self.image.d = images
        self.output.forward(clear_buffer=True)
        return self.output.d.copy()


@dataclass(frozen=True)
class Check:
    """How closely an exported model reproduced the NNabla network on the test batch.

    The tolerance is relative to the outputs' scale (largest |NNabla output|, at least 1):
    float32 rounding grows with the logits, a conversion error does not stay that small.
    """

    runtime: str
    max_abs_diff: float
    scale: float
    top1_agreements: int
    batch_size: int
    tolerance: float

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / self.scale

    @property
    def passed(self) -> bool:
        return self.relative_diff <= self.tolerance

    def summary(self) -> str:
        return (f"{self.runtime} vs NNabla: max |difference| {self.max_abs_diff:.2e} on outputs "
                f"up to {self.scale:.3g} (relative {self.relative_diff:.1e}, tolerance "
                f"{self.tolerance:.0e}), top-1 equal for {self.top1_agreements}/"
                f"{self.batch_size}")


@dataclass(frozen=True)
class Exported:
    """One file written: its path, format and the check it passed (None: not verified)."""

    path: str
    description: str
    check: Optional[Check]


def output_format(path: str) -> Format:
    """The format of an output file, from its name; other extensions are refused before any
    work."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ExportError(f"{path}: unsupported output format '{ext or '(no extension)'}'; "
                          f"use {' or '.join(FORMATS)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        existing = nearest_existing(folder)
        if not os.path.isdir(existing):
            raise ExportError(f"{path}: {existing} is a file, not a folder")
        raise ExportError(f"{path}: output folder {folder} does not exist")
    return FORMATS[ext]


def check_onnx_support() -> None:
    """Fail early, with the install command, when the export extra is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        from nnabla.utils.converter.onnx import OnnxExporter  # noqa: F401
    except ImportError as e:
        raise ExportError(f"{INSTALL_HINT} ({e})") from None


def build_inference_graph(
    arch: str,
    num_classes: int,
    batch_size: int,
    spatial_size: Tuple[int, int],
    softmax: bool = False,
) -> InferenceGraph:
    """`arch` in test mode on a (batch, 3, H, W) input, in a parameter scope of its own."""
    scope: OrderedDict[str, object] = OrderedDict()
    with nn.parameter_scope("", scope):
        image = nn.Variable((batch_size, 3) + tuple(spatial_size))
        logits, _ = build_network(image, num_classes, arch, test=True, channel_last=False)
    output = F.softmax(logits, axis=1) if softmax else logits
    return InferenceGraph(arch, image, output, "probabilities" if softmax else "logits", scope)


def load_weights(graph: InferenceGraph, weights: WeightFile) -> Optional[str]:
    """Load a weight file (any layout, 3 or 4 input channels) into the graph's parameters."""
    with nn.parameter_scope("", graph.scope):
        return weights.load_into(graph.arch)


def sample_images(shape: Sequence[int], seed: int = DEFAULT_SEED) -> np.ndarray:
    """Random RGB pixels normalised like the training data: inputs of realistic scale."""
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, size=tuple(shape)).astype(np.float32)
    mean, std = (np.asarray(v, np.float32).reshape(1, -1, 1, 1)
                 for v in NORMALIZATIONS["default"])
    return (pixels - mean) / std


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide NNabla's save and converter chatter (it names the temporary files)."""
    with quiet_nnabla_info(), contextlib.redirect_stdout(io.StringIO()):
        yield


def save_nnp(graph: InferenceGraph, path: str) -> None:
    """Write the graph and its parameters as an NNP file with one network and one executor.

    The batch size is fixed, not variable: the ResNet classifier's reshape has it built in.
    """
    contents = {
        "networks": [{
            "name": NETWORK_NAME,
            "batch_size": graph.image.shape[0],
            "outputs": {graph.output_name: graph.output},
            "names": {INPUT_NAME: graph.image},
        }],
        "executors": [{
            "name": EXECUTOR_NAME,
            "network": NETWORK_NAME,
            "data": [INPUT_NAME],
            "output": [graph.output_name],
        }],
    }
    with _quiet(), nn.parameter_scope("", graph.scope):
        save(path, contents, variable_batch_size=False, parameters=graph.parameters())


def nnp_to_onnx(nnp_path: str, onnx_path: str, batch_size: int, opset: int = DEFAULT_OPSET
                ) -> None:
    """Convert an NNP file with NNabla's converter (the Python API behind `nnabla_cli convert`),
    then its ReLU6 and padded max pooling rewritten as ONNX Runtime runs them fast
    (utils/deploy/onnx_graph.py)."""
    if opset not in ONNX_OPSETS:
        raise ExportError(f"ONNX opset {opset} is not supported by nnabla-converter; "
                          f"choose from {', '.join(map(str, ONNX_OPSETS))}")
    check_onnx_support()
    from nnabla.utils.converter.nnabla import NnpImporter
    from nnabla.utils.converter.onnx import OnnxExporter

    def convert() -> None:
        with _quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the converter's tostring()
            nnp = NnpImporter(nnp_path, expand_network=True, executor_index=None).execute()
            OnnxExporter(nnp, batch_size, ONNX_IR_VERSION, opset=str(opset)).execute(onnx_path)

    _run_deeply_recursive(convert)
    import onnx

    model = onnx.load(onnx_path)
    if any(simplify(model, opset).values()):
        onnx.save(model, onnx_path)


def _run_deeply_recursive(job: Callable[[], None]) -> None:
    """Run `job` in a thread with a large stack and recursion limit.

    The converter sorts the network recursively, one Python frame per function, which
    overflows the default limit of 1000 for the deepest networks (efficientnet_b8, _l2).
    """
    failure: List[BaseException] = []

    def target() -> None:
        try:
            job()
        except BaseException as e:  # re-raised in the calling thread
            failure.append(e)

    limit = sys.getrecursionlimit()
    stack = threading.stack_size(DEEP_STACK_BYTES)
    try:
        sys.setrecursionlimit(max(limit, DEEP_RECURSION_LIMIT))
        worker = threading.Thread(target=target, name="nnp-to-onnx")
        worker.start()
        worker.join()
    finally:
        threading.stack_size(stack)
        sys.setrecursionlimit(limit)
    if failure:
        raise failure[0]


def run_nnp(path: str, images: np.ndarray) -> np.ndarray:
    """Output of an NNP file's network on `images`, through NNabla's NnpLoader."""
    with nn.parameter_scope("", OrderedDict()):
        net = NnpLoader(path).get_network(NETWORK_NAME)
        (x,), (y,) = net.inputs.values(), net.outputs.values()
        x.d = images
        y.forward(clear_buffer=True)
        return y.d.copy()


def run_onnx(path: str, images: np.ndarray) -> np.ndarray:
    """Output of an ONNX file on `images`, through onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def compare(runtime: str, reference: np.ndarray, output: np.ndarray, tolerance: float) -> Check:
    """Largest difference, the outputs' scale, and how many samples keep their top-1 class."""
    if output.shape != reference.shape:
        raise VerificationError(f"{runtime} returned shape {output.shape}, "
                                f"NNabla {reference.shape}")
    diff = float(np.max(np.abs(output.astype(np.float64) - reference)))
    if np.isnan(diff):
        diff = float("inf")
    scale = max(1.0, float(np.max(np.abs(reference))))
    agree = int(np.sum(output.argmax(axis=1) == reference.argmax(axis=1)))
    return Check(runtime, diff, scale, agree, reference.shape[0], tolerance)


def onnxruntime_name() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


@dataclass(frozen=True)
class Format:
    """An export format: its file written from the NNP file made first, described, and run
    back by its own runtime for the verification."""

    name: str
    write: Callable[[str, str, int, int], None]  # (nnp file, output, batch size, opset)
    describe: Callable[[int], str]  # (opset) -> what was written
    run: Callable[[str, np.ndarray], np.ndarray]  # (file, images) -> outputs
    runtime: Callable[[], str]  # the runtime's name and version
    needs_onnx: bool  # the export extra must be installed
    recognise: Callable[[str], bool]  # whether an existing file is a model of this format


def is_onnx_file(path: str) -> bool:
    """An ONNX model: parses as ONNX's ModelProto with a graph of at least one node."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return len(onnx.load_model(path, load_external_data=False).graph.node) > 0
    except (OSError, DecodeError, ValueError, RuntimeError):
        return False


# By extension. The functions are called by name, so that a test can replace one.
FORMATS: Dict[str, Format] = {
    ".nnp": Format(
        "NNP", lambda nnp, path, batch, opset: shutil.copyfile(nnp, path),
        lambda opset: f"NNP, network '{NETWORK_NAME}', executor '{EXECUTOR_NAME}'",
        lambda path, images: run_nnp(path, images),
        lambda: f"NNabla {nn.__version__} NnpLoader", False, lambda path: is_nnp_file(path)),
    ".onnx": Format(
        "ONNX", lambda nnp, path, batch, opset: nnp_to_onnx(nnp, path, batch, opset),
        lambda opset: f"ONNX opset {opset}", lambda path, images: run_onnx(path, images),
        lambda: onnxruntime_name(), True, lambda path: is_onnx_file(path)),
}


def export(
    graph: InferenceGraph,
    outputs: Sequence[str],
    opset: int = DEFAULT_OPSET,
    tolerance: Optional[float] = DEFAULT_TOLERANCE,
    seed: int = DEFAULT_SEED,
    preprocessing: Optional[Tuple[str, float]] = None,
) -> List[Exported]:
    """Write `graph` (weights loaded) to every path of `outputs`, .nnp or .onnx.

    With a `tolerance` (None: no verification) each file is run on a seeded test batch and
    compared with the NNabla network; a difference above it raises VerificationError. Files
    are renamed into place only once all of them are written and verified. `preprocessing`
    (normalisation, crop) is recorded in the NNP files, for validation.py and infer.py.
    """
    formats = [output_format(p) for p in outputs]
    if any(fmt.needs_onnx for fmt in formats):
        check_onnx_support()
    batch_size = graph.image.shape[0]
    images = sample_images(graph.image.shape, seed)
    reference = graph.forward(images) if tolerance is not None else None
    exported: List[Exported] = []
    # Every output stays under a temporary name until all of them are written and verified.
    with tempfile.TemporaryDirectory(prefix="export-") as scratch, \
            contextlib.ExitStack() as pending:
        nnp = os.path.join(scratch, "model.nnp")
        save_nnp(graph, nnp)
        if preprocessing is not None:
            add_preprocessing(nnp, *preprocessing)
        for path, fmt in zip(outputs, formats):
            tmp = pending.enter_context(atomic_path(path, os.path.splitext(path)[1]))
            fmt.write(nnp, tmp, batch_size, opset)
            check = None
            if reference is not None:
                check = compare(fmt.runtime(), reference, fmt.run(tmp, images), tolerance)
                if not check.passed:
                    raise VerificationError(f"{path}: {check.summary()}; nothing written")
            exported.append(Exported(path, fmt.describe(opset), check))
    return exported
