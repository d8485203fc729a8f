"""NNabla weight files (.h5): read and write with checks, detect and convert the layout.

One implementation for every script: infer.py and validation.py load published files into
whatever layout this machine can run, the converter rewrites files, fine-tuning loads all but
the classifier. Files are read and written with h5py in NNabla's format, not with
`nn.load_parameters` / `nn.save_parameters`: a file that does not fit the network is then
reported by name before anything is changed, a file can be converted without building a
network, and a write is atomic. `WeightFile` is a file read once with what it tells about
the network (layout, input channels, classes).
"""
from __future__ import annotations

import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Tuple

import h5py
import nnabla as nn
import numpy as np

from models import get_architecture

from ..labels.imagenet import NUM_IMAGENET_CLASSES
from ..process.atomic import atomic_path, check_room_for
from ..process.comm import Communicator
from ..process.errors import OutputError, UserError
from .download import resolve_weights
from .published import arch_hint, published, where_to_get


class WeightFileError(UserError, ValueError):
    """A weight file that cannot be used: unreadable, or not made for this network."""


@dataclass
class Parameter:
    data: np.ndarray
    need_grad: bool


ParameterDict = "OrderedDict[str, Parameter]"

# NCHW -> NHWC and back, for every 4-D tensor (convolution kernels, batch-norm statistics and
# the 1x1-convolution classifier of the ResNet family). 1-D biases and 2-D affine weights
# have no layout.
TO_CHANNEL_LAST = (0, 2, 3, 1)
TO_CHANNEL_FIRST = (0, 3, 1, 2)


@dataclass(frozen=True)
class Layout:
    """Memory layout of a parameter set and the input channels of its first convolution."""

    channel_last: bool
    channels: int

    def __str__(self) -> str:
        return f"{'NHWC' if self.channel_last else 'NCHW'}, {self.channels} input channels"


def read_parameters(path: str) -> ParameterDict:
    """Read an NNabla parameter file in its saved order."""
    if os.path.isdir(path):
        raise WeightFileError(f"{path} is a folder; expected a weight file (.h5)")
    if not os.path.exists(path):
        raise WeightFileError(f"{path}: no such weight file{where_to_get(path)}")
    records = []
    try:
        with h5py.File(path, "r") as f:

            def collect(name: str, obj) -> None:
                if isinstance(obj, h5py.Dataset):
                    index = obj.attrs.get("index")
                    if index is None:
                        raise WeightFileError(
                            f"{path}: dataset '{name}' has no 'index' attribute, "
                            "so this is not an NNabla parameter file"
                        )
                    records.append(
                        (int(index), name, obj[()], bool(obj.attrs.get("need_grad", True)))
                    )

            f.visititems(collect)
    except WeightFileError:
        raise
    except (OSError, KeyError, ValueError) as e:
        what = _what_else(path) or ("not a readable NNabla parameter file (truncated or not "
                                    f"HDF5: {e})")
        raise WeightFileError(f"{path}: {what}") from None
    if not records:
        raise WeightFileError(f"{path}: the file holds no parameters")
    records.sort(key=lambda r: r[0])
    params = OrderedDict(
        (name, Parameter(np.asarray(data, dtype=np.float32), need_grad))
        for _, name, data, need_grad in records
    )
    _check_finite(path, params)
    return params


