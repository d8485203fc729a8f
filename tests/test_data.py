"""The DALI pipelines on CPU: output formats and values, exact epochs over ranks, resume, and
bad input, on small real photographs."""
from __future__ import annotations

import io
import json
import os
from collections import Counter
from typing import Dict, List, Tuple

import numpy as np
import pytest
from data_fixtures import (
    host_images,
    listed_image_set,
    load_images,
    make_batches,
    photo,
    save,
    write_list,
)
from marks import marking_slow
from PIL import Image, ImageOps

from models import NORMALIZATIONS
from utils.data.augmentation import augmentation_plan, random_resized_crop_window
from utils.data.batch_plan import batch_positions, epoch_order, iterations_per_epoch
from utils.data.image_probe import probe_image
from utils.data.pipelines import (
    ImageBatches,
    ImageDecodeError,
    resize_for_crop,
    to_hw,
    validation_resize,
)
from utils.labels.file_list import FileList, read_file_list
from utils.process.errors import DataError
from utils.recipe.augmentation import Augmentation

SIZES = [(40, 30), (30, 44), (64, 48), (50, 50), (36, 60), (48, 32), (33, 47), (60, 40),
         (44, 44), (52, 36), (38, 50), (46, 34), (30, 30)]  # 13 images: awkward on purpose


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> FileList:
    return listed_image_set(str(tmp_path_factory.mktemp("photos")), SIZES)


def batches(files: FileList, batch_size: int = 4, training: bool = False, **kw) -> ImageBatches:
    kw.setdefault("spatial_size", 16)
    return make_batches(files, batch_size, training, **kw)


def run_epoch(loader: ImageBatches, epoch: int) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(b.indices.copy(), b.mask[:, 0].copy(), host_images(b)) for b in loader.epoch(epoch)]


def normalised(pixels: np.ndarray, norm: str = "default") -> np.ndarray:
    mean, std = (np.array(v, dtype=np.float32) for v in NORMALIZATIONS[norm])
    return (pixels.astype(np.float32) - mean) / std


# --------------------------------------------------------------------------- pure maths


def test_resize_for_crop_matches_the_official_table():
    table = {224: 256, 240: 274, 260: 298, 300: 342, 380: 434, 456: 522, 528: 604, 600: 686,
             672: 768, 800: 914}
    assert {s: resize_for_crop(s) for s in table} == table
    assert validation_resize((224, 240)) == (256, 274)
    assert to_hw(224) == (224, 224) and to_hw([7]) == (7, 7) and to_hw((3, 5)) == (3, 5)


def test_random_resized_crop_window_stays_in_range():
    rng = np.random.default_rng(0)
    ratios, areas = [], []
    for _ in range(2000):
        width, height = (int(v) for v in rng.integers(200, 500, size=2))
        x, y, w, h = random_resized_crop_window(width, height, rng)
        assert 0 <= x and x + w <= width and 0 <= y and y + h <= height and w > 0 and h > 0
        areas.append(w * h / (width * height))
        ratios.append(w / h)
    assert 0.075 < min(areas) < 0.1 and max(areas) <= 1.0
    assert 0.7 < min(ratios) < 0.8 and 1.3 < max(ratios) < 1.4
    # A strip no window fits: the centre crop with the aspect clamped to 4/3.
    assert random_resized_crop_window(1000, 10, rng) == (493, 0, 13, 10)


def test_augmentation_plan_is_a_pure_function_of_its_arguments():
    sizes = [(40, 30), (300, 200)]
    plan = augmentation_plan(sizes, 1, 2, 3, 0)
    assert plan == augmentation_plan(sizes, 1, 2, 3, 0)
    assert plan != augmentation_plan(sizes, 1, 2, 3, 1)  # another rank draws other crops
    assert {p[4] for p in augmentation_plan([(50, 50)] * 64, 0, 0, 0, 0)} == {False, True}


