"""The class ids a folder gives its images by itself: the names of its class folders, or the
numbers in the official validation file names.

`class_folder_ids` is the one reading of class folders as ids, for create_input_files.py's
training and validation trees and for validation.py's -V alike:

- names that name every folder decide: an id,name csv (-L, --labels, label_wordnetid.csv)
  or the training classes;
- else numbered folders are their own ids (ImageNetV2's 0..999);
- else, against a weight file's classes, WordNet IDs are ImageNet-1k's ids (ImageNet-Sketch,
  -A, -R) and other names need a csv; a training tree's folders take their alphabetical order.

validation.py reads -V this way when no list file labels it (`list_or_folder` decides, and
`read_unlisted` reads); create_input_files.py writes the same ids into its lists.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Dict, FrozenSet, List, Optional, Sequence

import numpy as np

from ..process.errors import DataError
from .file_list import FileList, read_file_list, read_id_csv
from .image_folders import list_subfolders, name_list, scan_class_folders, scan_flat_folder
from .imagenet import (
    NUM_IMAGENET_CLASSES,
    imagenet_val_label,
    imagenet_wnids,
    looks_like_wnids,
    official_val_labels,
)

# How `class_folder_ids` read the folders (`FolderIds.rule`).
BY_NAMES = "names"
BY_NUMBERS = "numbers"
BY_WORDNET_IDS = "wordnet"
BY_ORDER = "order"

OFFICIAL_VAL_TRUTH = "the ILSVRC2012 validation ground truth (imagenet-classes)"
CLASS_FOLDERS = "class folders"
OFFICIAL_VAL_FILES = "ILSVRC2012 validation files"


# --------------------------------------------------------------------------- class folders


@dataclass(frozen=True)
class ClassNames:
    """Class names indexed by id that give class folders their ids, and where they came from.

    `refusal` is the error for folders they leave out (format fields `root`, `source` and
    `folders`);
    without it, numbers or WordNet IDs may still give those folders their ids."""

    names: Sequence[str]
    source: str  # a csv file, or what else named the classes, for the messages
    refusal: Optional[str] = None
    allowed: Optional[FrozenSet[str]] = None  # the names a folder may have (None: all)

    @cached_property
    def index(self) -> Dict[str, int]:
        return {name: i for i, name in enumerate(self.names)
                if self.allowed is None or name in self.allowed}


def csv_class_names(path: str, refusal: Optional[str] = None) -> ClassNames:
    """The names of an id,name csv (label_wordnetid.csv)."""
    return ClassNames(read_id_csv(path), path, refusal)


@dataclass(frozen=True)
class FolderIds:
    """The id of each class folder, the class names indexed by id, and the rule that chose."""

    ids: List[int]  # parallel to the folders
    names: List[str]  # indexed by id: the folder names (a number for an id without a folder)
    rule: str  # BY_NAMES, BY_NUMBERS, BY_WORDNET_IDS or BY_ORDER
    source: str = ""  # what named the classes (BY_NAMES)

    @property
    def how(self) -> str:
        """How the folders were read as ids, for the log."""
        return {BY_NAMES: f"folder names as ids of {self.source}",
                BY_NUMBERS: "numbered folders as class ids",
                BY_WORDNET_IDS: "WordNet-ID folders as ImageNet-1k class ids",
                BY_ORDER: "folder names in alphabetical order"}[self.rule]


def class_folder_ids(folders: Sequence[str], numbers: Optional[Sequence[int]], root: str,
                     named: Optional[ClassNames] = None,
                     num_classes: Optional[int] = None) -> FolderIds:
    """The ids of the class folders of `root` (`numbers`: those of numbered folders, as
    `scan_class_folders` finds them).

    `named` decides when it names every folder; otherwise numbered folders are their own ids;
    against a weight file of `num_classes` classes, WordNet IDs are ImageNet-1k's ids (of a
    1000-class file only: a model of other classes needs the csv it was trained with) and
    other names are refused; a training tree (`num_classes` None) takes the folders' order."""
    unnamed: List[str] = []
    if named is not None:
        unnamed = [f for f in folders if f not in named.index]
        if not unnamed:
            return FolderIds([named.index[f] for f in folders], list(named.names), BY_NAMES,
                             named.source)
        if named.refusal is not None:
            raise DataError(named.refusal.format(root=root, source=named.source,
                                                 folders=", ".join(unnamed)))
    if numbers is not None:
        outside = [n for n in numbers if num_classes is not None and n >= num_classes]
        if outside:
            raise DataError(f"{os.path.join(root, str(outside[0]))}: class folder {outside[0]} "
                            f"is not a class of the weight file (0..{num_classes - 1})")
        names = [str(i) for i in range(num_classes or max(numbers) + 1)]
        for number, folder in zip(numbers, folders):
            names[number] = folder
        return FolderIds(list(numbers), names, BY_NUMBERS)
    if num_classes is None:
        return FolderIds(list(range(len(folders))), list(folders), BY_ORDER)
    if looks_like_wnids(folders):
        return imagenet_folder_ids(folders, root, num_classes)
    given = (f"{named.source} does not name {name_list(unnamed, 5)}: give" if named
             else "give --labels,")
    raise DataError(f"{root}: class folders {name_list(folders, 5)} are neither WordNet IDs "
                    f"nor class numbers: {given} the id,folder-name csv of the weight file's "
                    "classes (label_wordnetid.csv of create_input_files.py)")


