"""Random erasing, repeated augmentation and the test-time resize (issue 32): their draws
against the recipe's keys, their place in the CPU DALI pipeline, and exact resume. Tiny
images cut from a real photograph (data_fixtures)."""
from __future__ import annotations

import json
import math
from collections import Counter
from typing import List

import numpy as np
import pytest
from data_fixtures import (
    host_images,
    listed_image_set,
    load_images,
    photo,
    save,
)
from PIL import Image

from models import NORMALIZATIONS
from utils.data.augmentation import augmentation_plan, erasing_plan, random_erasing_box
from utils.data.batch_plan import BatchPlan, Shard, epoch_order
from utils.data.pipelines import DaliOptions, ImageBatches, ImageFormat, validation_resize
from utils.labels.file_list import FileList
from utils.process.errors import DataError, UsageError
from utils.recipe.augmentation import ERASING_AREA, ERASING_ASPECT, Augmentation

SIZES = [(40, 30), (30, 44), (64, 48), (50, 50), (36, 60), (48, 32), (33, 47)]  # 7 images


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> FileList:
    return listed_image_set(str(tmp_path_factory.mktemp("photos")), SIZES)


def loader(files: FileList, augmentation: Augmentation, batch_size: int = 3, seed: int = 2,
           rank: int = 0, num_ranks: int = 1, **image) -> ImageBatches:
    """Training batches as train.py builds them (repeats from the augmentation)."""
    plan = BatchPlan(files, batch_size, True, seed, Shard(rank, num_ranks),
                     augmentation.repeated_augmentation)
    image.setdefault("spatial_size", 16)
    return ImageBatches(plan, ImageFormat(**image), DaliOptions(1, 2), augmentation)


def epoch_images(batches: ImageBatches, epoch: int) -> List[np.ndarray]:
    return [host_images(b) for b in batches.epoch(epoch)]


# --------------------------------------------------------------------------- random erasing


def test_erased_boxes_follow_the_area_and_log_aspect_ranges():
    rng = np.random.default_rng(0)
    area, aspect = (0.02, 0.2), (0.5, 2.0)  # every draw fits in 200 x 200: no rejection
    boxes = [random_erasing_box(200, 200, rng, area, aspect) for _ in range(20000)]
    y, x, h, w = np.array(boxes, dtype=float).T
    assert (y >= 0).all() and (x >= 0).all() and (y + h <= 200).all() and (x + w <= 200).all()
    fraction, log_aspect = h * w / 200 ** 2, np.log(h / w)
    # uniform area on [0.02, 0.2]: quantiles 0.02 + 0.18 q (rounding to pixels: +-0.002)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert abs(np.quantile(fraction, q) - (0.02 + 0.18 * q)) < 0.004
        expected = math.log(0.5) + q * (math.log(2.0) - math.log(0.5))  # log-uniform
        assert abs(np.quantile(log_aspect, q) - expected) < 0.03
    assert abs(fraction.mean() - 0.11) < 0.002 and abs(log_aspect.mean()) < 0.01
    # the defaults (area up to 1/3, aspect 0.3-3.3): strictly inside, within the ranges
    defaults = [random_erasing_box(64, 48, rng) for _ in range(2000)]
    kept = np.array([b for b in defaults if b is not None], dtype=float)
    assert len(kept) > 1900  # a box that fits within 10 draws almost always
    y, x, h, w = kept.T
    assert (h < 64).all() and (w < 48).all() and (y + h <= 64).all() and (x + w <= 48).all()
    assert ERASING_AREA[0] - 0.01 < (h * w / (64 * 48)).min() and \
        (h * w / (64 * 48)).max() < ERASING_AREA[1] + 0.02
    assert (np.log(h / w) > math.log(ERASING_ASPECT[0]) - 0.15).all() and \
        (np.log(h / w) < math.log(ERASING_ASPECT[1]) + 0.15).all()


