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
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, List, Optional, Tuple

import utils.process.startup  # noqa: F401  (first: silences NNabla's import-time INFO line)

import nnabla as nn
import numpy as np

from models import get_architecture
from utils.cli import flags as cli
from utils.cli import help_text
from utils.data.batch_plan import BatchPlan
from utils.data.pipelines import ImageBatches
from utils.eval.evaluation import EvaluationGraph, build_evaluation_graph, evaluate
from utils.eval.per_class import CONFUSION_LIMIT, ClassCounts
from utils.labels.file_list import read_file_list, read_id_csv
from utils.labels.imagenet import class_names
from utils.outputs.batch_grid import batch_grid
from utils.outputs.monitor import VALIDATION, VALIDATION_EMA, TrainingMonitors
from utils.outputs.plots import plot_monitor
from utils.outputs.recorder import (
    EpochResult,
    IterationPoint,
    RunRecorder,
    default_interval,
    validation_tags,
)
from utils.outputs.tensorboard import open_tensorboard
from utils.process.atomic import (
    atomic_write_text,
    check_room,
    check_writable,
    lock_folder,
    remove_stale_temporaries,
)
from utils.process.comm import Communicator
from utils.process.errors import DataError, UsageError
from utils.process.pause_point import pause_at
from utils.process.progress import Progress, format_duration, run_eta
from utils.process.run import run
from utils.process.runtime import Runtime, setup_runtime
from utils.process.stop_signals import StopRequest
from utils.process.watchdog import heartbeat, start_watchdog
from utils.recipe.config import TrainConfig, load_config, recipe_warnings, save_config
from utils.recipe.schedules import LearningRateSchedule, build_schedule
from utils.recipe.solvers import recipe_solver
from utils.train.bn_stats import recompute_batch_norm, training_feeds
from utils.train.checkpoint import Checkpoint, CheckpointError, checkpoint_dir, latest_checkpoint
from utils.train.ema import WeightEma
from utils.train.spec import RunSpec
from utils.train.training import (
    TrainingNetwork,
    TrainingState,
    accumulate_gradients,
    apply_update,
    batch_share,
    build_training_graph,
    diverged,
    iteration_seed,
    update_group,
    updates_done,
    updates_per_epoch,
)
from utils.weights.files import (
    WeightFileError,
    network_parameters,
    open_weights,
    write_parameters,
)

