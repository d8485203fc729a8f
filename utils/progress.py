"""Progress bars on rank 0 only: rate, ETA and the latest metrics."""
from __future__ import annotations

import sys
from typing import Optional

from tqdm import tqdm

from .comm import Communicator


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
