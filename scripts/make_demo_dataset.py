#!/usr/bin/env python
"""Build a small ImageNet-style demo dataset from Fashion-MNIST photographs.

The output mirrors the layout of the ImageNet (ILSVRC2012) image folders so that the
training / validation scripts can be exercised end to end without ImageNet itself:

    <output>/train/<class>/<class>_<index>.JPEG   one folder per class
    <output>/val/ILSVRC2012_val_00000001.JPEG     flat, numbered from 1
    <output>/val_ground_truth.txt                 class id of val image i on line i
    <output>/README.md                            provenance, counts, class ids, licence

Class ids are the positions of the folder names in alphabetical order (as for the
ImageNet synset folders). `<index>` in a training file name is the image's index in the
Fashion-MNIST training split. Images stay 28x28 single-channel (greyscale) JPEGs.

The source is the four idx files of Fashion-MNIST (gzip-compressed or not), by default
from the Debian package `dataset-fashion-mnist` (`apt-get install dataset-fashion-mnist`).
The selection is seeded and the output is byte-for-byte reproducible.

Example:
    .venv/bin/python scripts/make_demo_dataset.py --output data/demo
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import shutil
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

# Where the Debian package `dataset-fashion-mnist` installs the idx files.
DEFAULT_SOURCE = Path("/usr/share/datasets/fashion-mnist")

# Fashion-MNIST label k -> folder name (lower-case, filesystem-safe).
FASHION_LABEL_NAMES: Tuple[str, ...] = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)
# Fashion-MNIST's own descriptions of the labels, for the README.
FASHION_LABEL_TITLES: Tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Class ids follow alphabetical folder order, as torchvision/ImageNet folder loaders do.
CLASS_NAMES: Tuple[str, ...] = tuple(sorted(FASHION_LABEL_NAMES))

SPLIT_FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

VAL_NAME_FORMAT = "ILSVRC2012_val_{:08d}.JPEG"
GROUND_TRUTH_NAME = "val_ground_truth.txt"

DEFAULT_TRAIN_PER_CLASS = 200
DEFAULT_VAL_PER_CLASS = 40
DEFAULT_SEED = 0
DEFAULT_QUALITY = 90

_IDX_UBYTE = 0x08


@dataclass
class DemoSummary:
    """What `make_demo_dataset` wrote, for the README and the caller."""

    output: Path
    train_per_class: int
    val_per_class: int
    seed: int
    quality: int
    source_sha256: Dict[str, str] = field(default_factory=dict)
    train_count: int = 0
    val_count: int = 0


def fashion_to_class_id() -> np.ndarray:
    """Lookup table: Fashion-MNIST label (0..9) -> demo class id (alphabetical order)."""
    return np.array([CLASS_NAMES.index(name) for name in FASHION_LABEL_NAMES], dtype=np.int64)


def find_idx_file(source: Path, stem: str) -> Path:
    """Return `source/stem` or `source/stem.gz`, whichever exists."""
    for candidate in (source / stem, source / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{stem}[.gz] not found in {source}; install the Debian package "
        "'dataset-fashion-mnist' or pass --source DIR"
    )


def source_available(source: Path = DEFAULT_SOURCE) -> bool:
    """True if all four Fashion-MNIST idx files are present in `source`."""
    try:
        for stems in SPLIT_FILES.values():
            for stem in stems:
                find_idx_file(source, stem)
    except FileNotFoundError:
        return False
    return True


def read_idx_bytes(path: Path) -> bytes:
    """The decompressed content of an idx file (gzip is detected by its magic bytes)."""
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def parse_idx(data: bytes) -> np.ndarray:
    """Decode an unsigned-byte idx array (the MNIST file format) into a numpy array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError("not an idx file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code != _IDX_UBYTE:
        raise ValueError(f"unsupported idx element type 0x{dtype_code:02x} (want unsigned byte)")
    header_end = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header_end])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header_end != expected:
        got = len(data) - header_end
        raise ValueError(f"idx payload has {got} bytes, shape {shape} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(shape)


def load_split(source: Path, split: str) -> Tuple[np.ndarray, np.ndarray, Dict[str, str]]:
    """Images (N, 28, 28) uint8, labels (N,) and the sha256 of each decompressed file."""
    hashes: Dict[str, str] = {}
    arrays: List[np.ndarray] = []
    for stem in SPLIT_FILES[split]:
        data = read_idx_bytes(find_idx_file(source, stem))
        hashes[stem] = hashlib.sha256(data).hexdigest()
        arrays.append(parse_idx(data))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"{split}: images {images.shape} do not match labels {labels.shape}")
    return images, labels, hashes


