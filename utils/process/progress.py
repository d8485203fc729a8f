"""Progress bars on rank 0 only (rate, ETA and the latest metrics) and the run's ETA."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from tqdm import tqdm

from .comm import Communicator


def format_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 d 04 h': two units at most, as people say them."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours:02d} h"


def run_eta(epoch_seconds: Sequence[float], epochs_left: int) -> str:
    """What is left of a run, from the wall time of its epochs so far (validation, checkpoints
    included): the mean of the last few, which follows a change of speed without jumping."""
    if epochs_left <= 0 or not epoch_seconds:
        return ""
    recent = epoch_seconds[-5:]
    left = sum(recent) / len(recent) * epochs_left
    return f"{epochs_left} epoch(s) left, about {format_duration(left)}"


class Progress:
    """A tqdm bar counting iterations, showing images/s and metrics refreshed every 10 steps."""

    def __init__(self, comm: Communicator, total: int, desc: str, initial: int = 0,
                 images_per_iteration: Optional[int] = None):
        self._bar = None
        self._images = images_per_iteration
        self._count = 0
        if comm.is_main:
            self._bar = tqdm(total=total, initial=initial, desc=desc, file=sys.stderr,
                             dynamic_ncols=True, mininterval=1.0, smoothing=0.1)

    def update(self, **metrics: float) -> None:
        if self._bar is None:
            return
        self._bar.update(1)
        self._count += 1
        if self._count % 10 == 1:
            shown = {k: f"{v:.4g}" for k, v in metrics.items()}
            rate = self._bar.format_dict.get("rate")
            if self._images and rate:
                shown["img/s"] = f"{rate * self._images:.1f}"
            self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
