r"""Train an ImageNet classifier: one process, or data-parallel under `mpirun -n N`.

Every epoch ends with a checkpoint in `<monitor path>/checkpoints`; running the same command
again with the same -m (or with `--resume`) continues exactly where the run stopped, from
the newest intact checkpoint (damaged ones are named and skipped); also on another number
of ranks, mid-epoch too, if the global batch (-b x ranks x --accumulate-steps) is kept (else
refused, giving the -b that keeps it). Without -m each run writes a new
tmp.monitor.<YYYYmmddHHMMSS> folder (as the official example), so the same command again
starts over: resume such a run with -m <its folder>, as its stop message says. SIGTERM,
SIGINT and SIGUSR1 (on any rank) make the run finish its
iteration, checkpoint and exit with status 75. A non-finite loss
stops the run before anything non-finite is saved; with --dynamic-loss-scaling, steps whose
gradients overflow are skipped and counted instead. Errors (bad inputs, an unwritable or
full monitor path, divergence) are one line on stderr and status 2.

While it trains, rank 0 writes TensorBoard event files into `<monitor path>/tensorboard`
(the README's "Watching a run" opens them; --no-tensorboard: none), the curves within the epoch
as `Train-loss-iteration` / `Train-error-iteration` series, and `train_batch.png`, the first
batch as the network receives it.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

from utils.cli import flags as cli
from utils.cli import help_text
from utils.process.run import run
from utils.process.runtime import setup_runtime
from utils.process.stop_signals import StopRequest
from utils.process.watchdog import start_watchdog
from utils.recipe.config import load_config
from utils.train.run import start_run
from utils.train.spec import RunSpec, run_folder
from utils.weights.published import did_you_mean, published

EXAMPLES = (
    "python train.py -a resnet18 -T /data/imagenet/train -V /data/imagenet/val -m runs/rn18",
    "mpirun -n 4 python train.py -a resnet50 -b 192 -t half --channel-last -C cfg/cos90.yaml "
    "-T /data/imagenet/train -V /data/imagenet/val -m runs/rn50",
)
WRITES = ("into -m: param_NNN.h5 (param_ema_NNN.h5 with --ema-decay), checkpoints/, "
          "Arguments.txt, cfg/<recipe>.yaml, the Train-* and Validation-* *.series.txt, "
          "loss.png, error.png, top5-error.png, loss-iteration.png, error-iteration.png, "
          "train_batch.png, tensorboard/")


def build_parser() -> argparse.ArgumentParser:
    p = help_text.script_parser(__doc__, EXAMPLES, WRITES)
    arch = cli.add_arch_flags(p)
    cli.add_spatial_size_flag(arch)
    cli.add_channel_last_flag(arch)
    add_training_flags(p)
    add_output_flags(p)
    cli.add_train_dataset_flags(p)
    cli.add_val_dataset_flags(p)
    cli.add_hang_timeout_flag(cli.add_runtime_flags(p))
    cli.add_dali_flags(p)
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    cli.spatial_size_of(args)
    args.val_list = cli.val_list_of(args)
    if args.finetune and not args.model_load_path:
        p.error("--finetune needs --model-load-path")
    if not 0.0 <= args.ema_decay < 1.0:
        p.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.teacher_arch and not args.teacher:
        p.error("--teacher-arch needs --teacher")
    if args.teacher and args.teacher_arch is None:
        known = published(args.teacher)
        if known is None:
            p.error("--teacher is not a published weight file's name (whose name tells its "
                    f"network): give --teacher-arch{did_you_mean(args.teacher)}")
        args.teacher_arch = known.arch
    return args


def add_training_flags(p: argparse.ArgumentParser) -> None:
    g = help_text.add_group(p, "training", "The global batch is -b x ranks x "
                                           "--accumulate-steps.")
    cli.add_batch_size_flag(g, 128)
    g.add_argument("--accumulate-steps", type=cli.positive_int, default=1, metavar="N",
                   help="sum the gradients of N batches before one all-reduce and one update: "
                        "the step is that of a global batch of b x ranks x N, the learning "
                        "rate follows it (default: %(default)s)")
    g.add_argument("-e", "--epochs", type=cli.positive_int, default=None, metavar="N",
                   help="number of epochs (overrides the config's epochs)")
    cli.add_train_config_flag(g)
    g.add_argument("--model-load-path", default=None, metavar="FILE",
                   help="weight file to start from (all parameters, or all but the "
                        "classifier with --finetune); a published file's name is downloaded "
                        "once into the cache")
    cli.add_no_download_flag(g)
    g.add_argument("--finetune", action="store_true",
                   help="replace the classifier of --model-load-path by a new "
                        "--num-classes one and train the whole network")
    g.add_argument("--dynamic-loss-scaling", action="store_true",
                   help="start at the config's loss scale (in any precision), halve it and "
                        "skip the step when a gradient overflows, double it after 2000 good "
                        "steps; skipped steps are counted in the epoch's log line")
    cli.add_recompute_bn_flag(g)
    g.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                   help="keep an exponential moving average of the trainable weights "
                        "(e.g. 0.9998 per iteration), validate it too (Validation-EMA-* "
                        "series) and save it as param_ema_NNN.h5 (default: 0, off)")
    g.add_argument("--teacher", default=None, metavar="FILE",
                   help="distil from this weight file (a published file's name is downloaded "
                        "as for --model-load-path): it runs in test mode on each training "
                        "batch, and the loss is (1 - α) · loss + α · T² · KL(teacher || "
                        "student) at temperature T (recipe keys distillation_alpha and "
                        "distillation_temperature); it is not trained nor saved")
    g.add_argument("--teacher-arch", type=cli.architecture_name, default=None, metavar="ARCH",
                   help="the teacher's network (default: the one a published file's name "
                        "tells)")
    g.add_argument("--seed", type=cli.seed, default=0, metavar="N",
                   help="seed of initialisation, shuffling, augmentation and mixup "
                        "(default: %(default)s)")


def add_output_flags(p: argparse.ArgumentParser) -> None:
    g = help_text.add_group(p, "outputs and resuming")
    g.add_argument("-m", "--monitor-path", default=None, metavar="DIR",
                   help="output folder; running the same command with the same -m resumes "
                        "(default: a new tmp.monitor.<YYYYmmddHHMMSS> for each run, so the "
                        "same command without -m starts over: resume it with -m <that "
                        "folder>)" + help_text.elsewhere("-m", "the monitor path (output "
                                                               "folder)"))
    g.add_argument("-v", "--val-interval", type=cli.interval_or_off, default=10, metavar="N",
                   help="validate every N epochs and at the end; <= 0 disables validation "
                        "(default: %(default)s)")
    g.add_argument("-s", "--model-save-interval", type=cli.positive_int, default=10,
                   metavar="N",
                   help="write param_NNN.h5 every N epochs and at the end "
                        "(default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="require a checkpoint in --monitor-path and continue from it "
                        "(running again into a monitor path with checkpoints also resumes; "
                        "a run started without -m: --resume -m <its tmp.monitor folder>)")
    g.add_argument("--keep-checkpoints", type=cli.positive_int, default=3, metavar="N",
                   help="how many of the newest checkpoints to keep (default: %(default)s)")
    g.add_argument("--no-tensorboard", action="store_true",
                   help="write no TensorBoard event files (default: into "
                        "<monitor path>/tensorboard as the run goes)")
    g.add_argument("--log-interval", type=cli.non_negative_int, default=0, metavar="N",
                   help="a point of the curves within the epoch (TensorBoard scalars and the "
                        "Train-*-iteration series) every N iterations, or updates with "
                        "--accumulate-steps (default: 0, about 100 points per epoch)")
    cli.add_labels_flag(g)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    runtime = setup_runtime(args)
    start_watchdog(args.hang_timeout, runtime.comm)  # set-up, then every iteration and batch
    stop = StopRequest()  # from now on a stop signal is acted on after the next iteration
    spec = RunSpec.from_args(args, load_config(args.train_config, args.epochs),
                             cli.input_pipeline(args, runtime, None),
                             run_folder(args.monitor_path, runtime.comm))
    return start_run(spec, runtime, stop).train()


if __name__ == "__main__":
    sys.exit(run(main))