PREEMPTED_EXIT_STATUS = 75  # EX_TEMPFAIL: stopped on request, resumable
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cfg", "cos90.yaml")


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
    cli.add_train_config_flag(g, DEFAULT_CONFIG)
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
    g.add_argument("-v", "--val-interval", type=int, default=10, metavar="N",
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


@dataclass
class Validator:
    """The evaluation network (sharing the training parameters) and what it validates on."""

    graph: EvaluationGraph
    data: ImageBatches
    bn_data: Optional[ImageBatches]  # training batches to recompute batch-norm statistics

    def set_resolution(self, size: int) -> None:
        """Recompute the statistics from training batches at the size trained at."""
        if self.bn_data is not None:
            self.bn_data = self.bn_data.resized(size)


@dataclass
class Training:
    """Everything the epoch functions work with, built once by main()."""

    spec: RunSpec
    rt: Runtime
    monitor_path: str
    checkpoints: str  # the checkpoint folder
    schedule: LearningRateSchedule
    state: TrainingState
    validator: Optional[Validator]
    stop: StopRequest
    recorder: RunRecorder
    interval: int  # updates between points of the curves within the epoch
    names: List[Optional[str]]  # class names (None: the id)
    resume: str  # how to resume this run, for the stop messages (see how_to_resume)
    epoch_walls: List[float] = field(default_factory=list)  # seconds of each epoch, end to end
    lr: float = 0.0  # per example, of the latest update
    clock: Tuple[float, int] = (0.0, 0)  # (time, step) since which images/s is measured
    batch_recorded: bool = False  # train_batch.png of this session written

    @property
    def comm(self) -> Communicator:
        return self.rt.comm

    def step(self, epoch: int, iteration: int = 0) -> int:
        """Updates done over the whole run before batch `iteration` of `epoch`: the curves'
        x axis."""
        return updates_done(epoch, iteration, self.state.data.iterations_per_epoch,
                            self.spec.accumulate_steps)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args)
    start_watchdog(args.hang_timeout, rt.comm)  # set-up, then every iteration and batch
    stop = StopRequest()  # from now on a stop signal is acted on after the next iteration
    config = load_config(args.train_config, args.epochs)
    spec = RunSpec.from_args(args, config, rt.comm.size)
    check_options(spec, rt)
    monitor_path = rt.comm.broadcast_object(
        args.monitor_path or time.strftime("tmp.monitor.%Y%m%d%H%M%S"))
    checkpoints = checkpoint_dir(monitor_path)
    _lock = claim_monitor_path(monitor_path, checkpoints, rt)  # held until main returns
    train_data, val_data, bn_data = build_datasets(args, config, rt)

    nn.seed(args.seed)  # the training graph creates the parameters; evaluation shares them
    graph = build_training_graph(TrainingNetwork(
        args.arch, args.num_classes, args.channel_last, config, rt.comm.rank, rt.float_ctx),
        train_data.image_shape)
    validator = build_validator(args, rt, val_data, bn_data)
    checkpoint = find_checkpoint(checkpoints, args.resume, rt)
    if args.model_load_path and checkpoint is None:  # (a checkpoint holds every parameter)
        load_initial_weights(args, rt)
    rt.comm.broadcast_parameters(nn.get_parameters(grad_only=False))

    ema = WeightEma(nn.get_parameters(), args.ema_decay, rt.float_ctx) if args.ema_decay \
        else None
    solver = recipe_solver(spec.config, spec.type_config, spec.dynamic_loss_scaling,
                           spec.split.global_batch)
    state = TrainingState(spec, rt.comm, solver, train_data, graph, ema)
    if rt.comm.is_main:
        check_room_for_outputs(monitor_path)
    if checkpoint is not None:
        changes = state.resume(checkpoint)
        rt.log(f"resuming from {checkpoint.path} (epoch {checkpoint.meta['epoch']}, "
               f"iteration {checkpoint.meta['iteration']})")
        for change in changes:
            rt.log(change)
    if rt.comm.is_main:
        write_run_description(monitor_path, args, config)
    start_epoch, start_iteration = state.position
    updates = updates_per_epoch(train_data.iterations_per_epoch, spec.accumulate_steps)
    start_step = updates_done(start_epoch, start_iteration, train_data.iterations_per_epoch,
                              spec.accumulate_steps)
    rt.log(describe_batch(spec, train_data.plan))
    recorder = RunRecorder(
        monitor_path, rt.comm.is_main,
        TrainingMonitors(monitor_path, rt.comm.is_main, start_epoch, start_step),
        open_tensorboard(monitor_path, rt.comm.is_main and not args.no_tensorboard,
                         start_step, resumed=checkpoint is not None), rt.log)
    training = Training(
        spec, rt, monitor_path, checkpoints, build_schedule(config.lr_scheduler, updates),
        state, validator, stop, recorder, args.log_interval or default_interval(updates),
        training_class_names(args), how_to_resume(args.monitor_path, monitor_path))
    try:
        recorder.session(start_step, describe_arguments(args), vars(args), config.to_dict(),
                         metric_tags(validator is not None, state.ema is not None))
        return train_epochs(training, start_epoch)
    finally:
        recorder.close()


def train_epochs(training: Training, start_epoch: int) -> int:
    """Train from `start_epoch` to the end; the exit status."""
    config, rt, stop = training.spec.config, training.rt, training.stop
    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        set_training_resolution(training, epoch)
        if not train_one_epoch(training, epoch):
            return PREEMPTED_EXIT_STATUS
        path = end_of_epoch(training, epoch, started)
        if epoch + 1 < config.epochs and stop.agreed(rt.comm):
            rt.log(f"stopped by {stop.describe()} after epoch {epoch}; saved {path}; "
                   f"{training.resume}")
            return PREEMPTED_EXIT_STATUS
    training.recorder.finished(training.step(config.epochs))
    rt.log(f"finished {config.epochs} epochs; results in {training.monitor_path}")
    return 0