def _what_else(path: str) -> Optional[str]:
    """What a file given for a weight file is instead, with the script that takes it, for
    the files this project writes besides weight files (they are zip archives, and were
    called truncated); None for anything else."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith(".nntxt") for n in names):
        return ("an NNP model (export.py writes them for NNabla's runtimes), not a weight "
                "file: give the .h5 it was exported from")
    if any(n.startswith(("param/", "meta")) for n in names):
        return ("a training checkpoint, not a weight file: train.py resumes from it (the same "
                "command, the same -m); the run's weight files are its param_NNN.h5")
    return None


def is_parameter_file(path: str) -> bool:
    """Whether `path` is an NNabla parameter file (HDF5 whose every dataset has an index),
    read without loading its arrays: one that may be replaced by another."""
    try:
        with h5py.File(path, "r") as f:
            found = []
            f.visititems(lambda _, obj: found.append("index" in obj.attrs)
                         if isinstance(obj, h5py.Dataset) else None)
    except (OSError, ValueError):
        return False
    return bool(found) and all(found)


def _check_finite(path: str, params: ParameterDict) -> None:
    """Refuse NaN or infinite values: they would turn every output into NaN, which compares
    as no error at all (a validation of such a file reported 0 % top-1 error)."""
    for name, p in params.items():
        bad = np.count_nonzero(~np.isfinite(p.data))
        if bad:
            raise WeightFileError(f"{path}: parameter '{name}' holds {bad} NaN or infinite "
                                  "value(s): the file is damaged or was saved from a run "
                                  "that diverged")


def write_parameters(path: str, params: ParameterDict) -> None:
    """Write `params` in NNabla's .h5 format, atomically: a crash leaves the old file or none.

    A full disk is an OutputError naming `path` (h5py reports it as a RuntimeError when the
    file is closed)."""
    check_room_for(path, sum(np.asarray(p.data).size * 4 for p in params.values()),
                   "folder of the weight file")
    with atomic_path(path, ".h5") as tmp:
        try:
            with h5py.File(tmp, "w") as f:
                for index, (name, p) in enumerate(params.items()):
                    ds = f.create_dataset(name, data=np.asarray(p.data, dtype=np.float32))
                    ds.attrs["index"] = index
                    ds.attrs["need_grad"] = p.need_grad
        except RuntimeError as e:
            raise OutputError(f"cannot write {path}: {e}") from None


def network_parameters() -> ParameterDict:
    """The parameters of the networks built so far, as a ParameterDict (copies of the data)."""
    return OrderedDict(
        (name, Parameter(v.d.copy(), v.need_grad))
        for name, v in nn.get_parameters(grad_only=False).items()
    )


def first_convolution(shapes: Mapping[str, Tuple[int, ...]]) -> str:
    """Name of the first 4-D weight: the stem convolution (whatever its scope is called)."""
    for name, shape in shapes.items():
        if len(shape) == 4 and name.endswith("/W"):
            return name
    raise WeightFileError("no convolution weight found")


def layout_of(shapes: Mapping[str, Tuple[int, ...]]) -> Layout:
    """Deduce NCHW/NHWC from the batch-norm tensors, channels from the first convolution.

    Batch-norm tensors are (1, C, 1, 1) in NCHW and (1, 1, 1, C) in NHWC, which tells the
    layouts apart even for a 3-channel NHWC file (which the official example takes for NCHW).
    """
    for shape in shapes.values():
        if len(shape) == 4 and shape[0] == 1 and shape[2] == 1 and shape[1] != shape[3]:
            channel_last = shape[1] == 1
            w = shapes[first_convolution(shapes)]
            return Layout(channel_last, int(w[3] if channel_last else w[1]))
    raise WeightFileError("no batch-normalisation parameter found to tell the layout")


def shapes_of(params: ParameterDict) -> OrderedDict[str, Tuple[int, ...]]:
    return OrderedDict((k, tuple(p.data.shape)) for k, p in params.items())


def convert_layout(params: ParameterDict, channel_last: bool) -> ParameterDict:
    """Transpose every 4-D tensor to the other layout (the caller knows the current one)."""
    axes = TO_CHANNEL_LAST if channel_last else TO_CHANNEL_FIRST
    return OrderedDict(
        (
            name,
            Parameter(
                np.ascontiguousarray(p.data.transpose(axes)) if p.data.ndim == 4 else p.data,
                p.need_grad,
            ),
        )
        for name, p in params.items()
    )


def set_input_channels(params: ParameterDict, channels: int, channel_last: bool) -> ParameterDict:
    """Give the first convolution `channels` inputs: drop extra ones or add zero-fed ones.

    The 4th input channel of mixed-precision files only ever sees zeros, so dropping it or
    adding a zero one leaves the network's outputs unchanged.
    """
    name = first_convolution(shapes_of(params))
    w = params[name].data
    axis = 3 if channel_last else 1
    have = w.shape[axis]
    if have > channels:
        w = np.take(w, range(channels), axis=axis)
    elif have < channels:
        pad = [(0, 0)] * 4
        pad[axis] = (0, channels - have)
        w = np.pad(w, pad)
    out = OrderedDict(params)
    out[name] = Parameter(np.ascontiguousarray(w), params[name].need_grad)
    return out


def adapt(params: ParameterDict, target: Layout) -> Tuple[ParameterDict, Optional[str]]:
    """Convert `params` to the target layout and channels; say what was done (None: nothing)."""
    source = layout_of(shapes_of(params))
    if source == target:
        return params, None
    if source.channel_last != target.channel_last:
        params = convert_layout(params, target.channel_last)
    if source.channels != target.channels:
        params = set_input_channels(params, target.channels, target.channel_last)
    return params, f"converted from {source} to {target}"


def first_mismatch(
    file_params: ParameterDict, expected: Dict[str, Tuple[int, ...]]
) -> Optional[str]:
    """Describe the first parameter that differs between a file and a network, or None."""
    for name, shape in expected.items():
        if name not in file_params:
            return f"parameter '{name}' {tuple(shape)} is missing from the file"
        got = file_params[name].data.shape
        if tuple(got) != tuple(shape):
            return (
                f"parameter '{name}' has shape {tuple(got)} in the file, "
                f"the network needs {tuple(shape)}"
            )
    for name in file_params:
        if name not in expected:
            return f"the file has unexpected parameter '{name}'"
    return None


# --------------------------------------------------------------------------- a file read once


@dataclass
class WeightFile:
    """A weight file read once: its parameters and what they say about the network."""

    path: str
    params: ParameterDict
    layout: Layout
    num_classes: Optional[int]  # None: no classifier of the expected architecture found

    def classes(self, requested: Optional[int]) -> int:
        """--num-classes if given, else the file's, else ImageNet's 1000. A --num-classes that
        the file's classifier contradicts is refused here, before any list is read against it
        (it was reported as the list's class ids being out of range)."""
        if requested and self.num_classes and requested != self.num_classes:
            raise WeightFileError(f"{self.path}: the classifier has {self.num_classes} classes, "
                                  f"not --num-classes {requested} (leave --num-classes out to "
                                  "use the file's)")
        return requested or self.num_classes or NUM_IMAGENET_CLASSES

    def load_into(self, arch: str, skip_prefixes: Iterable[str] = ()) -> Optional[str]:
        """Load into the parameters of the network already built for `arch`.

        The file is converted in memory to the network's layout and input channels when they
        differ (the returned note says so). Parameters under `skip_prefixes` (a classifier
        being replaced) are neither required nor loaded. Nothing is changed if the file does
        not fit.
        """
        skip = tuple(p.rstrip("/") + "/" for p in skip_prefixes)
        net = OrderedDict((k, v) for k, v in nn.get_parameters(grad_only=False).items()
                          if not k.startswith(skip))
        if not net:
            raise WeightFileError(f"{self.path}: build the network before loading weights "
                                  "into it")
        net_shapes = OrderedDict((k, tuple(v.shape)) for k, v in net.items())
        try:
            params, note = adapt(self.params, layout_of(net_shapes))
        except WeightFileError as e:
            raise WeightFileError(f"{self.path}: does not fit {arch}: {e}"
                                  f"{arch_hint(self.path, arch)}") from None
        params = OrderedDict((k, p) for k, p in params.items() if not k.startswith(skip))
        problem = first_mismatch(params, net_shapes)
        if problem is not None:
            raise WeightFileError(f"{self.path}: does not fit {arch}: {problem}"
                                  f"{arch_hint(self.path, arch)}")
        for name, var in net.items():
            var.d = params[name].data
        return note

    def describe(self, num_classes: int, note: Optional[str]) -> str:
        """What was loaded: layout, classes, an in-memory conversion, a published file."""
        known = published(self.path)
        return (f"{self.path}: {self.layout}, {num_classes} classes"
                + (f"; {note} in memory" if note else "")
                + (f"; {known.describe()}" if known else ""))


def classes_in(params: ParameterDict, arch: str) -> Optional[int]:
    """Number of classes of the file's classifier (its bias length), if `arch`'s is there."""
    scope = get_architecture(arch).classifier_scope + "/"
    biases = [p.data.size for name, p in params.items()
              if name.startswith(scope) and p.data.ndim == 1]
    return biases[-1] if biases else None


def open_weights(name: str, arch: Optional[str] = None, download: bool = True,
                 comm: Optional[Communicator] = None) -> WeightFile:
    """A script's weight-file argument, opened: a path, or a published file's name (from
    the cache, downloaded into it first unless `download` is False; under MPI by rank 0
    while the others wait), read once and checked."""
    return open_weight_file(resolve_weights(name, download, comm), arch)


def open_weight_file(path: str, arch: Optional[str] = None) -> WeightFile:
    """Read `path` and deduce its layout, input channels and (given `arch`) class count."""
    params = read_parameters(path)
    try:
        layout = layout_of(shapes_of(params))
    except WeightFileError as e:
        raise WeightFileError(f"{path}: {e}") from None
    return WeightFile(path, params, layout, None if arch is None else classes_in(params, arch))


def runnable_layout(file_layout: Layout, on_gpu: bool) -> Layout:
    """The layout to build the network in: the file's on a GPU; NCHW with 3 channels on the
    CPU, which runs NCHW only (an NHWC file's zero-fed 4th input channel is dropped)."""
    return file_layout if on_gpu else Layout(channel_last=False, channels=3)