def imagenet_folder_ids(folders: Sequence[str], root: str, num_classes: int) -> FolderIds:
    """WordNet-ID folders as ImageNet-1k's ids, for a weight file of its 1000 classes."""
    if num_classes != NUM_IMAGENET_CLASSES:
        raise DataError(f"{root}: WordNet-ID folders are ImageNet-1k's class ids, and the "
                        f"weight file has {num_classes} classes: give --labels, the "
                        "id,WordNet-ID csv it was trained with (label_wordnetid.csv)")
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise DataError(f"{root}: class folder(s) not among ImageNet-1k's classes: "
                        f"{name_list(unknown)}")
    return FolderIds([index[f] for f in folders], list(imagenet_wnids()), BY_WORDNET_IDS)


# --------------------------------------------------------------------------- -V without a list


@dataclass(frozen=True)
class FolderImages:
    """The images of a folder read without a list file, with the ids the folder gives them."""

    files: FileList
    source: str  # where they and their ids came from, for the summary line
    classes: Optional[FrozenSet[int]]  # the ids of its class folders, empty ones included
    note: Optional[str] = None  # for the log


def read_unlisted(root: str, num_classes: int, labels: Optional[str] = None,
                  progress: bool = True) -> FolderImages:
    """The images of `root` labelled by the folder alone: its class folders, else its flat
    official validation files with OFFICIAL_VAL_TRUTH."""
    if unlisted_kind(root) == CLASS_FOLDERS:
        return read_folder_tree(root, num_classes, labels, progress)
    return FolderImages(read_official_val(root, num_classes),
                        f"the {OFFICIAL_VAL_FILES} of {root}", None,
                        f"labels of {root} from {OFFICIAL_VAL_TRUTH}: no list file needed")


def read_folder_tree(root: str, num_classes: int, labels: Optional[str] = None,
                     progress: bool = True) -> FolderImages:
    """Every image under the class folders of `root`, labelled with the weight file's ids (a
    `labels` csv that names every folder decides)."""
    scan = scan_class_folders(root, progress)
    found = class_folder_ids(scan.classes, scan.numbers, root,
                             csv_class_names(labels) if labels is not None else None,
                             num_classes)
    if not scan.paths:
        raise DataError(f"no images in the class folders of {root}")
    files = FileList(root, scan.paths, np.asarray([found.ids[c] for c in scan.labels],
                                                  np.int32))
    return FolderImages(files, f"the class folders of {root} ({found.how})",
                        frozenset(found.ids))


def unlisted_kind(root: str) -> Optional[str]:
    """What of `root` is read without a list file: its CLASS_FOLDERS, its
    OFFICIAL_VAL_FILES (a flat folder of ILSVRC2012_val_NNNNNNNN.JPEG images only, whose
    labels imagenet-classes knows), or None (only a list labels it)."""
    if not os.path.isdir(root):
        return None
    if list_subfolders(root):
        return CLASS_FOLDERS
    names, _ = scan_flat_folder(root)
    return OFFICIAL_VAL_FILES if names and official_val_labels(names) is not None else None


def read_official_val(root: str, num_classes: int) -> FileList:
    """The images of the flat official validation folder `root`, labelled with
    OFFICIAL_VAL_TRUTH (ImageNet-1k ids: a weight file of other classes needs a list)."""
    names, _ = scan_flat_folder(root)
    labels = official_val_labels(names)
    if labels is None:  # (changed since unlisted_kind looked)
        raise DataError(unlabelled_images(root, names))
    if num_classes != NUM_IMAGENET_CLASSES:
        raise DataError(f"{root} holds ImageNet validation files, whose ground truth is "
                        f"ImageNet-1k's 1000 class ids, and the weight file has {num_classes} "
                        "classes: give --val-list with your classes' ids "
                        f"(create_input_files.py -T <training folder> --val-dir {root} "
                        "-o <folder> writes it as <folder>/val_label)")
    return FileList(root, names, np.asarray(labels, np.int32))


def check_labelled(root: str) -> None:
    """Refuse a flat folder of images that are not all official validation files when no list
    labels them, saying how to label them (a missing list alone would not)."""
    names = scan_flat_folder(root)[0] if os.path.isdir(root) else []
    if names and official_val_labels(names) is None:
        raise DataError(unlabelled_images(root, names))


def unlabelled_images(root: str, names: Sequence[str]) -> str:
    """The error of a flat folder whose labels are unknown, naming a file and the ways out."""
    other = next(n for n in names if imagenet_val_label(n) is None)
    return (f"{root}: no list file labels its images and {other} is not an ImageNet "
            "validation file (ILSVRC2012_val_NNNNNNNN.JPEG): give --val-list "
            f"(create_input_files.py -T <training folder> --val-dir {root} -V <labels file> "
            "-o <folder> writes it as <folder>/val_label), or put the images in one "
            "sub-folder per class")


def list_or_folder(listed: str, root: str, log: Callable[[str], None]) -> Optional[str]:
    """The default list file `listed` (./val_label or <root>/val_label, not asked for), or None
    to read `root` without it. A list of files of `root` wins; one of another dataset
    (ImageNet's ./val_label, left where ImageNetV2 is scored) is passed over, saying so; a flat
    folder of other images without a list is an error saying how to label it."""
    kind = unlisted_kind(root)
    if kind is None:
        if not os.path.exists(listed):
            check_labelled(root)
        return listed  # the only way to read the folder
    if not os.path.isfile(listed):
        return None
    if lists_files_of(listed, root):
        return listed
    log(f"{listed} lists files that are not in {root}: scoring its {kind}")
    return None


def lists_files_of(list_file: str, folder: str) -> bool:
    """Whether the first file `list_file` lists is in `folder`."""
    first = read_file_list(list_file, folder, check_files=False)
    return os.path.exists(first.full_path(0))