def how_to_resume(given: Optional[str], monitor_path: str) -> str:
    """The end of a stop message: how to continue the run. Without -m every run writes a new
    tmp.monitor.<YYYYmmddHHMMSS> folder, so the same command again would start over."""
    if given is not None:
        return "run the same command again to resume"
    return (f"to resume, run the same command with -m {monitor_path} added (or --resume -m "
            f"{monitor_path}): without -m it starts a new run in a new folder")


# --------------------------------------------------------------------------- set-up


def check_options(spec: RunSpec, rt: Runtime) -> None:
    """Refuse combinations that cannot run, before any work; warn of what the recipe will
    not do in this run."""
    config = spec.config
    if spec.channel_last and rt.backend == "cpu":
        raise UsageError("--channel-last needs a GPU: NNabla's CPU backend runs NCHW only")
    if (config.mixup > 0 or config.cutmix > 0) and spec.batch_size % 2:
        raise UsageError(f"{config.source}: mixup and CutMix pair sample i with sample B-1-i "
                         "and need "
                         f"an even --batch-size, got {spec.batch_size}")
    for warning in recipe_warnings(config) if rt.comm.is_main else ():
        print(warning, file=sys.stderr)


def claim_monitor_path(monitor_path: str, checkpoints: str, rt: Runtime) -> Optional[IO[str]]:
    """Rank 0: fail now if the monitor path cannot be written, not after the first epoch;
    lock it for the run (the returned handle); clear what a kill -9 left."""
    if not rt.comm.is_main:
        return None
    check_writable(monitor_path, "monitor path")
    lock = lock_folder(monitor_path, "monitor path")
    for folder in (monitor_path, checkpoints):
        for path in remove_stale_temporaries(folder):
            rt.log(f"removed {path}, left by an interrupted write")
    return lock


def build_validator(args: argparse.Namespace, rt: Runtime, val_data: Optional[ImageBatches],
                    bn_data: Optional[ImageBatches]) -> Optional[Validator]:
    """The evaluation network on the training parameters (None without validation data), in
    the training precision as validation.py's, so the two give the same numbers (the loss and
    errors are in float32 in both)."""
    if val_data is None:
        return None
    return Validator(build_evaluation_graph(
        args.arch, val_data.image_shape, args.num_classes, args.channel_last, rt.ctx),
        val_data, bn_data)


def build_datasets(args: argparse.Namespace, config: TrainConfig, rt: Runtime
                   ) -> Tuple[ImageBatches, Optional[ImageBatches], Optional[ImageBatches]]:
    """This rank's shard of the training split (augmented as the config says); of the
    validation split (None with -v 0); and the training batches that re-estimate batch-norm
    statistics (--recompute-bn)."""
    pipeline = cli.input_pipeline(args, rt, None).formatted(
        channel_last=args.channel_last, channels=4 if args.type_config == "half" else 3)
    train_files = read_file_list(args.train_list, args.train_dir, args.num_classes,
                                 flag="--train-list")
    train = pipeline.batches(train_files, args.batch_size, True, args.seed, config.augmentation)
    if args.val_interval <= 0:
        return train, None, None
    val_files = read_file_list(args.val_list, args.val_dir, args.num_classes,
                               flag="--val-list")
    val = pipeline.batches(val_files, args.batch_size, False)
    bn = None
    if args.recompute_bn:
        bn = pipeline.batches(train_files, args.batch_size, True, args.seed + 1,
                              config.augmentation)
    return train, val, bn


def describe_batch(spec: RunSpec, plan: BatchPlan) -> str:
    """The start-up line: batch, ranks, accumulation, the images per update."""
    steps = spec.accumulate_steps
    return (f"batch {plan.batch_size} per rank x {plan.shard.num_ranks} rank(s)"
            + (f" x {steps} accumulated batches" if steps > 1 else "")
            + f" = {plan.global_batch * steps} images per update; "
              f"{plan.iterations_per_epoch} iterations per epoch")


