"""Atomic file output: write beside the destination, sync, then rename over it.

A crash or an error at any moment (a full disk included) leaves either the old file or the
complete new one, never a half-written file under the real name. Only `kill -9` or a power
cut can leave a temporary `.tmp-<name>.*` file behind; `remove_stale_temporaries` deletes
them when a run restarts. `check_writable` and `check_room` find an output folder that
cannot take the files before any work starts, and `lock_folder` keeps a second run out of a
folder that one is writing to (it would remove the first one's temporaries and interleave
its outputs).
"""
from __future__ import annotations

import contextlib
import fcntl
import filecmp
import os
import resource
import shutil
import socket
import tempfile
import time
from typing import IO, Any, Callable, Iterator, List, Optional, Sequence

from .errors import OutputError

TEMPORARY_PREFIX = ".tmp-"
LOCK_NAME = ".lock"
MEGABYTE = 1 << 20
_MKSTEMP_RANDOM = 8  # characters tempfile.mkstemp puts between the prefix and the suffix
WRITE_MARGIN = 1 << 16  # bytes of a file's structure beyond its arrays (zip, HDF5 headers)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _naming(path: str, error: OSError) -> OutputError:
    """The same error, its message naming the file being written (an ENOSPC says no file)."""
    named = OutputError(f"cannot write {path}: {error.strerror or error}")
    named.errno = error.errno
    return named


def _temporary_prefix(folder: str, path: str, suffix: str) -> str:
    """`.tmp-<name>.`, the name cut so that the temporary file's name (the prefix, mkstemp's 8
    random characters, `suffix`) is no longer than the folder allows: an output name that
    fits must not fail as "File name too long" for its temporary name."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    name = os.fsencode(os.path.basename(path))
    room = limit - len(TEMPORARY_PREFIX) - 1 - _MKSTEMP_RANDOM - len(os.fsencode(suffix))
    return f"{TEMPORARY_PREFIX}{os.fsdecode(name[:max(room, 0)])}."


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path to write; it replaces `path` when the block ends without error.

    An OSError (full disk, file size limit, read-only folder) comes out naming `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(folder, path, suffix),
                                   suffix=suffix, dir=folder)
    except OSError as e:
        existing = nearest_existing(folder)
        if not os.path.isdir(existing):  # makedirs says "File exists", which misleads
            raise OutputError(f"cannot write {path}: {existing} is a file, not a folder") \
                from None
        raise _naming(path, e) from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp's 0600 suits secrets, not results
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(folder)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise _naming(path, e) from None
        raise


def atomic_write_text(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def remove_stale_temporaries(folder: str) -> List[str]:
    """Delete the temporary files that interrupted atomic writes left in `folder`.

    Only for a folder no other process is writing to (a run's own output folder).
    """
    removed = []
    if os.path.isdir(folder):
        for entry in os.scandir(folder):
            if entry.name.startswith(TEMPORARY_PREFIX) and entry.is_file():
                os.remove(entry.path)
                removed.append(entry.path)
    return removed


def check_writable(folder: str, what: str = "output folder") -> None:
    """Create `folder` if needed and write, sync and delete a file in it.

    Raises OutputError with a one-line reason (not a folder, read-only, no permission, full).
    """
    check_can_create(folder, what)  # a file in the way is named as such
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{TEMPORARY_PREFIX}write-test.", dir=folder)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as e:
        raise OutputError(f"cannot write to the {what} {folder}: {e.strerror or e}") from None


def check_can_create(folder: str, what: str = "output folder") -> None:
    """Whether `folder` could be written to, creating nothing: it is a folder, or the nearest
    existing path above it is a writable folder (so that a run failing early leaves nothing).
    `check_writable` also writes a file there."""
    existing = nearest_existing(folder)
    if not os.path.isdir(existing):
        raise OutputError(f"cannot write to the {what} {folder}: {existing} is a file")
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        raise OutputError(f"cannot write to the {what} {folder}: Read-only file system "
                          f"({existing})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to the {what} {folder}: {existing} is not writable")


def check_subfolders(folder: str, names: Sequence[str], what: str) -> None:
    """Before any work: no file stands where a run will make its sub-folders `names` of
    `folder` (os.makedirs said "[Errno 17] File exists" when it came to them, for the
    checkpoints only after the first epoch had trained)."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            raise OutputError(f"cannot write to the {what} {folder}: {path} is a file, where "
                              f"the run makes its folder {name}/; move the file away or give "
                              "another folder")


def check_output_file(path: str, flag: str, kind: str, is_kind: Callable[[str], bool],
                      example_name: str) -> Optional[str]:
    """Before any work: whether `path`, named by the option `flag`, can take an output of
    `kind` (e.g. "a benchmark CSV"). A folder (`example_name`: a file name to suggest in
    it), a parent that cannot be created or written, or an existing file that `is_kind`
    does not recognise is an `OutputError` naming the option, and the user's file is kept;
    an existing output of the same kind is replaced, and the line returned says so (None:
    a new file)."""
    if os.path.isdir(path):
        raise OutputError(f"{flag} {path} is a folder; name the file to write, e.g. "
                          f"{os.path.join(path, example_name)}")
    check_can_create(os.path.dirname(os.path.abspath(path)), f"{flag} folder")
    if not os.path.lexists(path):
        return None
    if not os.path.isfile(path) or not is_kind(path):
        raise OutputError(f"{flag} {path} exists and is not {kind}; it is kept: remove it or "
                          "choose another name")
    return f"{path} exists ({kind}): replacing it"


def nearest_existing(path: str) -> str:
    """`path` (absolute) or the nearest path above it that exists."""
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    return existing


def check_room_for(path: str, size: int, what: str) -> None:
    """Before writing `size` bytes to `path`: room on its disk (and a little for the file's
    own structure), so that a full disk stops the run before the write, with the files
    written so far intact. Measured where the folders `atomic_path` creates will be."""
    check_room(nearest_existing(os.path.dirname(os.path.abspath(path))), size,
               size + WRITE_MARGIN, what)


def check_room(folder: str, largest_file: int, total: int, what: str = "output folder") -> None:
    """Raise OutputError unless `folder` has `total` bytes free and files of `largest_file` bytes
    are allowed (the shell's `ulimit -f`)."""
    free = shutil.disk_usage(folder).free
    if free < total:
        raise OutputError(f"not enough space in the {what} {folder}: {free / MEGABYTE:.1f} MB "
                      f"free, {total / MEGABYTE:.1f} MB needed")
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and limit < largest_file:
        raise OutputError(f"the file size limit (ulimit -f) of {limit / MEGABYTE:.1f} MB is below "
                      f"the {largest_file / MEGABYTE:.1f} MB files written to {folder}")


def lock_folder(folder: str, what: str = "output folder") -> IO[str]:
    """Lock `folder` for this process until it exits, or raise naming the run that holds it.

    The operating system drops the lock when its holder dies, even by `kill -9`, so a crashed
    run never leaves a stale lock. Keep the returned file open for as long as the lock is
    needed.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise OutputError(f"{folder}: {what} in use by {holder}; wait for that run to end, stop "
                      f"it, or choose another path") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"the run with pid {os.getpid()} on {socket.gethostname()} started "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    return handle


class PreviousFiles:
    """Writes outputs; an existing file with other contents is first kept as
    `<name>.previous` (a list or label file the user edited is never lost). `replaced` names
    the files so kept."""

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
