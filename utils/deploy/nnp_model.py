"""An NNP file as the model validation.py and infer.py run: export.py's, or one laid out as
NNabla's model zoo publishes them (a network, perhaps an executor naming it).

What the file says is used: the network (an executor's, else the only one, else one named
'runtime' or 'inference'), its image input (the one 4-D input with 3 channels, NCHW or NHWC)
with the input size, its logits (the one 2-D output, whose width is the class count), and
the preprocessing export.py records beside the network (`preprocessing.json`: the
normalisation and the crop). What it does not say (a zoo file's normalisation) comes from the
flags. The network's batch is fixed in some files: batches of another size are run through it
in pieces of its own size, the last one padded.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..process.errors import UserError

PREPROCESSING_MEMBER = "preprocessing.json"
NETWORK_PREFERENCES = ("runtime", "inference")


def is_nnp_file(path: str) -> bool:
    """An NNP file: a zip archive holding NNabla's `nnp_version.txt`."""
    try:
        with zipfile.ZipFile(path) as archive:
            return "nnp_version.txt" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False



class NnpModelError(UserError, ValueError):
    """An NNP file this project cannot run as a classifier (no image input, no logits)."""


def read_preprocessing(path: str) -> Dict[str, Any]:
    """The preprocessing export.py wrote into the file (empty: the file does not say)."""
    with zipfile.ZipFile(path) as archive:
        if PREPROCESSING_MEMBER not in archive.namelist():
            return {}
        try:
            return dict(json.loads(archive.read(PREPROCESSING_MEMBER)))
        except ValueError as e:
            raise NnpModelError(f"{path}: {PREPROCESSING_MEMBER} is not a JSON object: {e}"
                                ) from None


def add_preprocessing(path: str, norm: str, crop_pct: float) -> None:
    """Record the normalisation and the validation crop in an NNP file (NNabla's loader
    ignores the extra member)."""
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(PREPROCESSING_MEMBER, json.dumps({"norm": norm, "crop_pct": crop_pct}))


def choose_network(path: str, names: List[str], executor_networks: List[str]) -> str:
    """An executor's network, else the only one, else a conventionally named one."""
    for name in executor_networks:
        if name in names:
            return name
    if len(names) == 1:
        return names[0]
    for preferred in NETWORK_PREFERENCES:
        for name in names:
            if name.lower() == preferred:
                return name
    raise NnpModelError(f"{path}: {len(names)} networks ({', '.join(names)}) and no executor "
                        "naming the one to run")


def image_input(path: str, shapes: Dict[str, Tuple[int, ...]]) -> Tuple[str, bool]:
    """The image input's name and whether it is NHWC."""
    images = [(name, shape[-1] == 3 and shape[1] != 3) for name, shape in shapes.items()
              if len(shape) == 4 and 3 in (shape[1], shape[-1])]
    if len(images) != 1:
        raise NnpModelError(f"{path}: the network needs one image input (4-D, 3 channels); "
                            f"its inputs are {shapes}")
    return images[0]


def logits_output(path: str, shapes: Dict[str, Tuple[int, ...]]) -> str:
    outputs = [name for name, shape in shapes.items() if len(shape) == 2]
    if len(outputs) != 1:
        raise NnpModelError(f"{path}: the network needs one 2-D output (batch, classes); its "
                            f"outputs are {shapes}")
    return outputs[0]


@dataclass(frozen=True)
class NnpModel:
    """What an NNP file says about the classifier in it."""

    path: str
    network: str
    input_name: str
    output_name: str
    batch_size: int  # the network's own (fixed in the file, or the one it was built with)
    spatial_size: Tuple[int, int]
    channel_last: bool
    num_classes: int
    norm: Optional[str]  # None: the file does not say
    crop_pct: Optional[float]

    def describe(self) -> str:
        said = [f"{k} {v}" for k, v in (("norm", self.norm), ("crop_pct", self.crop_pct))
                if v is not None]
        return (f"{self.path}: NNP network '{self.network}', input '{self.input_name}' "
                f"{self.spatial_size[0]}x{self.spatial_size[1]} "
                f"{'NHWC' if self.channel_last else 'NCHW'}, {self.num_classes} classes"
                + (f" ({', '.join(said)} from the file)" if said else ""))


def _load(path: str, network: Optional[str], batch_size: int) -> Tuple[Any, Any, str]:
    """NnpLoader's network (in a parameter scope of its own) and the name chosen."""
    import nnabla as nn
    from nnabla.utils.nnp_graph import NnpLoader

    from ..process.startup import quiet_nnabla_info

    with quiet_nnabla_info(), nn.parameter_scope("", OrderedDict()):
        try:
            loader = NnpLoader(path)
        except Exception as e:  # (NNabla raises any kind for a damaged file)
            raise NnpModelError(f"{path}: not a readable NNP file: {e}") from None
        names = loader.get_network_names()
        if network is None:
            network = choose_network(path, names, [e.network_name for e in
                                                   loader.g.executors.values()])
        return loader, loader.get_network(network, batch_size=batch_size), network


def names_nnp_file(path: str) -> bool:
    """Whether `path` is given as an NNP file: one, or a name ending in .nnp (a missing one is
    then named as such, not as a weight file without -a)."""
    return is_nnp_file(path) or path.lower().endswith(".nnp")


def read_nnp_model(path: str, batch_size: int = 1) -> NnpModel:
    """The classifier in an NNP file, checked: one image input, one logits output."""
    if not os.path.exists(path):
        raise NnpModelError(f"{path}: no such NNP file")
    if not is_nnp_file(path):
        raise NnpModelError(f"{path}: not an NNP file (a zip with nnp_version.txt)")
    _, net, name = _load(path, None, batch_size)
    inputs = {k: tuple(v.shape) for k, v in net.inputs.items()}
    outputs = {k: tuple(v.shape) for k, v in net.outputs.items()}
    input_name, channel_last = image_input(path, inputs)
    output_name = logits_output(path, outputs)
    shape = inputs[input_name]
    spatial = shape[1:3] if channel_last else shape[2:4]
    said = read_preprocessing(path)
    return NnpModel(path, name, input_name, output_name, shape[0], tuple(spatial),
                    channel_last, outputs[output_name][1], said.get("norm"),
                    said.get("crop_pct"))


def split_batches(images: np.ndarray, size: int) -> List[Tuple[np.ndarray, int]]:
    """`images` in pieces of exactly `size` (the last padded with copies of its first
    image): (piece, how many of it are real)."""
    pieces = []
    for start in range(0, images.shape[0], size):
        piece = images[start:start + size]
        real = piece.shape[0]
        if real < size:
            piece = np.concatenate([piece, np.repeat(piece[:1], size - real, axis=0)])
        pieces.append((piece, real))
    return pieces


class NnpNetwork:
    """An NNP file's network run by NNabla: images (of any batch) -> logits."""

    def __init__(self, model: NnpModel, batch_size: int):
        self.model = model
        _, net, _ = _load(model.path, model.network, batch_size)
        self.image = net.inputs[model.input_name]
        self.output = net.outputs[model.output_name]

    def logits(self, images: np.ndarray) -> np.ndarray:
        size = self.image.shape[0]
        out = []
        for piece, real in split_batches(np.asarray(images, np.float32), size):
            self.image.d = piece
            self.output.forward(clear_buffer=True)
            out.append(self.output.d[:real].copy())
        return np.concatenate(out)
