"""Classify images with a weight file: the top-k classes with their names and probabilities.

Images are preprocessed exactly as validation.py does (shorter side resized by 256/224 of
the input size, centre crop), so the probabilities equal validation's. The layout and input
channels are read from the weight file; on a CPU an NHWC file is converted in memory. A
missing or unreadable image, or weights for another network, is one line on stderr, status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

import utils.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

import numpy as np

from utils import cli, help_text
from utils.data import ImageBatches
from utils.errors import DataError
from utils.evaluation import EvaluationGraph, network_for_weights
from utils.file_list import FileList
from utils.image_folders import is_image_name
from utils.image_probe import probe_image
from utils.imagenet import class_names
from utils.runtime import run, setup_runtime
from utils.weights import open_weights

EXAMPLES = (
    "python infer.py photo.jpg more_photos/ rn50-nhwc_mixup250.h5",
    "python infer.py photo.jpg my_model.h5 -a resnet18 --num-classes 101 "
    "--labels label_words.csv -k 3",
)
WRITES = "none: the classes go to stdout (with --json, one object with the timings)"


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    p.add_argument("inputs", nargs="+", metavar="IMAGE",
                   help="image files or folders (searched recursively for images)")
    cli.add_weight_file_flags(p)
    cli.add_input_flags(p)
    outputs = help_text.add_group(p, "outputs", "-b images are classified together.")
    outputs.add_argument("-k", "--top-k", type=cli.positive_int, default=5, metavar="N",
                         help="classes shown per image (default: %(default)s)")
    cli.add_labels_flag(outputs)
    cli.add_batch_size_flag(outputs, 16)
    cli.add_json_flag(outputs)
    cli.add_network_runtime_flag(outputs)
    cli.add_tta_flag(outputs)
    cli.add_runtime_flags(p)
    cli.add_dali_flags(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return cli.parse_weight_file_args(build_parser(), argv)


def image_paths(inputs: Sequence[str]) -> List[str]:
    """The images named, and those under the folders named (sorted); each header checked."""
    paths: List[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                os.path.join(folder, name)
                for folder, _, names in os.walk(item) for name in names if is_image_name(name))
            if not found:
                raise DataError(f"no images in folder {item}")
            paths.extend(found)
        elif os.path.exists(item):
            paths.append(item)
        else:
            raise DataError(f"no such image or folder: {item}")
    for path in paths:
        try:
            with open(path, "rb") as f:
                probe_image(f.read())
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e.strerror}") from None
        except DataError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
    return paths


def top_k(probabilities: np.ndarray, k: int, names: List[Optional[str]]) -> List[Dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"class": int(c), "name": names[c], "probability": float(probabilities[c])}
            for c in order]


def classify(graph: EvaluationGraph, batches: ImageBatches, timings: Dict[str, float]
             ) -> np.ndarray:
    """Probabilities (N, K) of every image, in input order; adds to the phase timings."""
    probabilities = np.zeros((batches.plan.num_samples, graph.probabilities.shape[1]), np.float32)
    timings["preprocess"] = timings["forward"] = 0.0
    clock = time.perf_counter()
    for batch in batches.epoch(0):
        batch.copy_to(graph.image, graph.ctx)
        now = time.perf_counter()
        timings["preprocess"] += now - clock
        graph.forward(graph.probabilities)
        valid = batch.mask[:, 0] > 0
        probabilities[batch.indices[valid]] = graph.probabilities.d[valid]
        clock = time.perf_counter()
        timings["forward"] += clock - now
    return probabilities


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args)
    cli.check_network_runtime(args.runtime, rt.backend)
    paths = image_paths(args.inputs)
    timings: Dict[str, float] = {}  # seconds of each phase, for the benchmark
    clock = time.perf_counter()
    weights = open_weights(args.weights, args.arch, not args.no_download)
    num_classes = weights.classes(args.num_classes)
    names = class_names(args.labels, num_classes)
    batches, graph = network_for_weights(
        weights, args.arch, num_classes, FileList.from_files(paths),
        min(args.batch_size, len(paths)), rt,
        cli.input_pipeline(args, rt, args.crop_pct).formatted(norm=args.norm_config),
        runtime=args.runtime, flip=args.tta == "flip")
    timings["weights"] = time.perf_counter() - clock
    with batches:
        probabilities = classify(graph, batches, timings)
    predictions = [{"image": path, "top_k": top_k(p, args.top_k, names)}
                   for path, p in zip(paths, probabilities)]
    if args.json:
        print(json.dumps({"weights": args.weights, "arch": args.arch,
                          "predictions": predictions, "timings": timings}))
        return 0
    for prediction in predictions:
        print(prediction["image"])
        for rank, guess in enumerate(prediction["top_k"], 1):
            name = f"  {guess['name']}" if guess["name"] is not None else ""
            print(f"  {rank}. {100 * guess['probability']:6.2f} %  class {guess['class']}{name}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
