"""Image list files (`<path relative to root> <class id>` per line) and `<id>,<value>` csv
files: read with checks, write atomically.

Every error is a `DataError` whose message names the file (and the line of a list file).
"""
from __future__ import annotations

import csv
import io
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from ..process.atomic import atomic_write_text
from ..process.errors import DataError


@dataclass
class FileList:
    """The images of one split: paths relative to `root`, class ids, and where they came from."""

    root: str
    paths: List[str]
    labels: np.ndarray  # int32 (N,)
    source: Optional[str] = None  # the list file, for error messages (None: files given)
    line_numbers: Optional[np.ndarray] = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    def full_path(self, index: int) -> str:
        return os.path.join(self.root, self.paths[index])

    def where(self, index: int) -> str:
        """'<file> (line <n> of <list>)', or the file alone when no list named it: how errors
        name a sample."""
        if self.source is None:
            return self.full_path(index)
        line = index + 1 if self.line_numbers is None else int(self.line_numbers[index])
        return f"{self.full_path(index)} (line {line} of {self.source})"

    @classmethod
    def from_files(cls, files: Sequence[str], labels: Optional[Sequence[int]] = None) -> FileList:
        """Explicit image files (for example the one image infer.py classifies), labels 0."""
        labels = [0] * len(files) if labels is None else labels
        return cls("", [os.fspath(f) for f in files], np.asarray(labels, dtype=np.int32))


def is_class_id(text: str) -> bool:
    """Whether `text` is a class id: ASCII digits only (str.isdigit also takes '²', which
    int() refuses)."""
    return re.fullmatch(r"[0-9]+", text) is not None


# The command that writes the list file each flag names, for the error of a missing one.
LIST_WRITERS = {
    "--train-list": "create_input_files.py -T <training folder> -o <folder> writes it as "
                    "<folder>/train_label",
    "--val-list": "create_input_files.py -T <training folder> --val-dir <validation folder> "
                  "-o <folder> writes it as <folder>/val_label",
}


def check_readable(path: str, what: str, flag: str = "", writer: str = "") -> None:
    """Refuse a path that cannot be read as the `what` file, saying what it is instead; a pipe
    (`<(head train_label)`) or any other readable non-folder is accepted. A missing file is
    named with the flag that gives it, for a relative path the folder it was looked for in
    (a default such as train_label is looked for in the current folder), and the command
    that would have written it (`writer`)."""
    if os.path.isdir(path):
        raise DataError(f"{what} {path} is a folder; expected a file")
    if not os.path.exists(path):
        given = f" ({flag})" if flag else ""
        where = "" if os.path.isabs(path) else f" in {os.getcwd()}"
        how = f": {writer}" if writer else ""
        raise DataError(f"{what} {path}{given} not found{where}{how}")


@contextmanager
def open_text(path: str, what: str, newline: Optional[str] = None) -> Iterator[IO[str]]:
    """Open a UTF-8 text input for reading. A byte-order mark (Excel's "CSV UTF-8", Notepad)
    is dropped, or the first line would name a file or id that does not exist. A binary file
    given in its place (an image, an archive, a weight file) is a DataError naming it, not a
    UnicodeDecodeError traceback."""
    with open(path, encoding="utf-8-sig", newline=newline) as f:
        try:
            yield f
        except UnicodeDecodeError as e:
            raise DataError(f"{what} {path} is not UTF-8 text: {e.reason}") from None


