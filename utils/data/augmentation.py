"""Training augmentation: the random-resized crop with a flip and random erasing, drawn in
Python, and DALI's automatic augmentation policies.

The crop windows, flips and erased boxes (with their noise) are pure functions of (seed, epoch,
iteration, rank), so that a resumed run needs no random state; the policies
(`nvidia.dali.auto_aug`, DALI's own RandAugment, TrivialAugment and AutoAugment) draw from
DALI's random state, seeded per epoch and rank (`policy_seed`). The recipe section they
follow is `utils.recipe.augmentation`.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..recipe.augmentation import (
    CROP_AREA,
    CROP_ATTEMPTS,
    CROP_RATIO,
    ERASING_AREA,
    ERASING_ASPECT,
    ERASING_ATTEMPTS,
    OFFICIAL,
    POLICIES,
    Augmentation,
)

FLIP_PROBABILITY = 0.5
# Tags keeping the crop's, the policies' and random erasing's random streams apart from each
# other and from the shuffle's (`_SHUFFLE_STREAM` in batch_plan.py).
_AUGMENT_STREAM, _POLICY_STREAM, _ERASING_STREAM = 0xA06, 0x9011, 0xE4A5

Box = Tuple[int, int, int, int]  # (y, x, h, w) in the network's input


def sized_boxes(uniforms: np.ndarray, area: int, area_range: Tuple[float, float],
                aspect_range: Tuple[float, float]) -> Iterator[Tuple[int, int, float, float]]:
    """For each row of 4 uniforms: the sides (a, b) of a box covering a fraction of `area`
    drawn in `area_range`, with a log-uniform aspect a / b in `aspect_range`, and the row's two
    uniforms left for its position. The crop and the erased box are drawn alike."""
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    for area_u, aspect_u, first_u, second_u in uniforms:
        target = area * (area_range[0] + (area_range[1] - area_range[0]) * area_u)
        aspect = math.exp(log_lo + (log_hi - log_lo) * aspect_u)
        yield (int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect))),
               first_u, second_u)


def random_resized_crop_window(
    width: int, height: int, rng: np.random.Generator,
    area_range: Tuple[float, float] = CROP_AREA, ratio_range: Tuple[float, float] = CROP_RATIO,
) -> Tuple[int, int, int, int]:
    """(x, y, w, h) of a crop covering `area_range` of the image (8-100 %) with an aspect in
    `ratio_range` (3/4..4/3).

    Up to 10 draws; if none fits, the centre crop with the aspect clamped to the range. Always
    consumes the same number of random numbers, so later draws do not depend on the image.
    """
    u = rng.random((CROP_ATTEMPTS, 4))
    for w, h, x_u, y_u in sized_boxes(u, width * height, area_range, ratio_range):
        if 0 < w <= width and 0 < h <= height:
            x = min(int(x_u * (width - w + 1)), width - w)
            y = min(int(y_u * (height - h + 1)), height - h)
            return x, y, w, h
    ratio = width / height
    if ratio < ratio_range[0]:
        w, h = width, min(height, max(1, int(round(width / ratio_range[0]))))
    elif ratio > ratio_range[1]:
        w, h = min(width, max(1, int(round(height * ratio_range[1])))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augmentation_plan(
    sizes: Sequence[Tuple[int, int]], seed: int, epoch: int, iteration: int, rank: int,
    augmentation: Augmentation = OFFICIAL,
) -> List[Tuple[int, int, int, int, bool]]:
    """(x, y, w, h, flip) for each (width, height) image of a rank's training batch.

    A pure function of its arguments: the crops' and flips' randomness, so that resuming
    needs no random state and ranks draw independent streams.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [_AUGMENT_STREAM, seed, epoch, iteration, rank])))
    plan = []
    for width, height in sizes:
        crop = random_resized_crop_window(width, height, rng, augmentation.random_area,
                                          augmentation.random_aspect_ratio)
        plan.append((*crop, bool(rng.random() < FLIP_PROBABILITY)))
    return plan


