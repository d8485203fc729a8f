"""What the network is fed, as a picture: a grid of a batch's images after the whole input
pipeline (crop, flip, policy, resolution, and mixup or CutMix when the caller passes the mixed
input), de-normalised back to pixels, each tile labelled with its class name and, for mixed
samples, the two classes with their weights.

Tiles are drawn pixel for pixel (each input pixel an exact square of `scale` x `scale`
output pixels, nearest neighbour), so a tile is the network's input up to the rounding of
the de-normalisation; captions go below the tiles, never over them. train.py writes
`train_batch.png` from its first batch and validation.py `val_batch.png`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from models import NORMALIZATIONS

from ..process.atomic import atomic_path

TRAIN_BATCH_PNG = "train_batch.png"
VAL_BATCH_PNG = "val_batch.png"
MAX_TILES = 64  # of a batch: 8 x 8 tiles
MIN_TILE_SIDE = 96  # pixels: a smaller input is enlarged by a whole factor (28 px: x4)
CAPTION_LINES = 2
LINE_HEIGHT = 12
MIN_CELL_WIDTH = 100  # room for a caption under a small tile
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def to_pixels(images: np.ndarray, channel_last: bool, norm: str) -> np.ndarray:
    """RGB uint8 (B, H, W, 3) from normalised network inputs (B, C, H, W) or (B, H, W, C):
    `x * std + mean`, rounded and clipped; a 4th (zero) input channel is dropped."""
    x = np.asarray(images, dtype=np.float64)
    if not channel_last:
        x = x.transpose(0, 2, 3, 1)
    mean, std = NORMALIZATIONS[norm]
    rgb = x[..., :3] * np.asarray(std) + np.asarray(mean)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def class_label(names: Sequence[Optional[str]], label: int) -> str:
    """A class's name, or its id where there is no name."""
    name = names[label] if 0 <= label < len(names) else None
    return name if name else str(label)


def captions(labels: np.ndarray, names: Sequence[Optional[str]],
             weights: Optional[np.ndarray] = None) -> List[List[str]]:
    """Each sample's caption lines: its class, or, mixed with its mirror (sample B-1-i)
    with target weight w, `w name` and `1-w mirror's name`."""
    labels = np.asarray(labels).reshape(-1).astype(int)
    if weights is None:
        return [[class_label(names, c)] for c in labels]
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    mirror = labels[::-1]
    return [[f"{w[i]:.2f} {class_label(names, labels[i])}",
             f"{1 - w[i]:.2f} {class_label(names, mirror[i])}"] for i in range(len(labels))]


@dataclass(frozen=True)
class Grid:
    """A drawn grid: the RGB image and where each tile is in it."""

    image: np.ndarray  # uint8 (height, width, 3)
    origins: Tuple[Tuple[int, int], ...]  # (top, left) of each tile
    scale: int  # output pixels per input pixel, along each axis

    def tile(self, index: int, height: int, width: int) -> np.ndarray:
        """Tile `index` back at the input's resolution (one output pixel per input pixel)."""
        top, left = self.origins[index]
        s = self.scale
        return self.image[top:top + height * s:s, left:left + width * s:s]


def _fit(text: str, font: Any, width: int) -> str:
    """`text`, cut with an ellipsis to `width` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def draw_grid(pixels: np.ndarray, lines: Sequence[Sequence[str]],
              max_tiles: int = MAX_TILES) -> Grid:
    """Up to `max_tiles` tiles of `pixels` (B, H, W, 3) in a square-ish grid, each with its
    caption `lines` below it."""
    from PIL import Image, ImageDraw, ImageFont

    count = min(len(pixels), max_tiles)
    height, width = pixels.shape[1:3]
    scale = max(1, math.ceil(MIN_TILE_SIDE / max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    cell_w = max(tile_w, MIN_CELL_WIDTH) + GAP
    cell_h = tile_h + CAPTION_LINES * LINE_HEIGHT + GAP
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = Image.new("RGB", (columns * cell_w + GAP, rows * cell_h + GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=10)
    origins = []
    for i in range(count):
        top, left = GAP + (i // columns) * cell_h, GAP + (i % columns) * cell_w
        tile = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile), "RGB"), (left, top))
        origins.append((top, left))
        for n, line in enumerate(lines[i][:CAPTION_LINES]):
            draw.text((left, top + tile_h + 1 + n * LINE_HEIGHT),
                      _fit(line, font, cell_w - GAP), fill=TEXT, font=font)
    return Grid(np.asarray(canvas), tuple(origins), scale)


def batch_grid(images: np.ndarray, labels: np.ndarray, names: Sequence[Optional[str]],
               channel_last: bool, norm: str, weights: Optional[np.ndarray] = None) -> Grid:
    """The grid of a batch of network inputs with its labels (and mixing weights)."""
    return draw_grid(to_pixels(images, channel_last, norm), captions(labels, names, weights))


def save_png(image: np.ndarray, path: str) -> str:
    """Write an RGB array as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image, "RGB").save(tmp, format="PNG")
    return path


def first_batch_grid(batches: Any, names: Sequence[Optional[str]]) -> Grid:
    """The grid of the next batch of `batches` (an `ImageBatches`), which are put
    back where they were, so that the caller's pass still sees every batch."""
    import nnabla as nn

    position = batches.state_dict()
    batch = next(batches.epoch(position["epoch"]))
    array = nn.NdArray(batch.image_shape)
    batch.copy_to(array)
    grid = batch_grid(array.data, batch.labels, names, batches.image.channel_last,
                      batches.image.norm)
    batches.load_state_dict(position)
    return grid