@pytest.mark.parametrize("n,b,r", [(13, 4, 2), (13, 4, 1), (1, 3, 4), (8, 4, 2), (9, 4, 2),
                                   (100, 7, 3), (3, 1, 5)])
def test_positions_cover_each_sample_once_and_ranks_run_equal_iterations(n, b, r):
    steps = iterations_per_epoch(n, b, r)
    seen: Counter = Counter()
    for rank in range(r):
        for i in range(steps):
            positions, valid = batch_positions(n, b, rank, r, i)
            assert len(positions) == b and positions.max() < n
            seen.update(positions[valid].tolist())
    assert seen == Counter(range(n))
    assert steps * b * r - n < b * r  # no iteration is all padding on every rank


def test_epoch_order_is_a_fixed_permutation_per_seed_and_epoch():
    a = epoch_order(50, 0, 0, True)
    assert sorted(a) == list(range(50))
    assert (a == epoch_order(50, 0, 0, True)).all()
    assert (a != epoch_order(50, 0, 1, True)).any() and (a != epoch_order(50, 1, 0, True)).any()
    assert (epoch_order(5, 0, 3, False) == np.arange(5)).all()


# --------------------------------------------------------------------------- output formats


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("channel_last,channels,dtype,size", [
    (False, 3, np.float32, 16),
    (True, 4, np.float16, (12, 20)),
    (False, 4, np.float32, (20, 12)),
    (True, 3, np.float16, 16),
])
def test_output_shape_dtype_layout_and_range(photos, training, channel_last, channels, dtype,
                                            size):
    loader = batches(photos, training=training, spatial_size=size, channels=channels,
                     channel_last=channel_last, dtype=dtype)
    batch = next(loader.epoch(0))
    images = host_images(batch)
    h, w = to_hw(size)
    expected = (4, h, w, channels) if channel_last else (4, channels, h, w)
    assert images.shape == expected == loader.image_shape and images.dtype == dtype
    assert batch.labels.shape == (4, 1) and batch.labels.dtype == np.int32
    assert batch.mask.shape == (4, 1) and batch.mask.dtype == np.float32
    assert (batch.labels[:, 0] == photos.labels[batch.indices]).all()
    channel_axis = 3 if channel_last else 1
    rgb = np.take(images, [0, 1, 2], axis=channel_axis).astype(np.float32)
    if channels == 4:
        assert (np.take(images, 3, axis=channel_axis) == 0).all()
    lo, hi = normalised(np.zeros(3)), normalised(np.full(3, 255))
    shape = (1, 1, 1, 3) if channel_last else (1, 3, 1, 1)
    assert (rgb >= lo.reshape(shape) - 1e-2).all() and (rgb <= hi.reshape(shape) + 1e-2).all()
    assert rgb.std() > 0.3  # a photograph, not a constant


def test_layouts_and_precisions_carry_the_same_values(photos):
    nchw = host_images(next(batches(photos).epoch(0)))
    nhwc4 = host_images(next(batches(photos, channel_last=True, channels=4).epoch(0)))
    half = host_images(next(batches(photos, dtype=np.float16).epoch(0)))
    assert (nhwc4[..., :3].transpose(0, 3, 1, 2) == nchw).all()
    assert np.allclose(half.astype(np.float32), nchw, atol=4e-3)


@pytest.mark.parametrize("norm", ["default", "senet_author"])
@pytest.mark.parametrize("training", [False, True])
def test_normalisation_is_exact_on_a_flat_colour(tmp_path, norm, training):
    colour = (200, 100, 50)
    path = save(Image.new("RGB", (37, 23), colour), str(tmp_path / "flat.png"), "PNG")
    loader = batches(FileList.from_files([path]), batch_size=2, training=training, norm=norm,
                     channel_last=True)
    images = host_images(next(loader.epoch(0)))
    assert np.allclose(images, normalised(np.array(colour), norm), rtol=1e-6, atol=1e-6)


