"""Class-folder datasets on disk: find the images of each class folder, or of a flat folder.

Class folders are listed in alphabetical order (for ImageNet, the WordNet-ID order), except in
a tree whose every class folder is a number (ImageNetV2's 0..999): there in the order of the
numbers, which are found here; folder_labels.py turns folders into ids. Every error is a
`DataError` naming the folder.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from ..process.errors import DataError
from .file_list import check_folder, check_listable, is_class_id

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
    numbers: Optional[List[int]] = None  # numbered folders: each class's number (its id)


def name_list(names: Sequence[str], limit: int = 10) -> str:
    """Names separated by spaces, the first `limit` only and a count of the others."""
    if not names:
        return "-"
    shown = " ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} ... ({len(names) - limit} more)"


def folder_numbers(folders: Sequence[str], root: str) -> Optional[List[int]]:
    """The class number of each folder when every one is a non-negative integer (ImageNetV2
    names its folders by ImageNet-1k class id: 0..999), else None.

    Sorted as strings, folders 0, 1, 2, 10 would get ids 0, 1, 3, 2: every class above 9
    wrong without a word. A tree mixing numbers and names, or two folders of one number
    ('7' and '007'), has no ids that could be meant, so it is refused.
    """
    numbered = [f for f in folders if is_class_id(f)]
    if not numbered:
        return None
    named = [f for f in folders if not is_class_id(f)]
    if named:
        raise DataError(f"{root}: the class folders mix numbers ({name_list(numbered, 5)}) "
                        f"and names ({name_list(named, 5)}); numbered folders are class ids, "
                        "named ones are sorted: remove or rename the odd ones")
    first: Dict[int, str] = {}
    for folder in folders:
        if first.setdefault(int(folder), folder) != folder:
            raise DataError(f"{root}: folders {first[int(folder)]} and {folder} are both "
                            f"class {int(folder)}")
    return [int(f) for f in folders]


def _natural_key(name: str) -> List[object]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", name) if part]


def string_order_note(folders: Sequence[str]) -> Optional[str]:
    """A note when folder names hold numbers whose order differs from the string order the
    ids follow ('class10' before 'class2'), so that the difference is never silent."""
    ordered = sorted(folders)
    natural = sorted(folders, key=_natural_key)
    if ordered == natural:
        return None
    i = next(i for i, (a, b) in enumerate(zip(ordered, natural)) if a != b)
    return (f"class ids follow the string order of the folder names, not the numbers in them: "
            f"{ordered[i]} is id {i}, before {natural[i]} (id {ordered.index(natural[i])})")


def list_subfolders(root: str) -> List[str]:
    check_folder(root, "folder")
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def scan_class_folders(root: str, progress: bool = True,
                       exclude: Sequence[str] = ()) -> ScanResult:
    """One sub-folder per class, in the order of their ids: alphabetical, or numeric for
    numbered folders (see `folder_numbers`).

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
    numbers = folder_numbers(classes, root)
    if numbers is not None:
        classes = [c for _, c in sorted(zip(numbers, classes))]
        numbers = sorted(numbers)
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
    return ScanResult(classes, paths, labels, skipped, empty, numbers)


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