def find_checkpoint(checkpoints: str, required: bool, rt: Runtime) -> Optional[Checkpoint]:
    """The newest intact checkpoint of this monitor path (damaged ones are named), if any."""
    checkpoint, skipped = latest_checkpoint(checkpoints)
    for note in skipped:
        rt.log(f"skipping damaged checkpoint: {note}")
    if required and checkpoint is None:
        raise CheckpointError(f"--resume: no intact checkpoint in {checkpoints}")
    # Every rank resumes from what it reads itself: a monitor path on a disk of rank 0's
    # machine alone would start the other ranks over, out of step, until the hang timeout.
    seen = rt.comm.all_gather_object(checkpoint.path if checkpoint else None)
    if len(set(seen)) > 1:
        rank = next(r for r, path in enumerate(seen) if path != seen[0])
        raise CheckpointError(
            f"rank 0 resumes from {seen[0] or 'no checkpoint'} but rank {rank} from "
            f"{seen[rank] or 'none'} in {checkpoints}: the monitor path must be one folder "
            "that every machine of the job sees (a shared file system)")
    return checkpoint


def load_initial_weights(args: argparse.Namespace, rt: Runtime) -> None:
    """--model-load-path: every parameter, or all but the classifier with --finetune."""
    skip = [get_architecture(args.arch).classifier_scope] if args.finetune else []
    weights = open_weights(args.model_load_path, args.arch, not args.no_download, rt.comm)
    try:
        note = weights.load_into(args.arch, skip)
    except WeightFileError as e:
        found = None if args.finetune else weights.num_classes
        if found is not None and found != args.num_classes:  # the classifier: --finetune
            raise WeightFileError(f"{e}; its classifier has {found} classes: add --finetune to "
                                  f"train a new one of --num-classes {args.num_classes}") from None
        raise
    rt.log(f"loaded {args.model_load_path}" + (" (new classifier)" if skip else "")
           + (f"; {note}" if note else ""))


def check_room_for_outputs(monitor_path: str) -> None:
    """Room for the next checkpoint (parameters and momenta) and weight file."""
    param_bytes = 4 * sum(v.size for v in nn.get_parameters(grad_only=False).values())
    check_room(monitor_path, largest_file=2 * param_bytes, total=3 * param_bytes,
               what="monitor path")


def describe_arguments(args: argparse.Namespace) -> str:
    """Sorted key=value lines of the flags (Arguments.txt)."""
    return "".join(f"{k}={v}\n" for k, v in sorted(vars(args).items()))


def write_run_description(path: str, args: argparse.Namespace, config: TrainConfig) -> None:
    """Arguments.txt and the effective config as cfg/<config file name>, where the official
    example writes them."""
    atomic_write_text(os.path.join(path, "Arguments.txt"), describe_arguments(args))
    save_config(config, os.path.join(path, "cfg", os.path.basename(args.train_config)))


def training_class_names(args: argparse.Namespace) -> List[Optional[str]]:
    """--labels (checked), else label_words.csv beside the training list when it names
    --num-classes classes (create_input_files.py writes it there), else ImageNet's names for
    1000 classes, else none."""
    if args.labels is not None:
        return class_names(args.labels, args.num_classes)
    beside = os.path.join(os.path.dirname(os.path.abspath(args.train_list)), "label_words.csv")
    try:
        names = read_id_csv(beside) if os.path.exists(beside) else []
    except DataError:  # (not asked for: the ids will do)
        names = []
    if len(names) == args.num_classes:
        return list(names)
    return class_names(None, args.num_classes)


def metric_tags(validating: bool, ema: bool) -> List[str]:
    """The scalars TensorBoard's HParams view shows against the flags: the validation's."""
    parts = ([VALIDATION] + ([VALIDATION_EMA] if ema else [])) if validating else []
    return [tag for part in parts for tag in validation_tags(part).values()]


# --------------------------------------------------------------------------- the epoch


def set_training_resolution(training: Training, epoch: int) -> None:
    """With progressive resizing, train `epoch` at its resolution (the batches of
    --recompute-bn too); parameters, solver, data position and mixing stream carry over."""
    resizing = training.spec.config.progressive_resizing
    if resizing is None:
        return
    size = resizing.resolution(epoch)
    training.state.set_resolution(size)
    if training.validator is not None:
        training.validator.set_resolution(size)
    training.rt.log(f"epoch {epoch}: training at {size}x{size}")


