"""Long-run memory check: train.py's resident memory must stay flat over hundreds of steps.

Runs train.py as a user would (a tiny network on the Fashion-MNIST demo images at 32x32, so
that many iterations pass quickly), with all the per-epoch work a real run does: validation,
checkpoints, weight files and plots. The process's resident set size (VmRSS) is sampled
every 0.2 s and at the end of every epoch. The first epochs allocate NNabla's buffers, DALI's
pipelines and the allocator's arenas (here RSS rises fast for ~10 epochs, then by ever
smaller steps, then not at all), so growth is measured over the second half of the run: a
linear fit of the epoch-end RSS against iterations gives the slope in MB per 1,000
iterations.

    .venv/bin/python benchmarks/bench_memory.py [--images 64 --epochs 60 --trace]

Prints RSS after the first epoch, at the start of the fit, at the end and the maximum, the
slope, and "flat" when RSS grew by less than 1 % over the second half (exit status 0; 1
otherwise). Measured here (2 CPU cores, 80 epochs = 640 iterations): 271.6 MB after epoch 0,
322.6 MB after epoch 40, 323.1 MB at the end and at most; +0.5 MB over the last 312
iterations, none over the last 22 epochs.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "data", "demo")
EPOCH_LINE = re.compile(r"epoch (\d+): train loss")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def write_lists(folder: str, images: int) -> Tuple[str, str]:
    """A training list of `images` demo images over all classes, a 16-image validation list."""
    classes = sorted(d for d in os.listdir(os.path.join(DEMO, "train")) if not d.startswith("."))
    per_class = -(-images // len(classes))
    rows = []
    for label, name in enumerate(classes):
        files = sorted(os.listdir(os.path.join(DEMO, "train", name)))[:per_class]
        rows += [f"{name}/{f} {label}\n" for f in files]
    train = os.path.join(folder, "train_list")
    with open(train, "w") as f:
        f.writelines(rows[:images])
    with open(os.path.join(DEMO, "val_ground_truth.txt")) as f:
        truth = f.read().split()
    val = os.path.join(folder, "val_list")
    with open(val, "w") as f:
        f.writelines(f"ILSVRC2012_val_{i:08d}.JPEG {truth[i - 1]}\n" for i in range(1, 17))
    return train, val


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--images", type=int, default=64, help="training images (default: 64)")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=60, help="default 60: 480 iterations")
    p.add_argument("--warmup", type=int, default=None,
                   help="epochs left out of the fit (default: the first half)")
    p.add_argument("--config", default=os.path.join(REPO, "cfg", "quickstart.yaml"))
    p.add_argument("--trace", action="store_true", help="print the RSS of every epoch")
    p.add_argument("extra", nargs="*", help="more train.py flags (after --)")
    return p.parse_args()


def watch_training(args: argparse.Namespace, folder: str
                   ) -> Tuple[List[Tuple[float, float]], Dict[int, float], float]:
    """Run train.py, sampling its RSS every 0.2 s: (time, MB) samples, the RSS when each
    epoch's log line appeared, and the seconds taken. SystemExit(1) if train.py fails."""
    train, val = write_lists(folder, args.images)
    log_path = os.path.join(folder, "train.err")
    command = [sys.executable, os.path.join(REPO, "train.py"), "-a", args.arch,
               "--num-classes", "10", "--spatial-size", "32", "-b", str(args.batch_size),
               "-C", args.config, "-e", str(args.epochs), "-T", os.path.join(DEMO, "train"),
               "--train-list", train, "-V", os.path.join(DEMO, "val"), "--val-list", val,
               "-v", "5", "-s", "10", "--dali-num-threads", "1",
               "-m", os.path.join(folder, "monitor"), *args.extra]
    samples: List[Tuple[float, float]] = []
    at_epoch_end: Dict[int, float] = {}
    started = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log,
                                   env={**os.environ, "MPLBACKEND": "Agg"})
        while process.poll() is None:
            rss = rss_mb(process.pid)
            if rss:
                samples.append((time.monotonic() - started, rss))
            with open(log_path, errors="replace") as f:
                for epoch in map(int, EPOCH_LINE.findall(f.read())):
                    at_epoch_end.setdefault(epoch, rss)
            time.sleep(0.2)
    if process.returncode != 0:
        with open(log_path, errors="replace") as f:
            print(f.read()[-3000:], file=sys.stderr)
        print(f"train.py failed with status {process.returncode}", file=sys.stderr)
        raise SystemExit(1)
    return samples, at_epoch_end, time.monotonic() - started


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_memory.") as folder:
        samples, at_epoch_end, seconds = watch_training(args, folder)

    iterations = -(-args.images // args.batch_size)
    warmup = args.epochs // 2 if args.warmup is None else args.warmup
    epochs = sorted(e for e in at_epoch_end if e >= warmup)
    if len(epochs) < 3:
        print("too few epochs after the warm-up to fit a slope", file=sys.stderr)
        return 1
    x = np.array([(e + 1) * iterations for e in epochs], dtype=float)
    y = np.array([at_epoch_end[e] for e in epochs])
    slope = np.polyfit(x, y, 1)[0] * 1000  # MB per 1,000 iterations
    peak = max(rss for _, rss in samples)
    total = args.epochs * iterations
    if args.trace:
        print("RSS (MB) at the end of each epoch: " + ", ".join(
            f"{e}: {at_epoch_end[e]:.1f}" for e in sorted(at_epoch_end)))
    print(f"{args.arch}, {args.images} images, batch {args.batch_size}: {args.epochs} epochs, "
          f"{total} iterations in {seconds:.0f} s (validation every 5 epochs, a checkpoint and "
          f"plots every epoch)")
    print(f"RSS after epoch 0: {at_epoch_end[0]:.1f} MB; after epoch {epochs[0]} (start of the "
          f"fit): {y[0]:.1f} MB; at the end: {y[-1]:.1f} MB; max: {peak:.1f} MB")
    print(f"slope after warm-up: {slope:+.2f} MB per 1,000 iterations "
          f"({y[-1] - y[0]:+.1f} MB over {x[-1] - x[0]:.0f} iterations)")
    flat = y[-1] - y[0] < 0.01 * y[0]
    print("flat" if flat else "GROWING: memory still rises in the second half of the run")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
