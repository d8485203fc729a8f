"""What each training option costs in images/s of the CPU DALI training pipeline, as a ratio to
the official augmentation measured in the same run.

Images: the demo training JPEGs (data/demo, 28x28 Fashion-MNIST photographs), so the numbers
show the cost of the augmentation itself more than the decoding. Options: the crop ranges, the
three policies, CutMix and mixup (their per-batch draws on the host, added to the pipeline's
time), and progressive resizing's lower resolutions.

    .venv/bin/python benchmarks/bench_augmentation.py [--size 224 --images 640 --threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from typing import Callable, List, Tuple

import nnabla as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_data import dali_epoch, rate  # noqa: E402

from utils.data.batch_plan import BatchPlan  # noqa: E402
from utils.data.pipelines import DaliOptions, ImageBatches, ImageFormat  # noqa: E402
from utils.labels.file_list import FileList  # noqa: E402
from utils.recipe.augmentation import Augmentation  # noqa: E402
from utils.train.mixing import BatchMixing  # noqa: E402

DEMO_TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo",
                          "train")


def demo_images(count: int) -> FileList:
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(DEMO_TRAIN)
                   for name in names if name.endswith(".JPEG"))
    return FileList.from_files(paths[:count])


def pipeline_rate(files: FileList, args: argparse.Namespace, size: int,
                  augmentation: Augmentation, mixing: Tuple[float, float] = (0.0, 0.0)
                  ) -> float:
    loader = ImageBatches(BatchPlan(files, args.batch_size, True), ImageFormat(size),
                          DaliOptions(args.threads), augmentation)
    x = nn.Variable(loader.image_shape)
    epoch: Callable[[int], int] = partial(dali_epoch, loader, x)
    if any(mixing):
        mixer = BatchMixing(*mixing, loader.image_shape, 10)

        def epoch(e: int) -> int:  # the pipeline, then the host's draws for every batch
            done = dali_epoch(loader, x, e)
            for _ in range(len(loader)):
                mixer.resample()
            return done

    result = rate(epoch, args.repeats)
    loader.close()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=2, help="timed epochs per option")
    args = p.parse_args()
    files = demo_images(args.images)
    size = args.size
    cases: List[Tuple[str, int, Augmentation, Tuple[float, float]]] = [
        ("official (area 0.08-1, no policy)", size, Augmentation(), (0, 0)),
        ("random_area [0.35, 1]", size, Augmentation(random_area=(0.35, 1.0)), (0, 0)),
        ("policy randaugment n=2 m=9", size, Augmentation(policy="randaugment"), (0, 0)),
        ("policy trivialaugment", size, Augmentation(policy="trivialaugment"), (0, 0)),
        ("policy autoaugment", size, Augmentation(policy="autoaugment"), (0, 0)),
        ("mixup 0.2", size, Augmentation(), (0.2, 0)),
        ("cutmix 1.0", size, Augmentation(), (0, 1.0)),
        ("mixup 0.2 + cutmix 1.0", size, Augmentation(), (0.2, 1.0)),
        (f"resolution {size * 5 // 7 // 32 * 32}", size * 5 // 7 // 32 * 32, Augmentation(),
         (0, 0)),
        (f"resolution {size // 2 // 32 * 32}", size // 2 // 32 * 32, Augmentation(), (0, 0)),
    ]
    print(f"{len(files)} demo JPEGs, batch {args.batch_size}, {args.threads} DALI thread(s), "
          f"CPU; images/s and the ratio to the official augmentation at {size}x{size}")
    baseline = None
    started = time.perf_counter()
    for name, resolution, augmentation, mixing in cases:
        value = pipeline_rate(files, args, resolution, augmentation, mixing)
        baseline = baseline or value
        print(f"  {name:36} {value:8.1f} img/s  {value / baseline:5.2f}x", flush=True)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
