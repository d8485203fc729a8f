"""Top-1 and top-5 error of a weight file over a validation set, every image exactly once.

Runs on the CPU or a GPU, alone or under `mpirun -n N` (each rank evaluates its share), for
any number of images. The layout and input channels are read from the weight file.
Prints a one-line summary (or JSON with --json, with the ten worst classes), then writes
`0 <value>` as the Validation-loss / Validation-error (top-1) / Validation-top5-error series in
--monitor-path, fresh for each run as the official script does (the folder is checked before
any work), with per_class.csv and, up to 100 classes, confusion.png. A
weight file for another network, a bad list or an undecodable image is one line on stderr,
status 2.

    python validation.py rn50.h5 -a resnet50 -V /data/imagenet/val --val-list val_label
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional, Sequence

import nnabla as nn

from models import build_network
from utils import cli
from utils.atomic import check_can_create
from utils.batch_grid import VAL_BATCH_PNG, first_batch_grid, save_png
from utils.bn_stats import recompute_batch_norm, training_feeds
from utils.data import ImageBatches
from utils.download import resolve_weights
from utils.errors import UsageError
from utils.evaluation import EvaluationResult, evaluate, network_for_weights, record
from utils.file_list import FileList, read_file_list
from utils.imagenet import class_names
from utils.per_class import ClassCounts, plot_confusion, write_per_class
from utils.runtime import run, setup_runtime
from utils.watchdog import start_watchdog
from utils.weights import open_weight_file


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_weight_file_flags(p, "number of classes (default: the weight file's)")
    cli.add_hang_timeout_flag(cli.add_runtime_flags(p))
    cli.add_spatial_size_flag(p)
    cli.add_crop_pct_flag(p)
    cli.add_norm_flag(p)
    cli.add_val_dataset_flags(p)
    cli.add_train_dataset_flags(p)
    cli.add_dali_flags(p)
    p.add_argument("-b", "--batch-size", type=cli.positive_int, default=100,
                   help="images per batch and rank; any size works (default: %(default)s)")
    p.add_argument("-M", "--monitor-path", default="tmp.val",
                   help="folder of the series files (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object instead of the summary line")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-E", "--disable-dataset-size-error", action="store_true",
                   help="accepted for compatibility with the official script; does nothing, "
                        "since any dataset size is evaluated exactly")
    p.add_argument("--recompute-bn", type=cli.non_negative_int, default=0, metavar="N",
                   help="first re-estimate the batch-norm statistics as the average over N "
                        "training batches per rank (needs -T and --train-list; the weight "
                        "file is not changed) (default: 0, off)")
    p.add_argument("--labels", default=None,
                   help="'<id>,<name>' csv of class names (label_words.csv of "
                        "create_input_files.py), checked against the weights' classes; the "
                        "JSON output names them (default: the ImageNet names for 1000 "
                        "classes)")
    cli.add_ignored_channel_last_flag(p)
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return cli.parse_weight_file_args(build_parser(), argv)


def read_recompute_list(args: argparse.Namespace, num_classes: int) -> FileList:
    """The training images of --recompute-bn, read before any work; a missing list names the
    flag that needs it (the default list, train_label, is often not there)."""
    if not os.path.exists(args.train_list):
        raise UsageError(f"--recompute-bn needs the training images: list file "
                         f"{args.train_list} (--train-list) not found")
    return read_file_list(args.train_list, args.train_dir, num_classes)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args)
    comm = rt.comm
    start_watchdog(args.hang_timeout, comm)  # set-up, then every batch
    if comm.is_main:  # fail now, not after the evaluation
        check_can_create(args.monitor_path, "monitor path (-M)")
    weights = open_weight_file(resolve_weights(args.weights, not args.no_download, comm),
                               args.arch)
    num_classes = weights.classes(args.num_classes)
    names = class_names(args.labels, num_classes)
    files = read_file_list(cli.val_list_of(args), args.val_dir, num_classes)
    train_files = read_recompute_list(args, num_classes) if args.recompute_bn else None
    pipeline = cli.pipeline_options(args, rt)
    # A batch beyond a rank's share only pads: -b 20000 over 4 images took a minute and 3 GB.
    batch_size = min(args.batch_size, -(-len(files) // comm.size))
    batches, graph = network_for_weights(weights, args.arch, num_classes, files,
                                         batch_size, rt, args.norm_config, pipeline)
    if args.recompute_bn:
        train_batches = ImageBatches(
            train_files, args.batch_size,
            training=True, channels=batches.channels, channel_last=batches.channel_last,
            norm=args.norm_config, **pipeline)
        x = nn.Variable(train_batches.image_shape)
        train_logits, _ = build_network(x, num_classes, args.arch, test=False,
                                        channel_last=batches.channel_last)
        with train_batches:
            used = recompute_batch_norm(
                train_logits, training_feeds(train_batches, 0, args.recompute_bn, x), comm)
        rt.log(f"batch-norm statistics recomputed from {used} training batches per rank")
    height, width = batches.spatial_size
    rt.log(f"{len(files)} images from {files.source}, {comm.size} rank(s) x batch "
           f"{batch_size}, {height}x{width}, norm {args.norm_config}")
    counts = ClassCounts.empty(num_classes)
    with batches:
        # the first batch as the network receives it, written with the results
        first = first_batch_grid(batches, names) if comm.is_main else None
        result = evaluate(graph, batches, comm, progress=not args.no_progress,
                          per_class=counts)
    if comm.is_main:  # the result first: a folder that fails now loses nothing
        report(args, result, counts, names)
        record(result, args.monitor_path, 0, fresh=True)
        write_per_class(counts, names, args.monitor_path)
        plot_confusion(counts, names, args.monitor_path)
        save_png(first.image, os.path.join(args.monitor_path, VAL_BATCH_PNG))
    return 0


def report(args: argparse.Namespace, result: EvaluationResult, counts: ClassCounts,
           names: List[Optional[str]]) -> None:
    """The summary line, or with --json the result, the class names and the worst classes."""
    if args.json:
        print(json.dumps({"weights": args.weights, "arch": args.arch, **result.as_dict(),
                          "num_classes": len(names), "labels": args.labels,
                          "class_names": names, "worst_classes": counts.worst(names)}),
              flush=True)
    else:
        print(f"{args.arch} {args.weights}: {result.summary()}", flush=True)


if __name__ == "__main__":
    sys.exit(run(main))
