"""Classify images with a weight file: the top-k classes with their names and probabilities.

Images are preprocessed exactly as validation.py does (shorter side resized by 256/224 of
the input size, centre crop), so the probabilities equal validation's. The layout and input
channels are read from the weight file; on a CPU an NHWC file is converted in memory. A
missing or unreadable image, or weights for another network, is one line on stderr, status 2.
WEIGHTS may be an NNP file (export.py's, or laid out as NNabla's model zoo publishes them).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

import numpy as np

from utils.cli import flags as cli
from utils.cli import help_text
from utils.data.image_probe import probe_image
from utils.data.pipelines import ImageBatches
from utils.eval.evaluation import EvaluationGraph, network_for_nnp, network_for_weights
from utils.labels.file_list import FileList
from utils.labels.image_folders import is_image_name
from utils.labels.imagenet import class_names
from utils.process.atomic import atomic_write_text, check_output_file
from utils.process.errors import DataError, UsageError
from utils.process.progress import Progress
from utils.process.run import run
from utils.process.runtime import setup_runtime
from utils.weights.files import open_weights

EXAMPLES = (
    "python infer.py photo.jpg more_photos/ rn50-nhwc_mixup250.h5",
    "mpirun -n 2 python infer.py photos/ my_model.h5 -a resnet18 --num-classes 101 "
    "--labels label_words.csv --output predictions.csv",
)
WRITES = ("--output FILE (.csv or .json): one row per image, an unreadable image a row with "
          "its error; else nothing: the classes go to stdout (with --json, one object with "
          "the timings)")
PREDICTION_FORMATS = (".csv", ".json")


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
    outputs.add_argument("--output", default=None, metavar="FILE",
                         help="write the predictions to FILE (.csv: a row per image with its "
                              "top-k classes, names and probabilities; .json: one object) "
                              "instead of stdout, with a progress bar; an unreadable image "
                              "becomes a row with its error instead of ending the run")
    cli.add_network_flags(outputs)
    cli.add_runtime_flags(p)
    cli.add_dali_flags(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return cli.parse_weight_file_args(build_parser(), argv)


def image_paths(inputs: Sequence[str]) -> List[str]:
    """The images named, and those under the folders named (sorted)."""
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
    return paths


def unreadable(path: str) -> Optional[str]:
    """Why the image at `path` cannot be decoded, from its header (None: it can)."""
    try:
        with open(path, "rb") as f:
            probe_image(f.read())
    except OSError as e:
        return f"cannot read image {path}: {e.strerror}"
    except DataError as e:
        return f"cannot read image {path}: {e}"
    return None


TopK = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image indices, (n, k) classes, probabilities


def classify(graph: EvaluationGraph, batches: ImageBatches, k: int,
             timings: Dict[str, float], bar: Optional[Progress]) -> TopK:
    """The top-k classes of this rank's images (its share of the batches); adds to the phase
    timings. Only k classes per image are kept: a folder of 100,000 images is no burden."""
    indices, classes, probabilities = [], [], []
    timings["preprocess"] = timings["forward"] = 0.0
    batch_start = time.perf_counter()
    for batch in batches.epoch(0):
        batch.copy_to(graph.image, graph.ctx)
        copied = time.perf_counter()
        timings["preprocess"] += copied - batch_start
        graph.forward(graph.probabilities)
        valid = batch.mask[:, 0] > 0
        scores = graph.probabilities.d[valid]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        indices.append(batch.indices[valid])
        classes.append(order)
        probabilities.append(np.take_along_axis(scores, order, axis=1))
        batch_start = time.perf_counter()
        timings["forward"] += batch_start - copied
        if bar is not None:
            bar.update()
    return np.concatenate(indices), np.concatenate(classes), np.concatenate(probabilities)


def predictions_of(paths: Sequence[str], errors: Dict[str, str], readable: Sequence[str],
                   parts: Sequence[TopK], names: List[Optional[str]]) -> List[Dict]:
    """One prediction per image named, in order: its top-k, or its error."""
    found: Dict[int, List[Dict]] = {}
    for indices, classes, probabilities in parts:
        for i, row, p in zip(indices.tolist(), classes, probabilities):
            found[i] = [{"class": int(c), "name": names[c], "probability": float(q)}
                        for c, q in zip(row, p)]
    position = {path: i for i, path in enumerate(readable)}
    return [{"image": path, "error": errors[path]} if path in errors
            else {"image": path, "top_k": found[position[path]]} for path in paths]


def predictions_csv(predictions: Sequence[Dict], k: int) -> str:
    """A row per image: its top-k (class, name, probability) and its error, if any."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image"] + [f"{field}_{r}" for r in range(1, k + 1)
                                 for field in ("class", "name", "probability")] + ["error"])
    for prediction in predictions:
        guesses = prediction.get("top_k", [])
        cells = [cell for g in guesses for cell in (g["class"], g["name"] or "",
                                                     f"{g['probability']:.6g}")]
        writer.writerow([prediction["image"]] + cells + [""] * (3 * k - len(cells))
                        + [prediction.get("error", "")])
    return out.getvalue()


