"""What validation.py scores: the images with their ids (from a list file, or from -V's
folders: labels/folder_labels.py), the classes the scores are masked to, and ImageNet-ReaL's
multi-label truth.

- ImageNet-A and ImageNet-R hold 200 of the 1000 classes; their published results score a
  1000-class model over those 200 only, its other logits masked out. A tree of exactly one
  of those class sets gets that mask; `--class-mask FILE` gives any other.
- ReaL (Beyer et al., 2020) relabels the 50,000 validation images: per image a list of
  every correct class, empty for the images it leaves out. An image is right at top-k when
  any of its k best classes is in its list.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import AbstractSet, Any, List, Optional, Sequence, Tuple

import numpy as np

from ..labels.file_list import FileList, check_readable, open_text
from ..labels.imagenet import NUM_IMAGENET_CLASSES
from ..process.errors import DataError
from .per_class import top_classes

# ImageNet-1k class ids of the 200 classes of ImageNet-A (Hendrycks et al., 2021).
IMAGENET_A_CLASSES = frozenset((
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94, 96,
    97, 99, 105, 107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234, 235, 254,
    277, 283, 287, 291, 295, 298, 301, 306, 307, 308, 309, 310, 311, 313, 314, 315, 317, 319,
    323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363, 372, 378, 386, 397, 400, 401, 402,
    404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456, 457, 461, 462, 470, 472,
    483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543, 549, 552, 557, 561, 562, 569,
    572, 573, 575, 579, 589, 606, 607, 609, 614, 626, 627, 640, 641, 642, 643, 658, 668, 677,
    682, 684, 687, 701, 704, 719, 736, 746, 749, 752, 758, 763, 765, 768, 773, 774, 776, 779,
    780, 786, 792, 797, 802, 803, 804, 813, 815, 820, 823, 831, 833, 835, 839, 845, 847, 850,
    859, 862, 870, 879, 880, 888, 890, 897, 900, 907, 913, 924, 932, 933, 934, 937, 943, 945,
    947, 951, 954, 956, 957, 959, 971, 972, 980, 981, 984, 986, 987, 988
))
# ImageNet-1k class ids of the 200 classes of ImageNet-R (Hendrycks et al., 2021).
IMAGENET_R_CLASSES = frozenset((
    1, 2, 4, 6, 8, 9, 11, 13, 22, 23, 26, 29, 31, 39, 47, 63, 71, 76, 79, 84, 90, 94, 96, 97,
    99, 100, 105, 107, 113, 122, 125, 130, 132, 144, 145, 147, 148, 150, 151, 155, 160, 161,
    162, 163, 171, 172, 178, 187, 195, 199, 203, 207, 208, 219, 231, 232, 234, 235, 242, 245,
    247, 250, 251, 254, 259, 260, 263, 265, 267, 269, 276, 277, 281, 288, 289, 291, 292, 293,
    296, 299, 301, 308, 309, 310, 311, 314, 315, 319, 323, 327, 330, 334, 335, 337, 338, 340,
    341, 344, 347, 353, 355, 361, 362, 365, 366, 367, 368, 372, 388, 390, 393, 397, 401, 407,
    413, 414, 425, 428, 430, 435, 437, 441, 447, 448, 457, 462, 463, 469, 470, 471, 472, 476,
    483, 487, 515, 546, 555, 558, 570, 579, 583, 587, 593, 594, 596, 609, 613, 617, 621, 629,
    637, 657, 658, 701, 717, 724, 763, 768, 774, 776, 779, 780, 787, 805, 812, 815, 820, 824,
    833, 847, 852, 866, 875, 883, 889, 895, 907, 928, 931, 932, 933, 934, 936, 937, 943, 945,
    947, 948, 949, 951, 953, 954, 957, 963, 965, 967, 980, 981, 983, 988
))
KNOWN_CLASS_SUBSETS = {"ImageNet-A": IMAGENET_A_CLASSES, "ImageNet-R": IMAGENET_R_CLASSES}
# A masked class's score: below any logit, finite so that the loss stays finite (exp of it
# is 0 in float32, so the loss and errors are those of the kept classes alone).
MASKED_SCORE = -1e9
REAL_FILE_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.[^./]+$")


# --------------------------------------------------------------------------- what is scored


@dataclass(frozen=True)
class EvalSet:
    """The images scored, where they and their ids came from, the classes they are scored
    over, and their ReaL labels."""

    files: FileList
    source: str  # e.g. "val_label", or "the class folders of v2/ (numbered folders ...)"
    mask: Optional[ClassMask] = None
    real: Optional[Sequence[Tuple[int, ...]]] = None  # each image's ReaL classes

    def describe(self, num_classes: int) -> str:
        scope = self.mask.describe() if self.mask else f"scored over all {num_classes} classes"
        return f"{len(self.files)} images from {self.source}, {scope}"

    def class_penalty(self, num_classes: int) -> Optional[np.ndarray]:
        return None if self.mask is None else self.mask.penalty(num_classes)

    def real_counts(self) -> Optional[RealCounts]:
        return None if self.real is None else RealCounts(self.real)


def scored_set(files: FileList, source: str, folder_classes: Optional[AbstractSet[int]],
               num_classes: int, mask_file: Optional[str] = None, masked: bool = True,
               real_file: Optional[str] = None) -> EvalSet:
    """`files` with the mask (--class-mask, else a known subset's unless not `masked`: the ids
    of class folders read directly, `folder_classes`, may be one) and the ReaL labels of
    `real_file`, checked against the images."""
    mask = choose_mask(mask_file, masked, folder_classes, num_classes)
    if mask is not None:
        mask.check_covers(files)
    real = None
    if real_file is not None:
        real = real_labels_of(files, read_real_labels(real_file, num_classes), real_file)
    return EvalSet(files, source, mask, real)


# --------------------------------------------------------------------------- class mask


@dataclass(frozen=True)
class ClassMask:
    """The classes a model is scored over; the others' scores are MASKED_SCORE."""

    classes: Tuple[int, ...]  # sorted
    source: str  # where the classes came from, for the output

    def describe(self) -> str:
        return f"masked to {len(self.classes)} classes ({self.source})"

    def penalty(self, num_classes: int) -> np.ndarray:
        """(1, num_classes) float32: 0 for a kept class, MASKED_SCORE for the others."""
        row = np.full((1, num_classes), MASKED_SCORE, np.float32)
        row[0, list(self.classes)] = 0
        return row

    def check_covers(self, files: FileList) -> None:
        """An image of a masked-out class could never be right: refuse it."""
        outside = np.nonzero(~np.isin(files.labels, self.classes))[0]
        if len(outside):
            i = int(outside[0])
            raise DataError(f"{files.where(i)}: class {int(files.labels[i])} is outside the "
                            f"{len(self.classes)} classes scored ({self.source}); "
                            f"{len(outside)} image(s) in all")


