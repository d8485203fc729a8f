"""What a chart PNG holds, read from its pixels: a chart whose curves were not drawn still has
its axes, labels and title, all in black and greys; the curves (and their legend samples) are
in matplotlib's colours."""
from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image


def coloured_pixels(png: Union[str, Path]) -> int:
    """Pixels of a saturated colour (a curve, a marker, a legend sample) in `png`."""
    with Image.open(png) as img:
        assert img.format == "PNG", png
        rgb = np.asarray(img.convert("RGB")).astype(int)
    return int(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).sum())


def assert_curves_drawn(png: Union[str, Path], curves: int = 1) -> None:
    """`png` is a chart with at least `curves` curves drawn (some 300 coloured pixels each,
    at 640x400, counting markers and the legend sample)."""
    found = coloured_pixels(png)
    assert found > 300 * curves, f"{png}: {found} coloured pixels, the curves are missing"