def pillow_validation(path: str, size: int, crop_pct: float = 224 / 256) -> np.ndarray:
    """The validation protocol written with Pillow: shorter side to resize_for_crop, centre."""
    img = Image.open(path).convert("RGB")
    scale = resize_for_crop(size, crop_pct) / min(img.size)
    w, h = round(img.width * scale), round(img.height * scale)
    img = img.resize((w, h), Image.BILINEAR)
    x, y = int(np.floor((w - size) / 2 + 0.5)), int(np.floor((h - size) / 2 + 0.5))
    return normalised(np.asarray(img.crop((x, y, x + size, y + size))))


@pytest.mark.parametrize("crop_pct", [224 / 256, 1.0, 0.5])
def test_validation_geometry_matches_a_pillow_reference(tmp_path, crop_pct):
    paths = [save(photo(w, h, seed=i), str(tmp_path / f"{i}.png"), "PNG")
             for i, (w, h) in enumerate([(90, 60), (50, 80)])]
    images = load_images(paths, spatial_size=32, channel_last=True, crop_pct=crop_pct)
    assert validation_resize(32, crop_pct) == (resize_for_crop(32, crop_pct),) * 2 == \
        {224 / 256: (36, 36), 1.0: (32, 32), 0.5: (64, 64)}[crop_pct]
    for path, image in zip(paths, images):
        reference = pillow_validation(path, 32, crop_pct)
        error = np.abs(image - reference).mean()
        assert error < 0.03  # measured 0.003-0.016: resampling differences only
        assert error < np.abs(image - reference[:, ::-1]).mean() / 3  # and not mirrored


def test_training_crops_and_flips_follow_the_plan(photos):
    loader = batches(photos, batch_size=8, training=True, spatial_size=(20, 24),
                     channel_last=True, seed=5)
    batch = next(loader.epoch(0))
    sizes = [SIZES[i] for i in batch.indices]
    plan = augmentation_plan(sizes, 5, 0, 0, 0)
    assert {p[4] for p in plan} == {False, True}  # both branches are checked
    for index, (x, y, w, h, flip), image in zip(batch.indices, plan, host_images(batch)):
        img = Image.open(photos.full_path(index)).convert("RGB")
        ref = img.crop((x, y, x + w, y + h)).resize((24, 20), Image.BILINEAR)
        ref = normalised(np.asarray(ref.transpose(Image.FLIP_LEFT_RIGHT) if flip else ref))
        assert np.abs(image - ref).mean() < 0.03  # measured < 0.005; a mirror gives > 0.5