def read_class_mask(path: str, num_classes: int) -> ClassMask:
    """Class ids separated by white space or commas (timm's one-per-line files read too)."""
    check_readable(path, "class-mask file")
    with open_text(path, "class-mask file") as f:
        words = f.read().replace(",", " ").split()
    ids = []
    for word in words:
        if not re.fullmatch(r"[0-9]+", word):
            raise DataError(f"{path}: expected class ids, got {word!r}")
        if int(word) >= num_classes:
            raise DataError(f"{path}: class id {word} out of range (0..{num_classes - 1})")
        ids.append(int(word))
    if not ids:
        raise DataError(f"{path}: no class ids")
    return ClassMask(tuple(sorted(set(ids))), path)


def choose_mask(mask_file: Optional[str], enabled: bool,
                folder_classes: Optional[AbstractSet[int]], num_classes: int
                ) -> Optional[ClassMask]:
    """--class-mask's file, else a known subset's classes (ImageNet-A/-R), unless disabled."""
    if not enabled:
        return None
    if mask_file is not None:
        return read_class_mask(mask_file, num_classes)
    known = known_subset(folder_classes, num_classes) if folder_classes is not None else None
    if known is None:
        return None
    return ClassMask(tuple(sorted(KNOWN_CLASS_SUBSETS[known])), f"{known}'s classes")


