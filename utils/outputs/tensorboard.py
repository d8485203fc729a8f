"""TensorBoard event files of a training run, written with tensorboardX into
`<monitor path>/tensorboard/` (rank 0) as the run goes.

Every event's step is the number of training iterations done (over the whole run), so that
the curves of every session of a run line up. Each session writes a new event file that
starts with a purge at its first step: TensorBoard (its Python reader and its fast data
server alike) then discards what an interrupted session wrote past the checkpoint the run
resumed from, and a resumed run continues the same curves without a repeated or missing
step. A run that starts afresh in a folder with event files purges them all.

Events are written in the caller's thread, each call's through to the file before it
returns, with tensorboardX's public record writer and summary builders. `SummaryWriter`
hands them to a thread of its own instead, and a write that fails there (a full disk) can be
neither caught nor seen: Python prints the thread's traceback, and the thread's bounded queue
then blocks the training loop for good at the next events. Here such a failure is one warning
line, the session writes no more events, and training goes on: the series files are the
run's record, the event files a view of it. A folder removed while the run trains is made
again, with a new event file.
"""
from __future__ import annotations

import contextlib
import glob
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np

FOLDER = "tensorboard"
EVENT_FILE_PATTERN = "events.out.tfevents.*"
FLOAT64_EXACT = 2**53  # the integers up to it are exact in a float64


def tensorboard_folder(monitor_path: str) -> str:
    return os.path.join(monitor_path, FOLDER)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; numbers, strings and booleans stay, None,
    integers a float64 does not hold exactly (beyond 2**53) and anything else (lists,
    tuples) become their text."""
    flat: Dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, int) and not isinstance(value, bool) \
                and not -FLOAT64_EXACT <= value <= FLOAT64_EXACT:
            flat[name] = str(value)  # (HParams keeps every number as a float64)
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TensorBoard:
    """One session's event file in `folder`; `start_step` is the step of its first event:
    events of earlier sessions at this step or later are discarded by the readers."""

    def __init__(self, folder: str, start_step: int):
        self.folder = folder
        # The HParams summaries a new event file repeats (after the folder was removed).
        self._session_start: List[Any] = []
        self._stopped = False  # after a failed write: the file's end is no longer a record's
        self._file = self._open(start_step)

    def _open(self, start_step: int) -> Any:
        """A new event file that begins with the purge of the steps from `start_step` on."""
        from tensorboardX import RecordWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        os.makedirs(self.folder, exist_ok=True)
        # TensorBoard reads a folder's event files in name order: the time in seconds, the
        # host, then a session number that keeps two sessions started within a second apart.
        session = len(glob.glob(os.path.join(self.folder, EVENT_FILE_PATTERN)))
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{session:04d}"
        record_file = RecordWriter(os.path.join(self.folder, name))
        now = time.time()
        record_file.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        record_file.write(Event(wall_time=now, step=start_step, session_log=SessionLog(
            status=SessionLog.START)).SerializeToString())
        record_file.flush()
        return record_file

    def _write(self, step: int, summaries: Callable[[], Iterable[Any]]) -> None:
        """Append what `summaries()` builds (not called once writing stopped: an image's PNG
        costs) as events at `step`, through to the file."""
        if not self._stopped and not os.path.isdir(self.folder):
            self._reopen(step)
        if self._stopped:
            return
        from tensorboardX.proto.event_pb2 import Event

        try:
            for summary in summaries():
                self._file.write(Event(wall_time=time.time(), step=step,
                                       summary=summary).SerializeToString())
            self._file.flush()
        except OSError as e:
            self._stopped = True
            print(f"warning: TensorBoard events no longer written: {e}", file=sys.stderr,
                  flush=True)
            with contextlib.suppress(OSError):  # (the same failure again: said once)
                self._file.close()

    def _reopen(self, step: int) -> None:
        """The folder was removed while the run trained (its events would go to a deleted
        file): make it again, with a new event file from `step` on, and warn."""
        print(f"warning: {self.folder} was removed while the run trained: made again; the "
              f"TensorBoard events before step {step} are gone", file=sys.stderr, flush=True)
        self.close()
        try:
            self._file = self._open(step)
        except OSError as e:
            self._stopped = True
            print(f"warning: TensorBoard events not written to {self.folder}: {e}",
                  file=sys.stderr, flush=True)
            return
        self._write(step, lambda: self._session_start)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        from tensorboardX.summary import scalar

        self._write(step, lambda: [scalar(tag, float(value)) for tag, value in values.items()])

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An RGB uint8 (H, W, 3) image, stored exactly (PNG)."""
        from tensorboardX.summary import image

        self._write(step, lambda: [image(tag, rgb, dataformats="HWC")])

    def text(self, tag: str, markdown: str, step: int) -> None:
        from tensorboardX.summary import text

        self._write(step, lambda: [text(tag, markdown)])

    def hparams(self, values: Mapping[str, Any], metric_tags: Iterable[str], step: int) -> None:
        """The session's hyper-parameters, and the scalar tags the HParams view shows
        against them (their latest values)."""
        from tensorboardX.summary import hparams

        experiment, start, _ = hparams(dict(values), {tag: 0.0 for tag in metric_tags})
        self._session_start = [experiment, start]
        self._write(step, lambda: self._session_start)

    def finished(self, step: int) -> None:
        """Mark the session as ended successfully (the HParams view's status)."""
        from tensorboardX.summary import hparams

        self._write(step, lambda: hparams({}, {})[2:])

    def flush(self) -> None:
        """Nothing to do: each call's events are in the file when it returns."""

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:  # (a full disk) a warning, which does not hide an error reported
            print(f"warning: TensorBoard events not written to {self.folder}: {e}",
                  file=sys.stderr, flush=True)


def figure_pixels(figure: Any) -> np.ndarray:
    """A matplotlib Figure drawn as RGB uint8 (H, W, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def open_tensorboard(monitor_path: str, enabled: bool, start_step: int, resumed: bool
                     ) -> Optional[TensorBoard]:
    """The session's writer (None with --no-tensorboard). A resumed run purges the
    steps after `start_step` (the events at it were written before its checkpoint), a fresh
    one every step."""
    if not enabled:
        return None
    return TensorBoard(tensorboard_folder(monitor_path), start_step + 1 if resumed else 0)
