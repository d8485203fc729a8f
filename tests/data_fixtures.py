"""Small real photographs for the data tests, cut at test time from matplotlib's sample photo
(Grace Hopper, 512x600 RGB JPEG), so nothing is downloaded or committed."""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Any, Iterable, List, Sequence, Tuple

import nnabla as nn
import numpy as np
from PIL import Image

from utils.data.batch_plan import BatchPlan, Shard
from utils.data.pipelines import Batch, DaliOptions, ImageBatches, ImageFormat
from utils.labels.file_list import FileList, read_file_list
from utils.recipe.augmentation import OFFICIAL, Augmentation


@lru_cache(maxsize=None)
def _source() -> Image.Image:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return img.convert("RGB")


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A `width` x `height` RGB crop of the photo, the crop region varying with `seed`."""
    src = _source()
    side = 200 + (seed * 37) % 200
    x = (seed * 53) % (src.width - side)
    y = (seed * 29) % (src.height - side)
    return src.crop((x, y, x + side, y + side)).resize((width, height), Image.BILINEAR)


def save(img: Image.Image, path: str, fmt: str = "JPEG") -> str:
    """Save `img` in format `fmt` whatever the file name says (PNG-named-.JPEG included)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def class_tree(root: str, classes: Iterable[str], per_class: int,
               size: Tuple[int, int] = (24, 20)) -> List[Tuple[str, str]]:
    """One JPEG folder per class; returns (class, relative path) in sorted order."""
    out = []
    for c, name in enumerate(sorted(classes)):
        for i in range(per_class):
            rel = f"{name}/{name}_{i}.JPEG"
            save(photo(*size, seed=c * per_class + i), os.path.join(root, rel))
            out.append((name, rel))
    return out


def image_set(root: str, sizes: Sequence[Tuple[int, int]]) -> List[str]:
    """RGB JPEGs of the given (width, height), named img_<i>.JPEG under `root`."""
    return [save(photo(w, h, seed=i), os.path.join(root, f"img_{i:02d}.JPEG"))
            for i, (w, h) in enumerate(sizes)]


def listed_image_set(root: str, sizes: Sequence[Tuple[int, int]]) -> FileList:
    """`image_set` in `root` with a list file, image i of class i % 3 (of 3)."""
    files = image_set(root, sizes)
    list_file = write_list(os.path.join(root, "list.txt"),
                           [(os.path.basename(f), i % 3) for i, f in enumerate(files)])
    return read_file_list(list_file, root, num_classes=3)


def write_list(path: str, rows: Iterable[Tuple[str, int]]) -> str:
    with open(path, "w") as f:
        f.writelines(f"{p} {c}\n" for p, c in rows)
    return path


def host_images(batch: Batch) -> np.ndarray:
    """A host copy of a batch's images, through the copy the scripts use (`Batch.copy_to`)."""
    array = nn.NdArray(batch.image_shape)
    batch.copy_to(array)
    return array.data.copy()


def make_batches(files: FileList, batch_size: int, training: bool = False, seed: int = 0,
                 rank: int = 0, num_ranks: int = 1, augmentation: Augmentation = OFFICIAL,
                 num_threads: int = 1, prefetch: int = 2, **image: Any) -> ImageBatches:
    """`ImageBatches` from the options of all its parts in one call (`image`: the fields of
    `ImageFormat`); one DALI thread unless asked."""
    plan = BatchPlan(files, batch_size, training, seed, Shard(rank, num_ranks))
    return ImageBatches(plan, ImageFormat(**image), DaliOptions(num_threads, prefetch),
                        augmentation)


def load_images(paths: Sequence[str], spatial_size: Any = 224, **options: Any) -> np.ndarray:
    """Image files preprocessed exactly as validation does, as one array."""
    files = FileList.from_files(paths)
    with make_batches(files, len(files), spatial_size=spatial_size, prefetch=1,
                      **options) as batches:
        return host_images(next(batches.epoch(0)))
