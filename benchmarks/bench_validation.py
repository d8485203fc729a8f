"""validation.py's images/s against a bare NNabla forward loop, and infer.py's wall time.

1. validation.py is run as a user runs it (`--json`) over N JPEGs; its images/s counts from
   the first batch to the result (DALI decoding, forward, metrics, all-reduce).
2. In the same run, the same weights classify the same batches, preprocessed beforehand by
   the same pipeline and held in memory, with nothing but `x.d = batch; y.forward()`, in a
   fresh process too (so both pay NNabla's first-forward memory allocation). The ratio
   (1) / (2) is what validation's machinery costs; the target is >= 0.95.
3. infer.py classifies one image; its wall time is split into start-up (interpreter,
   imports, context), weight loading (read, build, load), preprocessing and forward.

Images are ~500x375 JPEGs scaled from matplotlib's sample photograph, in a temporary
folder; the weights are random. Run:
    .venv/bin/python benchmarks/bench_validation.py [--arch resnet50 --images 96 -b 32]

On a shared CPU the forward time of identical batches varies by ~10 %, so use enough images
(the default 128 at resnet18 takes ~3 min on 2 cores) and compare the best of the rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import List

import nnabla as nn
import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from models import build_network, get_architecture  # noqa: E402
from utils.data.batch_plan import BatchPlan  # noqa: E402
from utils.data.pipelines import DaliOptions, ImageBatches, ImageFormat  # noqa: E402
from utils.labels.file_list import read_file_list, write_file_list  # noqa: E402
from utils.weights.files import network_parameters, open_weight_file, write_parameters  # noqa: E402


def photos(folder: str, count: int) -> List[str]:
    """`count` JPEGs of varied size and framing cut from the sample photograph."""
    import matplotlib

    source = Image.open(os.path.join(matplotlib.get_data_path(), "sample_data",
                                     "grace_hopper.jpg")).convert("RGB")
    rng = np.random.default_rng(1)
    names = []
    for i in range(count):
        left, top = int(rng.integers(0, 120)), int(rng.integers(0, 160))
        crop = source.crop((left, top, left + 380, top + 420))
        size = (int(rng.integers(440, 560)), int(rng.integers(330, 420)))
        name = f"img_{i:05d}.JPEG"
        crop.resize(size, Image.BILINEAR).save(os.path.join(folder, name), quality=90)
        names.append(name)
    return names


def random_weights(path: str, arch: str, size: int) -> None:
    nn.clear_parameters()
    nn.seed(0)
    build_network(nn.Variable((1, 3, size, size)), 1000, arch, test=True)
    write_parameters(path, network_parameters())
    nn.clear_parameters()


def host_copy(batch) -> np.ndarray:
    """The batch's images as a host array (what the bare loop feeds)."""
    array = nn.NdArray(batch.image_shape)
    batch.copy_to(array)
    return array.data.copy()


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO,
                          capture_output=True, text=True, check=True)


def validation_rate(args: argparse.Namespace, weights: str, folder: str, val_list: str) -> float:
    result = run("validation.py", weights, "-a", args.arch, "-V", folder, "--val-list",
                 val_list, "-b", str(args.batch_size), "--json", "--no-progress",
                 "--dali-num-threads", str(args.threads), "-M",
                 os.path.join(folder, "monitor"))
    return json.loads(result.stdout)["images_per_second"]


def bare_rate(weights: str, arch: str, batches_file: str, num_images: int) -> float:
    """Images/s of `x.d = batch; y.forward()` over the saved batches (padding included in
    the work, not in the count, as validation.py does), in this process."""
    batches = np.load(batches_file)
    x = nn.Variable(batches.shape[1:])
    y, _ = build_network(x, 1000, arch, test=True)
    open_weight_file(weights).load_into(arch)
    start = time.perf_counter()
    for images in batches:
        x.d = images
        y.forward(clear_buffer=True)
    return num_images / (time.perf_counter() - start)


def bare_rate_in_new_process(args: argparse.Namespace, weights: str, batches_file: str) -> float:
    """A fresh process, like validation.py's: first-batch memory allocation included in both."""
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--arch", args.arch, "--images",
         str(args.images), "--bare-loop", weights, batches_file],
        capture_output=True, text=True, check=True)
    return float(result.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=4, help="DALI threads (validation's default)")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds, best kept")
    p.add_argument("--bare-loop", nargs=2, metavar=("WEIGHTS", "NPY"),
                   help="internal: run only the bare loop and print its images/s")
    args = p.parse_args()
    if args.bare_loop:
        print(bare_rate(args.bare_loop[0], args.arch, args.bare_loop[1], args.images))
        return
    size = get_architecture(args.arch).resolution
    with tempfile.TemporaryDirectory() as folder:
        names = photos(folder, args.images)
        val_list = os.path.join(folder, "val_label")
        write_file_list(val_list, names, [i % 1000 for i in range(len(names))])
        weights = os.path.join(folder, "weights.h5")
        random_weights(weights, args.arch, size)
        files = read_file_list(val_list, folder)
        with ImageBatches(BatchPlan(files, args.batch_size, training=False),
                          ImageFormat(size), DaliOptions(args.threads)) as pipeline:
            batches_file = os.path.join(folder, "batches.npy")
            np.save(batches_file, np.stack([host_copy(batch) for batch in pipeline.epoch(0)]))

        rates = {"validation.py": [], "bare forward": []}
        for _ in range(args.repeats):
            rates["validation.py"].append(validation_rate(args, weights, folder, val_list))
            rates["bare forward"].append(bare_rate_in_new_process(args, weights, batches_file))
        best = {k: max(v) for k, v in rates.items()}
        print(f"{args.arch} {size}x{size}, {args.images} images, batch {args.batch_size}, "
              f"CPU, {os.cpu_count()} cores, best of {args.repeats}")
        for name, rate in best.items():
            print(f"  {name:<14} {rate:8.2f} images/s   (runs: "
                  f"{', '.join(f'{r:.2f}' for r in rates[name])})")
        print(f"  ratio validation.py / bare forward = "
              f"{best['validation.py'] / best['bare forward']:.3f} (target >= 0.95)")

        start = time.perf_counter()
        result = run("infer.py", os.path.join(folder, names[0]), weights, "-a", args.arch,
                     "--json")
        wall = time.perf_counter() - start
        phases = json.loads(result.stdout)["timings"]
        print(f"infer.py, one image, wall {wall:.2f} s:")
        print(f"  start-up (interpreter, imports, context, output) "
              f"{wall - sum(phases.values()):6.2f} s")
        for name, label in (("weights", "weight loading (read, build, load)"),
                            ("preprocess", "preprocessing (DALI decode, resize, crop)"),
                            ("forward", "forward")):
            print(f"  {label:<49}{phases[name]:6.2f} s")


if __name__ == "__main__":
    main()