def random_erasing_box(
    height: int, width: int, rng: np.random.Generator,
    area_range: Tuple[float, float] = ERASING_AREA,
    aspect_range: Tuple[float, float] = ERASING_ASPECT,
) -> Optional[Box]:
    """(y, x, h, w) of a box covering `area_range` of the image with a log-uniform aspect
    (h / w) in `aspect_range`, strictly inside it (as torchvision's RandomErasing); None if
    none of 10 draws fits. Always consumes the same number of random numbers."""
    u = rng.random((ERASING_ATTEMPTS, 4))
    for h, w, y_u, x_u in sized_boxes(u, height * width, area_range, aspect_range):
        if 0 < h < height and 0 < w < width:
            return (min(int(y_u * (height - h + 1)), height - h),
                    min(int(x_u * (width - w + 1)), width - w), h, w)
    return None


def erasing_plan(
    batch_size: int, spatial_size: Tuple[int, int], seed: int, epoch: int, iteration: int,
    rank: int, augmentation: Augmentation,
) -> List[Tuple[Optional[Box], np.ndarray]]:
    """For each image of a rank's training batch: the erased box (None: not erased) and its
    N(0, 1) fill, float32 (h, w, 3) (torchvision's `value="random"`, timm's per-pixel mode).

    A pure function of its arguments, like `augmentation_plan`: the boxes come from one
    stream (a fixed count of numbers per image), the fills from another.
    """
    height, width = spatial_size
    boxes_rng, fill_rng = (np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [_ERASING_STREAM, part, seed, epoch, iteration, rank]))) for part in (0, 1))
    plan = []
    for _ in range(batch_size):
        erased = boxes_rng.random() < augmentation.random_erasing
        box = random_erasing_box(height, width, boxes_rng, augmentation.erasing_area,
                                 augmentation.erasing_aspect)
        if not erased or box is None:
            plan.append((None, np.zeros((0, 0, 3), np.float32)))
        else:
            plan.append((box, standard_normal(fill_rng, (box[2], box[3], 3))))
    return plan


def standard_normal(rng: np.random.Generator, shape: Tuple[int, ...]) -> np.ndarray:
    """float32 N(0, 1) values by Box-Muller on float32 uniforms: 2.6x faster than numpy's
    `standard_normal` (the fills were a third of the pipeline's time); tails end at 5.8."""
    count = int(np.prod(shape))
    half = (count + 1) // 2
    u = rng.random((2, half), np.float32)
    radius = np.sqrt(np.float32(-2) * np.log1p(-u[0]))
    angle = np.float32(2 * np.pi) * u[1]
    values = np.empty(2 * half, np.float32)
    np.multiply(radius, np.cos(angle), out=values[:half])
    np.multiply(radius, np.sin(angle), out=values[half:])
    return values[:count].reshape(shape)


def policy_seed(seed: int, epoch: int, rank: int) -> int:
    """DALI's seed for the policy operators of one epoch on one rank: a policy's draws are then
    a function of (seed, epoch, rank) and the iteration reached."""
    state = np.random.SeedSequence([_POLICY_STREAM, seed, epoch, rank]).generate_state(1)
    return int(state[0] % (2**31 - 1))


def apply_policy(images: Any, augmentation: Augmentation) -> Any:
    """DALI's own implementation of the policy on a batch of uint8 HWC images.

    DALI's policies call its deprecated `fn.experimental.equalize` alias, which warns (three
    lines, each time a pipeline is built: 2-4 times per epoch) about DALI's code, not ours;
    DALI forces that warning on (`simplefilter("default")`), so it is caught, not filtered."""
    with warnings.catch_warnings(record=True) as caught:
        result = _dali_policy(images, augmentation)
    for w in caught:
        if not (issubclass(w.category, DeprecationWarning)
                and "nvidia.dali.fn.experimental." in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def _dali_policy(images: Any, augmentation: Augmentation) -> Any:
    from nvidia.dali.auto_aug import auto_augment, rand_augment, trivial_augment

    if augmentation.policy == "randaugment":
        return rand_augment.rand_augment(images, n=augmentation.n, m=augmentation.m)
    if augmentation.policy == "trivialaugment":
        return trivial_augment.trivial_augment_wide(images)
    if augmentation.policy == "autoaugment":
        return auto_augment.auto_augment_image_net(images)
    raise ValueError(f"unknown policy {augmentation.policy!r}; choose from {POLICIES}")
