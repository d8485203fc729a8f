"""TensorBoard event files of a training run, written with tensorboardX into
`<monitor path>/tensorboard/` (rank 0) as the run goes; tensorboardX queues the events and a
thread of its own writes them, flushing at least every `flush_secs`.

Every event's step is the number of training iterations done (over the whole run), so that
the curves of every session of a run line up. Each session writes a new event file that
starts with a purge at its first step: TensorBoard (its Python reader and its fast data
server alike) then discards what an interrupted session wrote past the checkpoint the run
resumed from, and a resumed run continues the same curves without a repeated or missing
step. A run that starts afresh in a folder with event files purges them all.
"""
from __future__ import annotations

import glob
import os
import sys
import threading
from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np

FOLDER = "tensorboard"
FLUSH_SECONDS = 30
EVENT_FILE_PATTERN = "events.out.tfevents.*"


def _writer_failure_is_a_warning() -> None:
    """tensorboardX writes in a thread of its own: a write that fails there (a full disk)
    becomes a one-line warning instead of a thread's traceback; training goes on (the series
    files are the run's record, the event files a view of it)."""
    from tensorboardX.event_file_writer import _EventLoggerThread

    previous = threading.excepthook
    if getattr(previous, "tensorboard_warning", False):
        return

    def hook(args: Any) -> None:
        if isinstance(args.thread, _EventLoggerThread) and issubclass(args.exc_type, OSError):
            print(f"warning: TensorBoard events no longer written: {args.exc_value}",
                  file=sys.stderr, flush=True)
        else:
            previous(args)

    hook.tensorboard_warning = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def tensorboard_folder(monitor_path: str) -> str:
    return os.path.join(monitor_path, FOLDER)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; numbers, strings and booleans stay, None,
    integers beyond int64 and anything else (lists, tuples) become their text."""
    flat: Dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, int) and not isinstance(value, bool) \
                and not -2**63 <= value < 2**63:
            flat[name] = str(value)  # (HParams keeps numbers as int64 or float64)
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TensorBoard:
    """One session's event file in `folder`; `start_step` is the step of its first event:
    events of earlier sessions at this step or later are discarded by the readers."""

    def __init__(self, folder: str, start_step: int, flush_secs: int = FLUSH_SECONDS):
        _writer_failure_is_a_warning()
        self.folder = folder
        self.flush_secs = flush_secs
        self._session_hparams: Optional[tuple] = None
        self.writer = self._open(start_step)

    def _open(self, start_step: int) -> Any:
        from tensorboardX import SummaryWriter

        os.makedirs(self.folder, exist_ok=True)
        # The file name holds the time in seconds and the host: a session number keeps two
        # sessions started within one second apart, in order.
        session = len(glob.glob(os.path.join(self.folder, EVENT_FILE_PATTERN)))
        return SummaryWriter(self.folder, purge_step=start_step, flush_secs=self.flush_secs,
                             filename_suffix=f".{session:04d}")

    def _reopen_if_removed(self, step: int) -> None:
        """A folder removed while the run trains (its events would go to a deleted file) is
        made again, with a new event file from `step` on, and a warning."""
        if os.path.isdir(self.folder):
            return
        print(f"warning: {self.folder} was removed while the run trained: made again; the "
              f"TensorBoard events before step {step} are gone", file=sys.stderr, flush=True)
        self._io(self.writer.close)
        try:
            self.writer = self._open(step)
        except OSError as e:
            print(f"warning: TensorBoard events not written to {self.folder}: {e}",
                  file=sys.stderr, flush=True)
            return
        if self._session_hparams is not None:
            self.hparams(*self._session_hparams, step)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        self._reopen_if_removed(step)
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An RGB uint8 (H, W, 3) image, stored exactly (PNG)."""
        self._reopen_if_removed(step)
        self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def text(self, tag: str, markdown: str, step: int) -> None:
        self._reopen_if_removed(step)
        self.writer.add_text(tag, markdown, step)

    def hparams(self, values: Mapping[str, Any], metric_tags: Iterable[str], step: int) -> None:
        """The session's hyper-parameters, and the scalar tags the HParams view shows
        against them (their latest values)."""
        from tensorboardX.summary import hparams

        self._session_hparams = (dict(values), list(metric_tags))
        experiment, start, _ = hparams(dict(values), {tag: 0.0 for tag in metric_tags})
        self._file_writer().add_summary(experiment, step)
        self._file_writer().add_summary(start, step)

    def finished(self, step: int) -> None:
        """Mark the session as ended successfully (the HParams view's status)."""
        from tensorboardX.summary import hparams

        self._reopen_if_removed(step)
        _, _, end = hparams({}, {})
        self._file_writer().add_summary(end, step)

    def _file_writer(self) -> Any:
        return self.writer._get_file_writer()

    def flush(self) -> None:
        self._io(self.writer.flush)

    def close(self) -> None:
        self._io(self.writer.close)

    def _io(self, write: Any) -> None:
        """Write out what is queued; a failure (a full disk) is a warning, as in the writing
        thread, and does not hide an error being reported."""
        try:
            write()
        except OSError as e:
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
    """The session's writer (None when disabled or not rank 0). A resumed run purges the
    steps after `start_step` (the events at it were written before its checkpoint), a fresh
    one every step."""
    if not enabled:
        return None
    return TensorBoard(tensorboard_folder(monitor_path), start_step + 1 if resumed else 0)
