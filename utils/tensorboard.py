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
from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np

FOLDER = "tensorboard"
FLUSH_SECONDS = 30
EVENT_FILE_PATTERN = "events.out.tfevents.*"


def tensorboard_folder(monitor_path: str) -> str:
    return os.path.join(monitor_path, FOLDER)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`; numbers, strings and booleans stay, None and
    anything else (lists, tuples) become their text."""
    flat: Dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TensorBoard:
    """One session's event file in `folder`; `start_step` is the step of its first event:
    events of earlier sessions at this step or later are discarded by the readers."""

    def __init__(self, folder: str, start_step: int, flush_secs: int = FLUSH_SECONDS):
        from tensorboardX import SummaryWriter

        os.makedirs(folder, exist_ok=True)
        # The file name holds the time in seconds and the host: a session number keeps two
        # sessions started within one second apart, in order.
        session = len(glob.glob(os.path.join(folder, EVENT_FILE_PATTERN)))
        self.writer = SummaryWriter(folder, purge_step=start_step, flush_secs=flush_secs,
                                    filename_suffix=f".{session:04d}")

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, float(value), step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An RGB uint8 (H, W, 3) image, stored exactly (PNG)."""
        self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def text(self, tag: str, markdown: str, step: int) -> None:
        self.writer.add_text(tag, markdown, step)

    def hparams(self, values: Mapping[str, Any], metric_tags: Iterable[str], step: int) -> None:
        """The session's hyper-parameters, and the scalar tags the HParams view shows
        against them (their latest values)."""
        from tensorboardX.summary import hparams

        experiment, start, _ = hparams(dict(values), {tag: 0.0 for tag in metric_tags})
        self._file_writer().add_summary(experiment, step)
        self._file_writer().add_summary(start, step)

    def finished(self, step: int) -> None:
        """Mark the session as ended successfully (the HParams view's status)."""
        from tensorboardX.summary import hparams

        _, _, end = hparams({}, {})
        self._file_writer().add_summary(end, step)

    def _file_writer(self) -> Any:
        return self.writer._get_file_writer()

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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