def is_predictions_file(path: str) -> bool:
    """An earlier --output of this script (its CSV header, or its JSON's first key)."""
    try:
        with open(path, encoding="utf-8") as f:
            start = f.read(64)
    except (OSError, UnicodeDecodeError):
        return False
    return start.startswith(("image,class_1,", '{"weights": '))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args)
    comm = rt.comm
    cli.check_network_runtime(args.runtime, rt.backend)
    calibration = cli.calibration_source_of(args)
    if args.output is not None:
        if os.path.splitext(args.output)[1].lower() not in PREDICTION_FORMATS:
            raise UsageError(f"--output {args.output}: name a .csv or a .json file")
        replacing = check_output_file(args.output, "--output", "a predictions file",
                                      is_predictions_file, "predictions.csv")
        if replacing:
            rt.log(replacing)
    paths = image_paths(args.inputs)
    errors = {path: why for path, why in ((p, unreadable(p)) for p in paths) if why}
    if errors and args.output is None:  # (on stdout, a bad image ends the run, as it did)
        raise DataError(next(iter(errors.values())))
    readable = [p for p in paths if p not in errors]
    if not readable:
        raise DataError(f"none of the {len(paths)} images can be read; first: "
                        f"{next(iter(errors.values()))}")
    timings: Dict[str, float] = {}  # seconds of each phase, for the benchmark
    loading_start = time.perf_counter()
    nnp = cli.nnp_model_of(args)  # None: a weight file
    weights = None if nnp else open_weights(args.weights, args.arch, not args.no_download, comm)
    num_classes = nnp.num_classes if nnp else weights.classes(args.num_classes)
    names = class_names(args.labels, num_classes)
    files = FileList.from_files(readable)
    batch_size = min(args.batch_size, -(-len(readable) // comm.size))
    pipeline = cli.input_pipeline(args, rt, args.crop_pct).formatted(norm=args.norm_config)
    if nnp:
        batches, graph = network_for_nnp(nnp, files, batch_size, rt, pipeline,
                                         flip=args.tta == "flip")
    else:
        batches, graph = network_for_weights(
            weights, args.arch, num_classes, files, batch_size, rt, pipeline,
            engine=args.runtime, flip=args.tta == "flip", calibration=calibration)
    timings["weights"] = time.perf_counter() - loading_start
    bar = Progress(comm, len(batches), "infer", images_per_iteration=batches.plan.global_batch) \
        if args.output is not None else None
    with batches:
        mine = classify(graph, batches, min(args.top_k, num_classes), timings, bar)
    if bar is not None:
        bar.close()
    parts = comm.all_gather_object(mine)
    if not comm.is_main:
        return 0
    predictions = predictions_of(paths, errors, readable, parts, names)
    if args.output is not None:
        if args.output.lower().endswith(".json"):
            text = json.dumps({"weights": args.weights, "arch": args.arch,
                               "predictions": predictions}) + "\n"
        else:
            text = predictions_csv(predictions, min(args.top_k, num_classes))
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}: {len(readable)} images classified"
              + (f", {len(errors)} unreadable (their rows say why)" if errors else ""))
        return 0
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
