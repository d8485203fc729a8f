"""Images per second of the CPU DALI pipelines against a single-process Pillow loader.

Both do the same work per image: decode a JPEG, random-resized-crop + flip (training) or
resize the shorter side + centre crop (validation), normalise, NCHW float32 batches. The
test images are ~400x350 JPEGs cut from matplotlib's sample photograph into a temporary
folder. Run: .venv/bin/python benchmarks/bench_data.py [--images 300 --threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from typing import Callable, List

import nnabla as nn
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from models import NORMALIZATIONS  # noqa: E402
from utils.data.augmentation import augmentation_plan  # noqa: E402
from utils.data.batch_plan import BatchPlan  # noqa: E402
from utils.data.pipelines import DaliOptions, ImageBatches, ImageFormat, resize_for_crop  # noqa: E402
from utils.labels.file_list import FileList  # noqa: E402

MEAN, STD = (np.array(v, dtype=np.float32) for v in NORMALIZATIONS["default"])


def make_images(folder: str, count: int) -> List[str]:
    """`count` different ~400x350 JPEGs (quality 90) cut and scaled from the sample photo."""
    import matplotlib.cbook as cbook

    src = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        w, h = int(rng.integers(360, 440)), int(rng.integers(320, 380))
        side = int(rng.integers(300, 500))
        x, y = int(rng.integers(0, src.width - side + 1)), int(rng.integers(0, src.height - side))
        path = os.path.join(folder, f"img_{i:05d}.JPEG")
        src.crop((x, y, x + side, y + side * h // w)).resize((w, h), Image.BILINEAR).save(
            path, "JPEG", quality=90)
        paths.append(path)
    return paths


def to_chw(img: Image.Image) -> np.ndarray:
    return ((np.asarray(img, dtype=np.float32) - MEAN) / STD).transpose(2, 0, 1)


def pillow_epoch(paths: List[str], batch_size: int, size: int, training: bool, epoch: int) -> int:
    """One pass in batches, the same maths as the DALI pipelines; returns images done."""
    done = 0
    for it, start in enumerate(range(0, len(paths), batch_size)):
        chunk = paths[start:start + batch_size]
        images = [Image.open(p).convert("RGB") for p in chunk]
        out = []
        if training:
            plan = augmentation_plan([im.size for im in images], 0, epoch, it, 0)
            for im, (x, y, w, h, flip) in zip(images, plan):
                im = im.crop((x, y, x + w, y + h)).resize((size, size), Image.BILINEAR)
                out.append(to_chw(im.transpose(Image.FLIP_LEFT_RIGHT) if flip else im))
        else:
            target = resize_for_crop(size)
            for im in images:
                scale = target / min(im.size)
                w, h = round(im.width * scale), round(im.height * scale)
                im = im.resize((w, h), Image.BILINEAR)
                x, y = (w - size + 1) // 2, (h - size + 1) // 2
                out.append(to_chw(im.crop((x, y, x + size, y + size))))
        np.stack(out)
        done += len(chunk)
    return done


def dali_epoch(loader: ImageBatches, x: nn.Variable, epoch: int) -> int:
    """One epoch, each batch copied into an input variable as a CPU training step does."""
    done = 0
    for batch in loader.epoch(epoch):
        batch.copy_to(x)
        done += batch.num_valid
    return done


def rate(run: Callable[[int], int], repeats: int) -> float:
    run(0)  # warm-up: page cache, pipeline build, allocations
    start, done = time.perf_counter(), 0
    for epoch in range(1, repeats + 1):
        done += run(epoch)
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="DALI threads (1 thread is measured too)")
    p.add_argument("--repeats", type=int, default=2, help="timed epochs per loader")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        paths = make_images(folder, args.images)
        files = FileList.from_files(paths)
        threads = sorted({1, args.threads})
        print(f"{args.images} JPEGs ~400x350, batch {args.batch_size}, output "
              f"{args.size}x{args.size} NCHW float32; images/s")
        print(f"{'':12}" + "".join(f"{f'DALI {t} thr':>12}" for t in threads)
              + f"{'Pillow':>10}" + "".join(f"{f'ratio {t} thr':>12}" for t in threads))
        for training in (True, False):
            dali = []
            for t in threads:
                loader = ImageBatches(BatchPlan(files, args.batch_size, training),
                                      ImageFormat(args.size), DaliOptions(t))
                x = nn.Variable(loader.image_shape)
                dali.append(rate(partial(dali_epoch, loader, x), args.repeats))
                loader.close()
            pil = rate(partial(pillow_epoch, paths, args.batch_size, args.size, training),
                       args.repeats)
            name = "training" if training else "validation"
            print(f"{name:12}" + "".join(f"{d:12.1f}" for d in dali) + f"{pil:10.1f}"
                  + "".join(f"{d / pil:12.2f}" for d in dali))

if __name__ == "__main__":
    main()