def balanced_subset(
    labels: np.ndarray, per_class: int, rng: np.random.RandomState
) -> List[np.ndarray]:
    """For each Fashion-MNIST label, `per_class` random indices (sorted) of that label."""
    picks = []
    for label in range(len(FASHION_LABEL_NAMES)):
        pool = np.flatnonzero(labels == label)
        if len(pool) < per_class:
            raise ValueError(f"label {label} has only {len(pool)} images, {per_class} requested")
        picks.append(np.sort(rng.permutation(pool)[:per_class]))
    return picks


def save_jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    """Write a 2-D uint8 array as a single-channel baseline JPEG."""
    Image.fromarray(np.ascontiguousarray(image)).save(path, format="JPEG", quality=quality)


def _prepare_output(output: Path, overwrite: bool) -> None:
    owned = [output / "train", output / "val", output / GROUND_TRUTH_NAME]
    existing = [p for p in owned if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    output.mkdir(parents=True, exist_ok=True)


def make_demo_dataset(
    source: Path,
    output: Path,
    train_per_class: int = DEFAULT_TRAIN_PER_CLASS,
    val_per_class: int = DEFAULT_VAL_PER_CLASS,
    seed: int = DEFAULT_SEED,
    quality: int = DEFAULT_QUALITY,
    overwrite: bool = False,
) -> DemoSummary:
    """Write the train folders, the flat val folder and its ground truth (not the README).

    The training images come from the Fashion-MNIST training split and the validation
    images from its test split, `*_per_class` of each label, chosen with a seeded legacy
    `numpy.random.RandomState` (whose streams numpy keeps stable across versions).
    """
    summary = DemoSummary(output, train_per_class, val_per_class, seed, quality)
    to_class_id = fashion_to_class_id()
    _prepare_output(output, overwrite)

    # Training split -> train/<class>/<class>_<fashion index>.JPEG
    images, labels, hashes = load_split(source, "train")
    summary.source_sha256.update(hashes)
    width = len(str(len(images) - 1))
    rng = np.random.RandomState([seed, 0])
    for label, indices in enumerate(balanced_subset(labels, train_per_class, rng)):
        name = FASHION_LABEL_NAMES[label]
        folder = output / "train" / name
        folder.mkdir(parents=True)
        for index in indices:
            save_jpeg(images[index], folder / f"{name}_{index:0{width}d}.JPEG", quality)
            summary.train_count += 1

    # Test split -> val/ILSVRC2012_val_%08d.JPEG in shuffled order + one class id per line.
    images, labels, hashes = load_split(source, "test")
    summary.source_sha256.update(hashes)
    rng = np.random.RandomState([seed, 1])
    chosen = np.concatenate(balanced_subset(labels, val_per_class, rng))
    chosen = chosen[rng.permutation(len(chosen))]
    folder = output / "val"
    folder.mkdir(parents=True)
    lines = []
    for number, index in enumerate(chosen, start=1):
        save_jpeg(images[index], folder / VAL_NAME_FORMAT.format(number), quality)
        lines.append(f"{to_class_id[labels[index]]}\n")
    (output / GROUND_TRUTH_NAME).write_text("".join(lines), encoding="ascii")
    summary.val_count = len(lines)
    return summary


README_TEMPLATE = """\
# Fashion-MNIST demo set in ImageNet layout

A tiny stand-in for ImageNet: {total:,} real product photographs from Zalando's
Fashion-MNIST, stored in exactly the folder layout the ImageNet scripts expect, so that
data loading, training and validation can be tried end to end in seconds and in CI.
It is for smoke tests and demos only; its accuracies say nothing about ImageNet.

## Contents

| Path | What | Count |
| --- | --- | --- |
| `train/<class>/<class>_<index>.JPEG` | training, {train_per_class} a class | {train_count:,} |
| `val/ILSVRC2012_val_%08d.JPEG` | validation, flat, from 1, mixed | {val_count:,} |
| `{ground_truth}` | class id of val image *i* on line *i* | {val_count:,} lines |

The ground-truth file plays the part of ImageNet's `validation_data_label.txt`.
Each image is a 28x28 single-channel (greyscale) JPEG of quality {quality}; loaders must
convert to RGB (and usually upscale) before feeding a network. `<index>` in a training
file name is the image's position in the Fashion-MNIST training split; the validation
images come from the Fashion-MNIST test split, so no photograph appears in both.

## Class ids

Ids follow the alphabetical order of the folder names, as for ImageNet's synset folders.

| Id | Folder | Fashion-MNIST label |
| --- | --- | --- |
{class_rows}

## How it was made

With the Debian package `dataset-fashion-mnist` installed (it puts the original idx
files in `/usr/share/datasets/fashion-mnist`), from the repository root:

```bash
{command}
```

The script draws `{train_per_class}` images of every label at random from the training
split and `{val_per_class}` from the test split (seed {seed}, numpy's legacy
`RandomState`), then shuffles the validation order. Running it again gives byte-identical
files (with the same Pillow/libjpeg). SHA-256 of the decompressed source files it read:

| File | SHA-256 |
| --- | --- |
{hash_rows}

## Source, attribution and licence

The photographs are a subset of **Fashion-MNIST** by Zalando Research (Zalando SE),
<https://github.com/zalandoresearch/fashion-mnist>, described in

> Han Xiao, Kashif Rasul, Roland Vollgraf. *Fashion-MNIST: a Novel Image Dataset for
> Benchmarking Machine Learning Algorithms.* arXiv:1708.07747, 2017.

Only the file format changed here (idx arrays re-encoded as JPEG files, with
a selection of the images). Fashion-MNIST is distributed under the MIT licence, whose
notice must accompany copies and is reproduced here as published by the project:

```text
The MIT License (MIT) Copyright © [2017] Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the “Software”), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify,
merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
permit persons to whom the Software is furnished to do so, subject to the following
conditions:

The above copyright notice and this permission notice shall be included in all copies
or substantial portions of the Software.

THE SOFTWARE IS PROVIDED “AS IS”, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.
```

The same notice ships with the Debian package in
`/usr/share/doc/dataset-fashion-mnist/copyright` (as `License: Expat`, Debian's name for
the MIT licence) and at the end of `/usr/share/doc/dataset-fashion-mnist/README.md.gz`.
"""


def render_readme(summary: DemoSummary, command: str) -> str:
    """The README text for a dataset described by `summary`, made by `command`."""
    class_rows = "\n".join(
        f"| {class_id} | `{name}` | {FASHION_LABEL_TITLES[FASHION_LABEL_NAMES.index(name)]} "
        f"(label {FASHION_LABEL_NAMES.index(name)}) |"
        for class_id, name in enumerate(CLASS_NAMES)
    )
    hash_rows = "\n".join(
        f"| `{stem}` | `{digest}` |" for stem, digest in summary.source_sha256.items()
    )
    return README_TEMPLATE.format(
        total=summary.train_count + summary.val_count,
        train_per_class=summary.train_per_class,
        val_per_class=summary.val_per_class,
        train_count=summary.train_count,
        val_count=summary.val_count,
        ground_truth=GROUND_TRUTH_NAME,
        quality=summary.quality,
        seed=summary.seed,
        class_rows=class_rows,
        hash_rows=hash_rows,
        command=command,
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build an ImageNet-layout demo dataset from Fashion-MNIST.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="folder holding the four Fashion-MNIST idx files (.gz or not); the default is "
        "where the Debian package dataset-fashion-mnist installs them",
    )
    parser.add_argument(
        "--output", type=Path, default=Path("data/demo"), help="folder to write the dataset to"
    )
    parser.add_argument(
        "--train-per-class",
        type=int,
        default=DEFAULT_TRAIN_PER_CLASS,
        help="training images per class (from the Fashion-MNIST training split)",
    )
    parser.add_argument(
        "--val-per-class",
        type=int,
        default=DEFAULT_VAL_PER_CLASS,
        help="validation images per class (from the Fashion-MNIST test split)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the selection")
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="JPEG quality (1-95)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace train/, val/ and the ground truth if the output already has them",
    )
    args = parser.parse_args(argv)
    if args.train_per_class < 1 or args.val_per_class < 1:
        parser.error("--train-per-class and --val-per-class must be positive")
    if not 1 <= args.quality <= 95:
        parser.error("--quality must be in 1..95")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        summary = make_demo_dataset(
            args.source,
            args.output,
            train_per_class=args.train_per_class,
            val_per_class=args.val_per_class,
            seed=args.seed,
            quality=args.quality,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    command = (
        f".venv/bin/python scripts/make_demo_dataset.py --output {args.output.as_posix()} "
        f"--train-per-class {args.train_per_class} --val-per-class {args.val_per_class} "
        f"--seed {args.seed} --quality {args.quality}"
    )
    (args.output / "README.md").write_text(render_readme(summary, command), encoding="utf-8")
    print(
        f"wrote {summary.train_count} training and {summary.val_count} validation images "
        f"to {args.output} in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