def check_folder(path: str, what: str) -> None:
    """Refuse a path that is not the `what` folder, saying what it is instead."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"{what} {path} is a file; expected a folder")
    if not os.path.isdir(path):
        raise DataError(f"{what} not found: {path}")


def read_file_list(
    list_file: str, root: str, num_classes: Optional[int] = None, check_files: bool = True,
    flag: str = "",
) -> FileList:
    """Parse and check a list file before anything expensive starts.

    Raises DataError naming the list file and line for a line that does not parse, a class id
    outside 0..num_classes-1 or a listed image that does not exist (the first one, with a count
    of the others), and naming the folder or list file (with its `flag`) when either is
    missing (and the command that writes a missing list).
    """
    check_folder(root, "image folder")
    check_readable(list_file, "list file", flag, LIST_WRITERS.get(flag, ""))
    paths: List[str] = []
    labels: List[int] = []
    lines: List[int] = []
    with open_text(list_file, "list file") as f:
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


def check_listable(path: str) -> None:
    """Refuse an image whose name holds a line break: a list file has one image per line, so
    the list written would not read back (the image would be lost, or a line fail to
    parse)."""
    if "\n" in path or "\r" in path:
        raise DataError(f"{path!r}: a file name with a line break cannot be written to a "
                        "list file; rename the file")


def format_file_list(paths: Sequence[str], labels: Iterable[int]) -> str:
    return "".join(f"{p} {int(c)}\n" for p, c in zip(paths, labels))


def write_file_list(path: str, paths: Sequence[str], labels: Iterable[int]) -> None:
    atomic_write_text(path, format_file_list(paths, labels))


def write_csv(path: str, rows: Iterable[Sequence[object]]) -> None:
    """CSV with the csv module's defaults (CRLF, quoting when needed), like the official files;
    a row with a value that begins or ends with a space is quoted whole, so that
    `read_id_csv` keeps the space (a class folder named 'cat ' read back as 'cat')."""
    buf = io.StringIO()
    plain, quoted = csv.writer(buf), csv.writer(buf, quoting=csv.QUOTE_ALL)
    for row in rows:
        padded = any(isinstance(v, str) and v != v.strip() for v in row)
        (quoted if padded else plain).writerow(row)
    atomic_write_text(path, buf.getvalue())


def _records(lines: Iterable[str]) -> Iterator[tuple]:
    """(first line number, the record's text, its fields) of each csv record of `lines`."""
    taken: List[str] = []

    def recorded() -> Iterator[str]:
        for line in lines:
            taken.append(line)
            yield line

    reader = csv.reader(recorded())
    first = 1
    for row in reader:
        yield first, "".join(taken), row
        first = reader.line_num + 1
        taken.clear()


def read_id_csv(path: str) -> List[str]:
    """A `<id>,<value>` csv (label_wordnetid.csv, label_words.csv) as a list indexed by id;
    the value is everything after the first comma, its surrounding spaces dropped unless it
    is quoted."""
    check_readable(path, "csv file")
    values: Dict[int, str] = {}
    lines: Dict[int, int] = {}  # id -> the line that gave it, to name a repeated id
    with open_text(path, "csv file", newline="") as f:
        for number, text, row in _records(f):
            if not row:
                continue
            line = text.rstrip("\r\n")
            value_quoted = line.partition(",")[2].lstrip().startswith('"')
            # A quote left open swallowed the lines after it into one name (the id count
            # then looked wrong); at the end of the file it just went unseen.
            if "\n" in line or "\r" in line or (value_quoted and not line.rstrip().endswith('"')):
                raise DataError(f'{path}:{number}: a quote (") opened on this line is not '
                                "closed on it; close it or remove it")
            if len(row) < 2 or not is_class_id(row[0].strip()):
                raise DataError(f"{path}:{number}: expected '<id>,<value>', got {row!r}")
            key = int(row[0])
            if key in values:  # the later name would silently replace the earlier one
                raise DataError(f"{path}:{number}: id {key} given again (first on line "
                                f"{lines[key]})")
            # The value is the rest of the line: a name with an unquoted comma ("bag, large";
            # the official files quote such names, users' files often do not) is whole.
            whole = value_quoted and len(row) == 2
            values[key], lines[key] = row[1] if whole else ",".join(row[1:]).strip(), number
    missing = sorted(set(range(max(values, default=-1) + 1)) - set(values))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise DataError(f"{path}: no line for id {shown}: the ids must run from 0 to the "
                        f"largest, {max(values)}, without gaps")
    return [values[i] for i in range(len(values))]
