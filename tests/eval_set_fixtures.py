"""Miniature evaluation sets with their real folder names and file kinds, and a weight file
whose predictions are known, so that every error can be computed by hand.

The weight file is a mobilenet_v3_small whose classifier has zero weights and a fixed bias:
whatever the image, its logits are that bias, so its ranking of the classes (and its loss) is
the same for every image.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import nnabla as nn
import numpy as np
from data_fixtures import photo, save

from models import build_network, get_architecture
from utils.labels.imagenet import imagenet_wnids
from utils.weights.files import network_parameters, write_parameters

ARCH = "mobilenet_v3_small"
SIZE = 32
# The classes the fixed weights rank first, best first; every other class c scores
# -c / 1000, below them all.
FAVOURITES = (10, 6, 999, 11, 100, 2, 13, 4, 1, 0)


def fixed_bias(num_classes: int = 1000) -> np.ndarray:
    bias = -np.arange(num_classes, dtype=np.float32) / 1000
    for rank, c in enumerate(FAVOURITES):
        if c < num_classes:
            bias[c] = len(FAVOURITES) - rank
    return bias


def fixed_prediction_weights(path: Path, num_classes: int = 1000) -> Path:
    """A weight file whose logits are `fixed_bias` for every image."""
    nn.clear_parameters()
    build_network(nn.Variable((1, 3, SIZE, SIZE)), num_classes, ARCH, test=True)
    scope = get_architecture(ARCH).classifier_scope
    params = nn.get_parameters(grad_only=False)
    params[f"{scope}/affine/W"].d = 0
    params[f"{scope}/affine/b"].d = fixed_bias(num_classes)
    write_parameters(str(path), network_parameters())
    nn.clear_parameters()
    return path


def expected(labels: Sequence[int], kept: Optional[Iterable[int]] = None,
             num_classes: int = 1000) -> Dict[str, float]:
    """Top-1 / top-5 error and mean loss of the fixed weights on images of `labels`, scored
    over the classes `kept` (default all), computed with NumPy alone."""
    bias = fixed_bias(num_classes).astype(np.float64)
    allowed = np.zeros(num_classes, bool)
    allowed[list(range(num_classes)) if kept is None else list(kept)] = True
    ranking = [c for c in np.argsort(-bias, kind="stable") if allowed[c]]
    scores = bias[allowed]
    log_z = np.log(np.exp(scores - scores.max()).sum()) + scores.max()
    labels = list(labels)
    return {
        "top1_error": sum(c != ranking[0] for c in labels) / len(labels),
        "top5_error": sum(c not in ranking[:5] for c in labels) / len(labels),
        "loss": float(np.mean([log_z - bias[c] for c in labels])),
    }


def tree(root: Path, classes: Sequence[str], per_class: int = 1,
         kinds: Sequence[str] = ("JPEG",)) -> List[Tuple[str, str]]:
    """One folder per class of `per_class` tiny photographs, saved in the formats `kinds` in
    turn (all named .JPEG, as ImageNet-Sketch's PNGs are); returns (class, path)."""
    out = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            kind = kinds[(c * per_class + i) % len(kinds)]
            img = photo(20 + i, 17 + c % 5, seed=c * per_class + i)
            if kind == "L":
                img, kind = img.convert("L"), "JPEG"
            elif kind == "RGBA":
                img, kind = img.convert("RGBA"), "PNG"
            elif kind == "P":
                img, kind = img.convert("P"), "PNG"
            path = root / name / f"{name}_{i}.JPEG"
            save(img, str(path), kind)
            out.append((name, str(path)))
    return out


def wnid_folders(ids: Iterable[int]) -> List[str]:
    return [imagenet_wnids()[i] for i in ids]


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


def flat_val(root: Path, numbers: Sequence[int]) -> List[str]:
    """ILSVRC2012_val_<n>.JPEG files in `root`; returns the names."""
    os.makedirs(root, exist_ok=True)
    names = [f"ILSVRC2012_val_{n:08d}.JPEG" for n in numbers]
    for n, name in zip(numbers, names):
        save(photo(19, 23, seed=n), str(root / name))
    return names