def test_erasing_plan_probability_normal_fill_and_purity():
    erasing = Augmentation(random_erasing=0.3, erasing_area=(0.05, 0.2), erasing_aspect=(0.5, 2))
    plans = [erasing_plan(16, (32, 32), 7, 1, i, 0, erasing) for i in range(400)]
    erased = [(box, fill) for plan in plans for box, fill in plan if box is not None]
    assert abs(len(erased) / (400 * 16) - 0.3) < 0.02  # 6400 draws: 3 standard deviations
    for box, fill in erased:
        assert fill.shape == (box[2], box[3], 3) and fill.dtype == np.float32
    values = np.concatenate([fill.ravel() for _, fill in erased])
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01
    for q, z in ((0.025, -1.96), (0.16, -0.994), (0.5, 0.0), (0.84, 0.994), (0.975, 1.96)):
        assert abs(np.quantile(values, q) - z) < 0.02
    again = erasing_plan(16, (32, 32), 7, 1, 5, 0, erasing)
    assert all(a[0] == b[0] and (a[1] == b[1]).all() for a, b in zip(plans[5], again))
    other_rank = erasing_plan(16, (32, 32), 7, 1, 5, 1, erasing)
    assert [a[0] for a in plans[5]] != [b[0] for b in other_rank]
    off = erasing_plan(16, (32, 32), 7, 1, 5, 0, Augmentation())
    assert all(box is None for box, _ in off)


@pytest.mark.parametrize("channel_last", [False, True])
def test_erasing_replaces_the_box_of_the_normalised_image_with_its_fill(photos, channel_last):
    """The pipeline with erasing equals the one without outside the boxes bit for bit; inside
    each box are exactly the plan's N(0, 1) values (not normalised again)."""
    erasing = Augmentation(random_erasing=0.6)
    with loader(photos, erasing, channel_last=channel_last) as on, \
            loader(photos, Augmentation(), channel_last=channel_last) as off:
        pairs = list(zip(on.epoch(0), off.epoch(0)))
        images = [(b.iteration, host_images(b), host_images(p)) for b, p in pairs]
    erased = 0
    for iteration, with_box, without in images:
        plan = erasing_plan(3, (16, 16), 2, 0, iteration, 0, erasing)
        for image, plain, (box, fill) in zip(with_box, without, plan):
            if channel_last:
                image, plain = image.transpose(2, 0, 1), plain.transpose(2, 0, 1)
            outside = np.ones((16, 16), bool)
            if box is not None:
                erased += 1
                y, x, h, w = box
                outside[y:y + h, x:x + w] = False
                np.testing.assert_allclose(image[:, y:y + h, x:x + w],
                                           fill.transpose(2, 0, 1), rtol=0, atol=1e-6)
            np.testing.assert_array_equal(image[:, outside], plain[:, outside])
    assert 0 < erased < 3 * len(images)  # both branches are checked


@pytest.mark.parametrize("channel_last", [False, True])
def test_erasing_in_half_precision_keeps_a_zero_fourth_channel(photos, channel_last):
    erasing = Augmentation(random_erasing=1.0)
    image = dict(dtype=np.float16, channel_last=channel_last, channels=4)
    with loader(photos, erasing, **image) as on, loader(photos, Augmentation(), **image) as off:
        with_box, without = host_images(next(on.epoch(0))), host_images(next(off.epoch(0)))
    if not channel_last:
        with_box, without = with_box.transpose(0, 2, 3, 1), without.transpose(0, 2, 3, 1)
    assert with_box.dtype == np.float16 and (with_box[..., 3] == 0).all()
    plan = erasing_plan(3, (16, 16), 2, 0, 0, 0, erasing)
    for image, plain, (box, fill) in zip(with_box, without, plan):
        y, x, h, w = box
        np.testing.assert_array_equal(image[y:y + h, x:x + w, :3], fill.astype(np.float16))
        image[y:y + h, x:x + w] = plain[y:y + h, x:x + w]
        np.testing.assert_array_equal(image, plain)