def known_subset(folder_classes: AbstractSet[int], num_classes: int) -> Optional[str]:
    """'ImageNet-A' or 'ImageNet-R' when class folders are exactly that set's classes."""
    if num_classes != NUM_IMAGENET_CLASSES:
        return None
    return next((name for name, ids in KNOWN_CLASS_SUBSETS.items()
                 if folder_classes == ids), None)


# --------------------------------------------------------------------------- ImageNet-ReaL


def read_real_labels(path: str, num_classes: int) -> List[Tuple[int, ...]]:
    """ReaL's real.json: a list, per validation image in file-number order, of class ids."""
    check_readable(path, "ReaL label file")
    with open_text(path, "ReaL label file") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not JSON ({e})") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a list with one list of class ids per validation "
                        f"image, got {_kind(data)}")
    labels = []
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, list) or not all(_is_id(c, num_classes) for c in entry):
            raise DataError(f"{path}: entry {number} (ILSVRC2012_val_{number:08d}) is not a "
                            f"list of class ids 0..{num_classes - 1}: {entry!r:.60}")
        labels.append(tuple(entry))
    return labels


def _is_id(value: Any, num_classes: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < num_classes


def _kind(value: Any) -> str:
    return "an empty list" if value == [] else f"a JSON {type(value).__name__}"


def real_labels_of(files: FileList, real: Sequence[Tuple[int, ...]],
                   path: str) -> List[Tuple[int, ...]]:
    """Each image's ReaL classes, found by its official file number."""
    out = []
    for i, name in enumerate(files.paths):
        match = REAL_FILE_NAME.search(name.replace(os.sep, "/").rsplit("/", 1)[-1])
        if match is None:
            raise DataError(f"{files.where(i)}: ReaL labels ({path}) are per official "
                            "validation image, and this is not an ILSVRC2012_val_NNNNNNNN "
                            "file")
        number = int(match.group(1))
        if not 1 <= number <= len(real):
            raise DataError(f"{path} has labels for {len(real)} images, and "
                            f"{files.where(i)} is image {number}: the file does not match "
                            "the images (the published real.json has the 50,000 "
                            "validation images, in order)")
        out.append(real[number - 1])
    if not any(out):
        raise DataError(f"{path}: none of the {len(out)} images has ReaL labels (all their "
                        "lists are empty)")
    return out


@dataclass(frozen=True)
class RealErrors:
    """ReaL top-1 and top-5 error over the images that have ReaL labels."""

    top1_error: float
    top5_error: float
    num_images: int


class RealCounts:
    """ReaL hits of an evaluation, summed over ranks (images without labels left out)."""

    def __init__(self, labels: Sequence[Tuple[int, ...]]) -> None:
        self.labels = labels  # indexed like the FileList
        self.sums = np.zeros(3, np.float64)  # images with labels, top-1 hits, top-5 hits

    def add(self, scores: np.ndarray, batch: Any) -> None:
        """One batch's scores (B, K); `batch.indices` and `batch.mask` name its images."""
        top = top_classes(scores, 5)
        for row, index, valid in zip(top, batch.indices, batch.mask[:, 0]):
            truth = self.labels[int(index)]
            if valid and truth:
                self.sums += (1, row[0] in truth, any(c in truth for c in row))

    def all_reduce(self, comm: Any) -> None:
        self.sums = np.asarray(comm.all_reduce_sum(self.sums.tolist()), np.float64)

    def errors(self) -> RealErrors:
        images, top1, top5 = self.sums
        return RealErrors(1 - top1 / images, 1 - top5 / images, int(round(images)))
