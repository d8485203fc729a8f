"""Class-folder datasets on disk: find the images of each class folder, or of a flat folder.

Class ids are the alphabetical order of the folder names (for ImageNet, the WordNet-ID
order). Every error is a `DataError` naming the folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from .errors import DataError
from .file_list import check_folder, check_listable

# Extensions DALI's image decoder reads; anything else in a data folder is skipped and counted.
IMAGE_EXTENSIONS = frozenset(
    (".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k")
)


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class ScanResult:
    """Images found under class folders; `labels[i]` indexes `classes`."""

    classes: List[str]
    paths: List[str]
    labels: List[int]
    skipped: int  # non-image files
    empty_classes: List[str]


def list_subfolders(root: str) -> List[str]:
    check_folder(root, "folder")
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(root: str, progress: bool = True,
                       exclude: Sequence[str] = ()) -> ScanResult:
    """One sub-folder per class; class ids are the alphabetical order of the folder names.

    Images are searched recursively inside each class folder, in sorted path order. Files
    directly under `root` and non-image files are skipped and counted. Folders named in
    `exclude` are not classes (a name that is not a folder there is an error: a typo would
    otherwise shift every class id silently).
    """
    from tqdm import tqdm

    classes = list_subfolders(root)
    unknown = sorted(set(exclude) - set(classes))
    if unknown:
        raise DataError(f"{root}: no class folder {', '.join(unknown)} to exclude")
    classes = [c for c in classes if c not in set(exclude)]
    if not classes:
        raise DataError(f"no class folders in {root}")
    skipped = sum(1 for e in os.scandir(root) if e.is_file())
    paths: List[str] = []
    labels: List[int] = []
    empty: List[str] = []
    bar = tqdm(classes, desc=f"scanning {root}", unit="class", disable=not progress)
    for label, name in enumerate(bar):
        found = 0
        for folder, dirs, files in os.walk(os.path.join(root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = os.path.relpath(folder, root).replace(os.sep, "/")
            for f in sorted(files):
                if is_image_name(f):
                    check_listable(os.path.join(folder, f))
                    paths.append(f"{rel}/{f}")
                    found += 1
                else:
                    skipped += 1
        labels.extend([label] * found)
        if not found:
            empty.append(name)
        bar.set_postfix(images=len(paths), refresh=False)
    return ScanResult(classes, paths, labels, skipped, empty)


def split_per_class(
    paths: Sequence[str], labels: Sequence[int], train_fraction: float
) -> Tuple[Tuple[List[str], List[int]], Tuple[List[str], List[int]]]:
    """(train, val) for a dataset without a validation set: of each class's images, in the
    given order, the first int(train_fraction * n) train and the rest validate (the split
    the official Caltech101 script makes with 0.8)."""
    by_class: Dict[int, List[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    train: List[int] = []
    val: List[int] = []
    for members in by_class.values():
        cut = int(train_fraction * len(members))
        train += members[:cut]
        val += members[cut:]
    train.sort()
    val.sort()
    return ([paths[i] for i in train], [int(labels[i]) for i in train]), \
        ([paths[i] for i in val], [int(labels[i]) for i in val])


def scan_flat_folder(root: str) -> Tuple[List[str], int]:
    """Image files directly in `root` (sorted) and the number of other files skipped."""
    check_folder(root, "folder")
    names = sorted(e.name for e in os.scandir(root) if e.is_file())
    images = [n for n in names if is_image_name(n)]
    for name in images:
        check_listable(os.path.join(root, name))
    return images, len(names) - len(images)