def test_erasing_resumes_mid_epoch_bit_for_bit(photos):
    erasing = Augmentation(random_erasing=0.5)
    reference = loader(photos, erasing)
    expected = epoch_images(reference, 0) + epoch_images(reference, 1)  # 3 batches an epoch
    resumed = loader(photos, erasing)
    state = json.loads(json.dumps({**resumed.state_dict(), "epoch": 1, "iteration": 1}))
    resumed.load_state_dict(state)
    rest = epoch_images(resumed, 1)
    assert len(rest) == 2
    for got, want in zip(rest, expected[4:]):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- repeated augmentation


@pytest.mark.parametrize("count", [7, 13, 100])
@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.parametrize("repeats", [2, 3])
def test_each_image_k_times_a_cycle_over_ranks_in_epochs_of_the_same_length(count, ranks,
                                                                             repeats):
    files = FileList.from_files([f"img_{i}.JPEG" for i in range(count)])
    for batch in (1, 4):
        plans = [BatchPlan(files, batch, True, 3, Shard(r, ranks), repeats)
                 for r in range(ranks)]
        plain = BatchPlan(files, batch, True, 3, Shard(0, ranks))
        assert plans[0].iterations_per_epoch == plain.iterations_per_epoch
        for cycle in (0, 1):
            seen: Counter = Counter()
            for epoch in range(cycle * repeats, (cycle + 1) * repeats):
                in_epoch: Counter = Counter()
                for plan in plans:
                    for i in range(plan.iterations_per_epoch):
                        b = plan.batch(epoch, i)
                        in_epoch.update(b.indices[b.valid].tolist())
                assert sum(in_epoch.values()) == count  # an epoch: N real samples
                assert max(in_epoch.values()) <= repeats
                seen.update(in_epoch)
            assert seen == Counter({i: repeats for i in range(count)})


def test_copies_sit_side_by_side_with_crops_of_their_own():
    """k = 3 over 3 ranks: an image's copies are one per rank in the same iteration (as
    torchvision's RASampler), and their crop windows differ; on 1 rank they share a batch."""
    files = FileList.from_files([f"img_{i}.JPEG" for i in range(12)])
    plans = [BatchPlan(files, 2, True, 1, Shard(r, 3), 3) for r in range(3)]
    for i in range(plans[0].iterations_per_epoch):
        batches = [p.batch(0, i).indices for p in plans]
        assert (batches[0] == batches[1]).all() and (batches[1] == batches[2]).all()
        crops = [augmentation_plan([(60, 40)] * 2, 1, 0, i, r) for r in range(3)]
        for slot in range(2):
            assert len({c[slot][:4] for c in crops}) == 3
    single = BatchPlan(files, 6, True, 1, Shard(0, 1), 3).batch(0, 0).indices
    assert (single[0::3] == single[1::3]).all() and (single[1::3] == single[2::3]).all()
    crops = augmentation_plan([(60, 40)] * 6, 1, 0, 0, 0)
    assert len({c[:4] for c in crops}) == 6


def test_repeats_1_is_the_plain_shuffle_and_a_repeated_epoch_is_part_of_its_cycle():
    assert (epoch_order(50, 4, 3, True, 1) == epoch_order(50, 4, 3, True)).all()
    parts = np.concatenate([epoch_order(10, 4, e, True, 2) for e in (2, 3)])
    assert (parts[0::2] == parts[1::2]).all() and sorted(parts[0::2]) == list(range(10))
    assert not (epoch_order(10, 4, 0, True, 2) == epoch_order(10, 4, 2, True, 2)).all()