def train_one_epoch(training: Training, epoch: int) -> bool:
    """Train `epoch` from where the state stands; False if a stop signal ended it early (the
    run is then checkpointed mid-epoch)."""
    state, comm, spec = training.state, training.comm, training.spec
    graph, solver, data, steps = state.graph, state.solver, state.data, spec.accumulate_steps
    global_batch = data.plan.global_batch
    bar = Progress(comm, data.iterations_per_epoch, f"epoch {epoch}",
                   initial=state.position[1], images_per_iteration=global_batch)
    training.clock = (time.time(), training.step(*state.position))  # images/s: no validation
    for batch in data.epoch(epoch):
        first, last, group = update_group(batch.iteration, data.iterations_per_epoch, steps)
        if first:
            lr = training.lr = training.schedule(epoch, batch.iteration // steps)
            update_images = data.plan.images_in(batch.iteration, group)
            solver.zero_grad()
        graph.feed(batch)
        step = training.step(epoch, batch.iteration)
        if not training.batch_recorded:  # the session's first batch
            record_batch(training, batch, step)
            training.batch_recorded = True
        if graph.draws_random:  # (dropout, drop-path; not the ResNets)
            nn.seed(iteration_seed(spec.seed, comm.rank, epoch, batch.iteration))
        loss, wrong = accumulate_gradients(
            graph, solver, batch_share(batch.num_valid, comm.size, update_images))
        updated = True
        if last:  # (a short last group steps as a whole one: padding is left out above)
            updated = apply_update(solver, comm, lr, global_batch * steps)
            if state.ema is not None and updated:
                state.ema.update()
        state.sums.add(loss * batch.num_valid, wrong, batch.num_valid, not updated)
        pause_at(f"epoch {epoch} iteration {batch.iteration}",
                 lambda: training.stop.agreed(comm))
        # One collective per step: did any rank get a stop signal or a non-finite loss, and
        # the batch's sums over all ranks for the curves within the epoch. (Loss scaling
        # cannot fix a non-finite loss: it only scales the gradients.)
        stop_now, bad_loss, *sums = comm.all_reduce_sum(
            [training.stop.requested, not np.isfinite(loss), loss * batch.num_valid, wrong,
             batch.num_valid])
        if bad_loss:
            raise diverged(f"non-finite training loss at epoch {epoch}, iteration "
                           f"{batch.iteration}", training.checkpoints)
        state.window.add(*sums, not updated)
        if last and (step + 1) % training.interval == 0:
            record_iterations(training, step + 1)
        bar.update(loss=loss, error=wrong / max(batch.num_valid, 1), lr=lr)
        heartbeat()
        # A stop takes effect after an update, so no accumulated gradient is lost.
        if stop_now and last and batch.iteration + 1 < data.iterations_per_epoch:
            bar.close()
            state.check_finite(training.checkpoints)
            path = state.save(training.checkpoints, spec.keep_checkpoints)
            training.rt.log(f"stopped by {training.stop.describe()} at epoch {epoch}, "
                            f"iteration {batch.iteration + 1}; saved {path}; {training.resume}")
            return False
    bar.close()  # a stop at the epoch's last iteration ends the epoch first
    return True


def record_batch(training: Training, batch: Any, step: int) -> None:
    """train_batch.png (and its TensorBoard image): rank 0's batch in the graph's inputs as
    the network receives it, with the labels and, under mixup or CutMix, the targets'
    weights."""
    if not training.comm.is_main:
        return
    graph, data = training.state.graph, training.state.data
    weights = graph.mixing.lam.d.copy() if graph.mixing is not None else None
    training.recorder.batch(batch_grid(graph.fed_images(), batch.labels, training.names,
                                       data.image.channel_last, data.image.norm, weights), step)


def record_iterations(training: Training, step: int) -> None:
    """A point of the curves within the epoch after `step` updates: the means of all ranks
    since the point before (kept in the checkpoint across a resume); the images per second
    of this session since then."""
    state, spec = training.state, training.spec
    window, (since, since_step) = state.take_window(), training.clock
    now = time.time()
    images = (step - since_step) * spec.split.global_batch
    dynamic = spec.dynamic_loss_scaling
    training.recorder.iteration(IterationPoint(
        step, window.loss / max(window.seen, 1), window.wrong / max(window.seen, 1),
        training.lr, images / (now - since) if now > since else float("nan"),
        state.solver.loss_scale if dynamic else None, int(window.skipped) if dynamic else None))
    training.clock = (now, step)


def end_of_epoch(training: Training, epoch: int, started: float) -> str:
    """Log the epoch, validate, write the weight files, checkpoint and plot; return the
    checkpoint's path."""
    spec, state, done = training.spec, training.state, epoch + 1
    state.check_finite(training.checkpoints)
    state.average_statistics()  # one model to validate and save, the same on all ranks
    log_epoch(training, epoch, time.time() - started)
    if training.validator is not None and spec.due(done, spec.val_interval):
        validate(training, done)
    if training.comm.is_main and spec.due(done, spec.model_save_interval):
        write_weight_files(training.monitor_path, done, state.ema)
    path = state.save(training.checkpoints, spec.keep_checkpoints)
    if training.comm.is_main:
        plot_monitor(training.monitor_path)
    training.recorder.flush()
    training.epoch_walls.append(time.time() - started)
    if done < spec.config.epochs:
        training.rt.log(f"epoch {epoch}: done in {format_duration(training.epoch_walls[-1])}; "
                        f"{run_eta(training.epoch_walls, spec.config.epochs - done)}")
    return path


def log_epoch(training: Training, epoch: int, seconds: float) -> None:
    """The epoch's training loss and error over all ranks: series, scalars and log line."""
    state = training.state
    sums = state.take_epoch_sums()
    loss_sum, wrong, seen = training.comm.all_reduce_sum([sums.loss, sums.wrong, sums.seen])
    dynamic = training.spec.dynamic_loss_scaling
    training.recorder.epoch(EpochResult(
        epoch, training.step(epoch + 1), loss_sum / seen, wrong / seen, seconds,
        state.data.iterations_per_epoch, training.lr,
        state.solver.loss_scale if dynamic else None, int(sums.skipped) if dynamic else None))


def validate(training: Training, done: int) -> None:
    """Validate after `done` epochs (re-estimating the batch-norm statistics first with
    --recompute-bn), and the EMA weights too with --ema-decay."""
    validator, comm, spec = training.validator, training.comm, training.spec
    graph = training.state.graph
    if validator.bn_data is not None:
        if graph.mixing is not None:
            graph.mixing.unmix()  # statistics of the plain images
        nn.seed(iteration_seed(spec.seed, comm.rank, done, -1))
        feeds = training_feeds(validator.bn_data, done, spec.recompute_bn, graph.image)
        recompute_batch_norm(graph.logits, feeds, comm)
    # The confusion matrix goes to TensorBoard, up to 100 classes (its counts are summed
    # over ranks: every rank decides alike).
    counts = ClassCounts.empty(spec.num_classes) if (
        spec.tensorboard and spec.num_classes <= CONFUSION_LIMIT) else None
    result = evaluate(validator.graph, validator.data, comm, description=f"validation {done}",
                      observers=[counts] if counts is not None else ())
    step = training.step(done)
    training.recorder.validation(result, done, step, counts=counts, names=training.names)
    if training.state.ema is not None:
        with training.state.ema.swapped_in():
            result = evaluate(validator.graph, validator.data, comm, description=f"EMA {done}")
        training.recorder.validation(result, done, step, part=VALIDATION_EMA)


def write_weight_files(monitor_path: str, done: int, ema: Optional[WeightEma]) -> None:
    """param_NNN.h5, and param_ema_NNN.h5 with the EMA weights."""
    write_parameters(os.path.join(monitor_path, f"param_{done:03d}.h5"), network_parameters())
    if ema is not None:
        with ema.swapped_in():
            write_parameters(os.path.join(monitor_path, f"param_ema_{done:03d}.h5"),
                             network_parameters())


if __name__ == "__main__":
    sys.exit(run(main))
