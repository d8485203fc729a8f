"""Keep DALI's native decoder errors off stderr, where the project's own line names the file.

DALI's image decoders (nvImageCodec) print every failed decode from their native threads:
`ESC[0;31m[ERROR] ESC[0m[libjpeg_turbo_decoder] Could not decode jpeg code stream - ...`,
colour codes included even into a file, above the one line `pipelines.py` prints for the same
image (naming the file and its list line, which DALI's does not). DALI has no setting that
hides them (`DALI_NVIMGCODEC_LOG_LEVEL` keeps errors at its lowest level), and no Python
call brackets the decoding (DALI decodes ahead, in its own threads), so stderr itself is
filtered: file descriptor 2 becomes a pipe into a small child process that copies everything
to the real stderr as it comes (progress bars included) except those lines.

A child process rather than a thread: it still forwards everything written before the script
ends by `os._exit`, MPI_Abort or a signal, and needs no interpreter lock, so a hung process's
stack dump (the watchdog's) still gets out.
"""
from __future__ import annotations

import array
import atexit
import fcntl
import os
import shutil
import stat
import sys
import termios
import time
from typing import Optional, Tuple

# The start of every line nvImageCodec's default messenger prints for an error.
DECODER_ERROR_MARK = b"\x1b[0;31m[ERROR] \x1b[0m["

# The child: copy stdin to stdout unchanged but for the lines starting with MARK. A partial
# line is forwarded at once (a progress bar redraws with '\r', no newline), unless it may
# still become a marked line. It ignores the signals a terminal or scheduler sends to the
# whole job, and ends at the end of its input: when every process writing to it has ended.
_FILTER = r"""
import os, signal, sys
os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # no inherited socket or pipe held open
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)  # ends when the script does, after its last line
MARK = bytes.fromhex(sys.argv[1])
held, at_start, dropping = b"", True, False
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    data, held, out = held + chunk, b"", bytearray()
    while data:
        if at_start and not dropping:
            if len(data) < len(MARK) and MARK.startswith(data):
                held, data = data, b""
                break
            dropping = data.startswith(MARK)
        end = data.find(b"\n")
        line, data = (data, b"") if end < 0 else (data[:end + 1], data[end + 1:])
        at_start = end >= 0
        if not dropping:
            out += line
        if at_start:
            dropping = False
    if out:
        os.write(1, bytes(out))
if held:
    os.write(1, held)
"""

_installed: Optional[Tuple[int, int]] = None  # (device, inode) of the pipe now on fd 2
_real_stderr: Optional[int] = None  # a copy of the stderr the filter writes to
_filter: Optional[int] = None  # the child's process id
DRAIN_SECONDS = 5.0  # at most, for the child to pass on what is left


def _identity(fd: int) -> Tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def filter_decoder_errors() -> None:
    """Route this process's stderr through the filter (once; again if fd 2 was replaced)."""
    global _installed, _real_stderr, _filter
    if _installed is not None and _identity(2) == _installed:
        return
    drain()
    sys.stderr.flush()
    if os.isatty(2):  # tqdm sizes its bars from the terminal, or from COLUMNS through a pipe
        os.environ.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    read_end, write_end = os.pipe()
    try:
        # Its own session: a terminal's Ctrl-C or a launcher's kill of the job's process
        # group must not end it before the script's last line is through.
        _filter = os.posix_spawn(
            sys.executable, [sys.executable, "-S", "-E", "-c", _FILTER,
                             DECODER_ERROR_MARK.hex()], os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, 2, 1), (os.POSIX_SPAWN_DUP2, read_end, 0),
                          (os.POSIX_SPAWN_CLOSE, write_end)],
            setsid=True)
    finally:
        os.close(read_end)
    _real_stderr = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    _installed = _identity(2)


def drain() -> None:
    """Give fd 2 back to the real stderr and wait (briefly) until the filter has passed on
    everything written before: for an exit that does not wait for it (MPI_Abort, whose
    launcher stops reading, and the end of the interpreter)."""
    global _installed, _real_stderr, _filter
    if _real_stderr is None:
        return
    sys.stderr.flush()
    if _installed is not None and _identity(2) == _installed:
        os.dup2(_real_stderr, 2)  # the pipe's last writer gone: the filter reads its end
    os.close(_real_stderr)
    _installed = _real_stderr = None
    deadline = time.monotonic() + DRAIN_SECONDS
    while _filter is not None and time.monotonic() < deadline:
        if os.waitpid(_filter, os.WNOHANG)[0]:
            _filter = None
        else:
            time.sleep(0.005)


def wait_until_read(fd: int = 2, seconds: float = DRAIN_SECONDS) -> None:
    """Wait (briefly) until the reader of the pipe on `fd` has taken all that was written.

    Before MPI_Abort: Hydra's proxy stops reading a rank's stderr when the job is aborted,
    and a line still in the pipe at that moment is lost (measured: about one run in twelve,
    on both ranks' lines). Nothing to wait for when fd 2 is a file or a terminal.
    """
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return
    unread = array.array("i", [0])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fcntl.ioctl(fd, termios.FIONREAD, unread)  # bytes still in the pipe (either end)
        if unread[0] == 0:
            return
        time.sleep(0.005)


atexit.register(drain)