def test_repeated_positions_resume_and_a_changed_k_is_refused_mid_epoch():
    files = FileList.from_files([f"img_{i}.JPEG" for i in range(13)])
    plan = BatchPlan(files, 2, True, 5, Shard(0, 2), 3)
    saved = json.loads(json.dumps({"epoch": 4, "iteration": 2, **plan.layout}))
    again = BatchPlan(files, 2, True, 5, Shard(0, 2), 3)
    assert again.position_of(saved) == (4, 2)
    assert (again.batch(4, 2).indices == plan.batch(4, 2).indices).all()
    # another split of the 8 images done continues it
    assert BatchPlan(files, 8, True, 5, Shard(0, 1), 3).position_of(saved) == (4, 1)
    with pytest.raises(DataError, match=r"repeats 3 -> 1"):
        BatchPlan(files, 2, True, 5, Shard(0, 2)).position_of(saved)
    # a position saved before the key existed means k = 1
    old = {k: v for k, v in BatchPlan(files, 2, True, 5, Shard(0, 2)).layout.items()
           if k != "repeats"}
    assert BatchPlan(files, 2, True, 5, Shard(0, 2)).position_of(
        {"epoch": 1, "iteration": 3, **old}) == (1, 3)


def test_repeated_augmentation_batches_resume_bit_for_bit(photos):
    repeated = Augmentation(repeated_augmentation=2)
    reference = loader(photos, repeated, batch_size=2)
    batches = list(reference.epoch(2))
    assert len(batches) == 4 == -(-len(SIZES) // 2)
    expected = [(b.indices.copy(), host_images(b)) for b in batches]
    assert (expected[0][0][0] == expected[0][0][1])  # copies side by side, different crops
    assert np.abs(expected[0][1][0] - expected[0][1][1]).mean() > 0.05
    resumed = loader(photos, repeated, batch_size=2)
    resumed.load_state_dict({**resumed.state_dict(), "epoch": 2, "iteration": 2})
    for got, (indices, images) in zip(resumed.epoch(2), expected[2:]):
        assert (got.indices == indices).all()
        np.testing.assert_array_equal(host_images(got), images)


# --------------------------------------------------------------------------- test-time resize


def pillow_resize_then_crop(path: str, shorter: int, size: int) -> np.ndarray:
    """Shorter side to `shorter` (aspect kept), then the centre `size` crop, normalised."""
    img = Image.open(path).convert("RGB")
    scale = shorter / min(img.size)
    w, h = round(img.width * scale), round(img.height * scale)
    img = img.resize((w, h), Image.BILINEAR)
    x, y = int(np.floor((w - size) / 2 + 0.5)), int(np.floor((h - size) / 2 + 0.5))
    mean, std = (np.array(v, dtype=np.float32) for v in NORMALIZATIONS["default"])
    return (np.asarray(img.crop((x, y, x + size, y + size)), np.float32) - mean) / std


@pytest.mark.parametrize("val_resize", [32, 40, 58])
def test_val_resize_is_resize_then_centre_crop(tmp_path, val_resize):
    paths = [save(photo(w, h, seed=i), str(tmp_path / f"{i}.png"), "PNG")
             for i, (w, h) in enumerate([(90, 60), (50, 80)])]
    assert validation_resize(32, val_resize=val_resize) == (val_resize, val_resize)
    images = load_images(paths, spatial_size=32, channel_last=True, val_resize=val_resize)
    default = load_images(paths, spatial_size=32, channel_last=True)
    for path, image in zip(paths, images):
        reference = pillow_resize_then_crop(path, val_resize, 32)
        error = np.abs(image - reference).mean()
        assert error < 0.03  # resampling differences only (as test_data's crop_pct)
        assert error < np.abs(image - reference[:, ::-1]).mean() / 3  # and not mirrored
    if val_resize != 36:  # the default: 32 / 0.875 = 36.6 -> 36
        assert np.abs(images - default).mean() > 0.05


def test_val_resize_below_the_input_size_is_one_line():
    with pytest.raises(UsageError, match=r"^validation resize 30 is smaller than the input "
                                         r"size 32x32: .* at least 32$"):
        ImageFormat(32, val_resize=30)
    assert ImageFormat((24, 32), val_resize=32).val_resize == 32