def test_greyscale_cmyk_and_png_named_jpeg_decode_as_rgb(tmp_path):
    base = photo(40, 30)
    paths = [save(base.convert("L"), str(tmp_path / "grey.JPEG")),
             save(base.convert("CMYK"), str(tmp_path / "cmyk.JPEG")),
             save(base, str(tmp_path / "png.JPEG"), "PNG")]
    images = load_images(paths, spatial_size=16, channel_last=True, norm="senet_author")
    pixels = images + np.array(NORMALIZATIONS["senet_author"][0], dtype=np.float32)
    assert np.ptp(pixels[0], axis=-1).max() == 0  # grey: R = G = B
    assert np.abs(pixels[1] - pixels[2]).mean() < 8  # CMYK decodes to the same colours


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_as_the_official_decoder_does(tmp_path, fmt, orientation):
    """A file whose EXIF orientation turns it is used as shown (DALI's default, and the
    official example's): the same batches as a file holding the turned pixels, in training
    (the crop windows refer to the turned image) and in validation."""
    base = photo(40, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    tagged = str(tmp_path / f"tagged.{fmt.lower()}")
    base.save(tagged, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    shown = ImageOps.exif_transpose(Image.open(tagged))
    turned = save(shown, str(tmp_path / "turned.png"), "PNG")
    with open(tagged, "rb") as f:
        assert probe_image(f.read())[1:] == shown.size
    for training in (False, True):
        outputs = [host_images(next(batches(FileList.from_files([path]), batch_size=1,
                                            training=training, seed=3).epoch(0)))
                   for path in (tagged, turned)]
        # PNG: the same pixels; JPEG: the same up to its compression
        assert np.abs(outputs[0] - outputs[1]).mean() < (1e-6 if fmt == "PNG" else 0.05)
        assert np.abs(outputs[0] - outputs[1][..., ::-1]).mean() > 0.1  # not merely mirrored


def test_copy_to_fills_an_nnabla_variable(photos):
    import nnabla as nn

    for dtype in (np.float32, np.float16):
        loader = batches(photos, dtype=dtype)
        batch = next(loader.epoch(0))
        x = nn.Variable(loader.image_shape)
        batch.copy_to(x)
        assert x.d.dtype == dtype and (x.d == host_images(batch)).all()
    with pytest.raises(ValueError, match="images are"):
        batch.copy_to(nn.Variable((1, 3, 16, 16)))


def test_one_image_alone_preprocesses_as_in_a_batch(photos):
    from_pipeline = {}
    for b in batches(photos).epoch(0):
        from_pipeline.update({int(i): img for i, img in zip(b.indices, host_images(b))})
    single = load_images([photos.full_path(5)], spatial_size=16)
    assert (single[0] == from_pipeline[5]).all()


# --------------------------------------------------------------------------- epochs and ranks


def per_index(runs: List[Tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Dict[int, np.ndarray]:
    out: Dict[int, np.ndarray] = {}
    for indices, mask, images in runs:
        for i, m, img in zip(indices, mask, images):
            if m:
                assert int(i) not in out, f"image {i} twice"
                out[int(i)] = img
    return out


def test_validation_over_two_ranks_covers_each_image_once(photos):
    one = per_index(run_epoch(batches(photos, batch_size=4), 0))
    shards = [batches(photos, batch_size=4, rank=r, num_ranks=2) for r in range(2)]
    assert [s.iterations_per_epoch for s in shards] == [2, 2]
    runs = [run_epoch(s, 0) for s in shards]
    got = per_index(runs[0] + runs[1])
    assert sorted(got) == list(range(13)) == sorted(one)
    assert all((got[i] == one[i]).all() for i in got)  # same pixels whatever the batch
    assert sum(int(m.sum()) for run in runs for _, m, _ in run) == 13


def test_training_shards_are_disjoint_and_reshuffled_every_epoch(photos):
    shards = [batches(photos, batch_size=4, training=True, rank=r, num_ranks=2, seed=3)
              for r in range(2)]
    orders = []
    for epoch in range(3):
        runs = [run_epoch(s, epoch) for s in shards]
        assert [len(r) for r in runs] == [2, 2]
        valid = [np.concatenate([i[m > 0] for i, m, _ in r]).tolist() for r in runs]
        assert not set(valid[0]) & set(valid[1])
        assert sorted(valid[0] + valid[1]) == list(range(13))
        orders.append(valid[0] + valid[1])
    assert orders[0] != orders[1] != orders[2]
    repeat = batches(photos, batch_size=4, training=True, rank=0, num_ranks=2, seed=3)
    assert [i.tolist() for i, _, _ in run_epoch(repeat, 1)] == \
        [i.tolist() for i, _, _ in run_epoch(shards[0], 1)]


def test_resume_reproduces_the_batches_bit_for_bit(photos):
    def make():
        return batches(photos, batch_size=3, training=True, seed=11, channel_last=True)

    reference = make()
    expected = run_epoch(reference, 0) + run_epoch(reference, 1)  # 5 batches an epoch

    interrupted = make()
    run_epoch(interrupted, 0)
    epoch1 = interrupted.epoch(1)
    first = [next(epoch1) for _ in range(2)]
    mid = json.loads(json.dumps(interrupted.state_dict()))
    assert (mid["epoch"], mid["iteration"]) == (1, 2)
    assert all((host_images(f) == e[2]).all() for f, e in zip(first, expected[5:7]))
    epoch1.close()

    resumed = make()
    resumed.load_state_dict(mid)
    rest = run_epoch(resumed, 1)
    assert len(rest) == 3
    for (i, m, img), (ei, em, eimg) in zip(rest, expected[7:]):
        assert (i == ei).all() and (m == em).all() and (img == eimg).all()
    assert (resumed.state_dict()["epoch"], resumed.state_dict()["iteration"]) == (2, 0)

    # The interrupted loader itself continues where its loop stopped.
    again = run_epoch(interrupted, 1)
    assert all((a[2] == e[2]).all() for a, e in zip(again, expected[7:]))

    at_boundary = make()
    at_boundary.load_state_dict({**mid, "epoch": 1, "iteration": 0})
    assert all((a[2] == e[2]).all() for a, e in zip(run_epoch(at_boundary, 1), expected[5:]))


def test_a_new_spatial_size_continues_from_the_same_position(photos):
    """Progressive resizing: the batches after the change are those of a loader made at the
    new size and resumed at the same position."""
    loader = batches(photos, batch_size=3, training=True, seed=5, channel_last=True)
    epoch0 = loader.epoch(0)
    before = [host_images(next(epoch0)) for _ in range(2)]
    epoch0.close()
    state = loader.state_dict()
    loader.set_spatial_size(24)
    loader.set_spatial_size(24)  # the size it has: nothing to do
    assert loader.image_shape == (3, 24, 24, 3) and before[0].shape == (3, 16, 16, 3)
    rest = run_epoch(loader, 0)
    fresh = batches(photos, batch_size=3, training=True, seed=5, channel_last=True,
                    spatial_size=24)
    fresh.load_state_dict(state)
    expected = run_epoch(fresh, 0)
    assert len(rest) == len(expected) == 3
    assert all((a[2] == e[2]).all() and (a[0] == e[0]).all() for a, e in zip(rest, expected))


def test_validation_passes_repeat_whatever_the_epoch_number(photos):
    loader = batches(photos, batch_size=5)
    first, later = run_epoch(loader, 0), run_epoch(loader, 7)
    assert all((a[2] == b[2]).all() and (a[0] == b[0]).all() for a, b in zip(first, later))
    assert next(loader.epoch(9)).epoch == 9


def test_restore_refuses_a_changed_layout_mid_epoch(photos):
    state = batches(photos, batch_size=3, training=True).state_dict()
    other = batches(photos, batch_size=4, training=True)
    with pytest.raises(DataError, match="batch_size 3 -> 4"):
        other.load_state_dict({**state, "iteration": 2})
    other.load_state_dict(state)  # an epoch boundary is fine
    assert other.state_dict()["epoch"] == 0


def test_demo_dataset_loads_if_present():
    root = os.path.join(os.path.dirname(__file__), "..", "data", "demo", "val")
    if not os.path.isdir(root):
        pytest.skip("data/demo not created")
    names = sorted(os.listdir(root))[:5]
    images = load_images([os.path.join(root, n) for n in names], spatial_size=32)
    assert images.shape == (5, 3, 32, 32) and images.std() > 0.3


# --------------------------------------------------------------------------- bad input


def test_list_file_errors_name_the_file_and_line(tmp_path, photos):
    root = photos.root
    name = os.path.basename(photos.paths[0])

    def read(text: str, **kw):
        path = tmp_path / "bad.txt"
        path.write_text(text)
        return read_file_list(str(path), root, **kw)

    with pytest.raises(DataError, match="image folder not found: .*nowhere"):
        read_file_list(str(tmp_path / "x"), str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="list file .*missing.txt not found"):
        read_file_list(str(tmp_path / "missing.txt"), root)
    with pytest.raises(DataError, match=r"bad.txt:2: cannot parse 'lonely.JPEG'"):
        read(f"{name} 0\nlonely.JPEG\n")
    with pytest.raises(DataError, match=r"bad.txt:1: cannot parse"):
        read(f"{name} cat\n")
    with pytest.raises(DataError, match=r"bad.txt:3: class id 3 out of range \(0..2\)"):
        read(f"{name} 0\n\n{name} 3\n", num_classes=3)
    with pytest.raises(DataError, match=r"bad.txt:2: file not found: .*gone.JPEG \(1 more"):
        read(f"{name} 0\ngone.JPEG 1\nalso_gone.JPEG 1\n")
    with pytest.raises(DataError, match="no images listed"):
        read("\n")
    assert len(read(f"{name} 0\n{name} 2\n\n", num_classes=3)) == 2


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    photo(64, 48).save(buf, "JPEG", quality=90)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"certainly not an image" * 4, "not an image"),
    ("gif", "unsupported image format GIF"),
    (_truncated_jpeg(), "truncated"),
])
@pytest.mark.parametrize("training", [False, True])
def test_undecodable_image_stops_with_its_name(tmp_path, photos, content, reason, training):
    bad = tmp_path / "bad.JPEG"
    if content == "gif":
        photo(20, 20).save(bad, "GIF")
    else:
        bad.write_bytes(content)
    rows = [(photos.full_path(i), 0) for i in range(5)]
    rows.insert(3, (str(bad), 0))
    files = read_file_list(write_list(str(tmp_path / "list.txt"), rows), str(tmp_path))
    loader = batches(files, batch_size=2, training=training)
    with pytest.raises(ImageDecodeError, match=rf"bad.JPEG \(line 4 of .*list.txt\): .*{reason}"):
        run_epoch(loader, 0)


def test_image_vanishing_during_training_is_named(tmp_path, photos):
    rows = [(photos.full_path(i), 0) for i in range(3)]
    gone = save(photo(20, 20), str(tmp_path / "gone.JPEG"))
    files = read_file_list(write_list(str(tmp_path / "list.txt"), rows + [(gone, 1)]),
                           str(tmp_path))
    os.remove(gone)
    with pytest.raises(ImageDecodeError, match=r"gone.JPEG \(line 4 of .*No such file"):
        run_epoch(batches(files, batch_size=2, training=True), 0)


@pytest.mark.parametrize("policy", marking_slow(["randaugment", "trivialaugment", "autoaugment"],
                                                 ("randaugment", "autoaugment")))
def test_each_policy_changes_the_images_reproducibly_and_resumes_exactly(photos, policy):
    """DALI's own policy operators on the CPU pipeline, after the crop: seeded by (seed,
    epoch, rank), so a second pipeline gives the same batches and a resumed epoch continues
    with the batches the uninterrupted one gave."""
    def run(augmentation, epoch=1, restore=None):
        loader = batches(photos, batch_size=2, training=True, seed=4, channel_last=True,
                         augmentation=augmentation)
        if restore is not None:
            loader.load_state_dict({**loader.state_dict(), "epoch": epoch, "iteration": restore})
        return [host_images(b) for b in loader.epoch(epoch)]

    chosen = Augmentation(policy=policy, **({"m": 15} if policy == "randaugment" else {}))
    plain, first, again = run(Augmentation()), run(chosen), run(chosen)
    assert len(first) == len(plain) == -(-len(SIZES) // 2)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - p).mean() > 0.05 for a, p in zip(first, plain))
    resumed = run(chosen, restore=2)
    for a, b in zip(first[2:], resumed):
        np.testing.assert_array_equal(a, b)
    assert any(np.abs(a - b).mean() > 0.05 for a, b in zip(first, run(chosen, epoch=2)))


def test_crop_ranges_follow_the_augmentation():
    rng = np.random.default_rng(0)
    for _ in range(200):
        x, y, w, h = random_resized_crop_window(400, 300, rng, (0.5, 0.6), (1.0, 1.0))
        assert w == h or abs(w - h) <= 1  # aspect 1
        assert 0.5 * 0.98 <= w * h / (400 * 300) <= 0.6 * 1.02
