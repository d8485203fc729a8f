"""The grid of a batch as the network receives it (train_batch.png, val_batch.png): the
normalisation undone in every layout, exact tiles, the captions of mixed samples."""
from __future__ import annotations

import numpy as np
import pytest

from models import NORMALIZATIONS
from utils.outputs.batch_grid import batch_grid, captions, draw_grid, to_pixels


def normalised(pixels: np.ndarray, norm: str, channel_last: bool, channels: int = 3
               ) -> np.ndarray:
    """What the pipeline makes of RGB pixels (B, H, W, 3): (x - mean) / std, laid out."""
    mean, std = NORMALIZATIONS[norm]
    x = (pixels.astype(np.float32) - np.float32(mean)) / np.float32(std)
    if channels == 4:
        x = np.concatenate([x, np.zeros(x.shape[:3] + (1,), np.float32)], axis=3)
    return x if channel_last else x.transpose(0, 3, 1, 2)


@pytest.mark.parametrize("norm", ["default", "senet_author"])
@pytest.mark.parametrize("channel_last, channels", [(False, 3), (True, 3), (True, 4),
                                                    (False, 4)])
def test_to_pixels_undoes_the_normalisation_in_every_layout(norm, channel_last, channels):
    pixels = np.random.RandomState(0).randint(0, 256, (3, 5, 7, 3)).astype(np.uint8)
    x = normalised(pixels, norm, channel_last, channels)
    assert np.array_equal(to_pixels(x, channel_last, norm), pixels)
    # float16 inputs (-t half) too: the arithmetic is done in float32, so no pixel is off
    assert np.array_equal(to_pixels(x.astype(np.float16), channel_last, norm), pixels)


def test_grid_tiles_are_exact_and_captions_stay_below_them():
    pixels = np.random.RandomState(1).randint(0, 256, (5, 28, 20, 3)).astype(np.uint8)
    grid = draw_grid(pixels, captions(np.array([0, 1, 2, 1, 0]), ["bag", None, "a" * 80]))
    assert grid.scale == 4  # 28 px -> 112 px: at least MIN_TILE_SIDE
    assert len(grid.origins) == 5 and grid.image.dtype == np.uint8
    for i in range(5):
        top, left = grid.origins[i]
        block = grid.image[top:top + 28 * 4, left:left + 20 * 4]
        assert np.array_equal(block, pixels[i].repeat(4, axis=0).repeat(4, axis=1))
        assert np.array_equal(grid.tile(i, 28, 20), pixels[i])
        below = grid.image[top + 28 * 4: top + 28 * 4 + 24, left:left + 80]
        assert (below < 128).any()  # a caption was drawn under each tile
    assert len(draw_grid(np.zeros((100, 8, 8, 3), np.uint8), [["x"]] * 100).origins) == 64


def test_captions_name_both_classes_of_a_mixed_sample():
    labels = np.array([[0], [1], [1], [2]])
    assert captions(labels, ["bag", "trouser", None]) == [["bag"], ["trouser"], ["trouser"],
                                                          ["2"]]
    weights = np.array([0.75, 1.0, 0.5, 0.125]).reshape(4, 1, 1, 1)
    assert captions(labels, ["bag", "trouser", None], weights) == [
        ["0.75 bag", "0.25 2"], ["1.00 trouser", "0.00 trouser"],
        ["0.50 trouser", "0.50 trouser"], ["0.12 2", "0.88 bag"]]


def test_batch_grid_draws_the_normalised_batch():
    pixels = np.random.RandomState(2).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    grid = batch_grid(normalised(pixels, "default", True, 4), np.array([[0], [1]]),
                      ["bag", "trouser"], channel_last=True, norm="default")
    assert np.array_equal(grid.tile(1, 32, 32), pixels[1])
