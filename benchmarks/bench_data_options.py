"""What random erasing, repeated augmentation and the test-time resize cost in images/s of the
CPU DALI pipelines, each as a ratio to the same pipeline without it, measured in the same run.

Images: the demo training JPEGs (data/demo, 28x28 Fashion-MNIST photographs), as
bench_augmentation.py, so the numbers show the cost of the options more than the decoding.
Training cases are ratios to the official augmentation; validation cases to the default
resize (size / 0.875). Each option is measured in images per CPU-second of this process (its
DALI threads included) as well as per wall-clock second: on a machine shared with other jobs
the CPU time is the steadier of the two.

    .venv/bin/python benchmarks/bench_data_options.py [--size 224 --images 640 --threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, Tuple

import nnabla as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_augmentation import demo_images  # noqa: E402
from bench_data import dali_epoch  # noqa: E402

from utils.data.batch_plan import BatchPlan  # noqa: E402
from utils.data.pipelines import DaliOptions, ImageBatches, ImageFormat  # noqa: E402
from utils.labels.file_list import FileList  # noqa: E402
from utils.recipe.augmentation import Augmentation  # noqa: E402


def loader_of(files: FileList, args: argparse.Namespace, augmentation: Optional[Augmentation],
              val_resize: Optional[int] = None) -> ImageBatches:
    """The training pipeline with `augmentation`, or (None) validation's."""
    training = augmentation is not None
    plan = BatchPlan(files, args.batch_size, training,
                     repeats=augmentation.repeated_augmentation if training else 1)
    return ImageBatches(plan, ImageFormat(args.size, val_resize=val_resize),
                        DaliOptions(args.threads), augmentation or Augmentation())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=640)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=4,
                   help="timed epochs per option, the options taking turns; the best counts")
    args = p.parse_args()
    files = demo_images(args.images)
    size = args.size
    groups: List[List[Tuple[str, Optional[Augmentation], Optional[int]]]] = [[
        ("official augmentation", Augmentation(), None),
        ("random_erasing 0.25", Augmentation(random_erasing=0.25), None),
        ("random_erasing 0.5", Augmentation(random_erasing=0.5), None),
        ("random_erasing 1.0", Augmentation(random_erasing=1.0), None),
        ("repeated_augmentation 3", Augmentation(repeated_augmentation=3), None),
    ], [
        (f"validation, default resize {round(size / 0.875 / 2) * 2}", None, None),
        (f"validation, val_resize {size * 232 // 224}", None, size * 232 // 224),
        (f"validation, val_resize {size}", None, size),
    ]]
    print(f"{len(files)} demo JPEGs, batch {args.batch_size}, {args.threads} DALI thread(s), "
          f"CPU, {size}x{size}; the best of {args.rounds} epochs taken in turns, and the "
          f"ratios to the first case of its group")
    started = time.perf_counter()
    for group in groups:
        loaders = [loader_of(files, args, augmentation, val_resize)
                   for _, augmentation, val_resize in group]
        inputs = [nn.Variable(loader.image_shape) for loader in loaders]
        for loader, x in zip(loaders, inputs):
            dali_epoch(loader, x, 0)  # warm-up: page cache, pipeline build, allocations
        wall, cpu = [0.0] * len(group), [0.0] * len(group)
        for epoch in range(1, args.rounds + 1):
            for i, (loader, x) in enumerate(zip(loaders, inputs)):
                begin, begin_cpu = time.perf_counter(), time.process_time()
                done = dali_epoch(loader, x, epoch)
                wall[i] = max(wall[i], done / (time.perf_counter() - begin))
                cpu[i] = max(cpu[i], done / (time.process_time() - begin_cpu))
        for (name, _, _), w, c in zip(group, wall, cpu):
            print(f"  {name:32} {w:7.1f} img/s {w / wall[0]:5.2f}x   {c:7.1f} img/CPU-s "
                  f"{c / cpu[0]:5.2f}x", flush=True)
        for loader in loaders:
            loader.close()
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
