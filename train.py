r"""Train an ImageNet classifier: one process, or data-parallel under `mpirun -n N`.

    mpirun -n 4 python train.py -a resnet50 -b 192 -t half --channel-last \
        -C cfg/cos90.yaml -T <train dir> -V <val dir>

Every epoch ends with a checkpoint in `<monitor path>/checkpoints`; running the same command
again (or with `--resume`) continues exactly where the run stopped, from the newest intact
checkpoint (damaged ones are named and skipped). SIGTERM, SIGINT and SIGUSR1 (on any rank)
make the run finish its iteration, checkpoint and exit with status 75. A non-finite loss
stops the run before anything non-finite is saved; with --dynamic-loss-scaling, steps whose
gradients overflow are skipped and counted instead. Errors (bad inputs, an unwritable or
full monitor path, divergence) are one line on stderr and status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional

import nnabla as nn
import numpy as np

from models import build_network, get_architecture
from utils import cli
from utils.atomic import (
    atomic_write_text,
    check_room,
    check_writable,
    lock_folder,
    remove_stale_temporaries,
)
from utils.bn_stats import recompute_batch_norm, training_feeds
from utils.checkpoint import (
    CheckpointError,
    checkpoint_dir,
    checkpoint_name,
    identity_mismatch,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)
from utils.comm import Communicator
from utils.config import TrainConfig, load_config, save_config
from utils.data import ImageBatches
from utils.ema import WeightEma
from utils.errors import TrainingDiverged, UsageError
from utils.evaluation import VALIDATION_SERIES, build_evaluation_graph, evaluate, record
from utils.file_list import read_file_list
from utils.losses import classification_loss, top_n_error_count
from utils.lr_schedules import build_schedule, solver_learning_rate
from utils.mixup import MIXUP_SEED, Mixup
from utils.monitor import MonitorSeries, MonitorTimer, series_path, truncate_series
from utils.optim import MomentumSolver
from utils.plots import plot_monitor
from utils.progress import Progress, format_duration, run_eta
from utils.runtime import StopRequest, run, setup_runtime
from utils.watchdog import heartbeat, start_watchdog
from utils.weights import load_into_network, network_parameters, write_parameters

PREEMPTED_EXIT_STATUS = 75  # EX_TEMPFAIL: stopped on request, resumable
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cfg", "cos90.yaml")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_hang_timeout_flag(cli.add_runtime_flags(p))
    cli.add_arch_flags(p)
    cli.add_spatial_size_flag(p)
    g = p.add_argument_group("training")
    g.add_argument("-b", "--batch-size", type=int, default=128,
                   help="batch size per process; the global batch is this times the ranks "
                        "(default: %(default)s)")
    g.add_argument("-e", "--epochs", type=int, default=None,
                   help="number of epochs (overrides the config's epochs)")
    g.add_argument("-C", "--train-config", default=DEFAULT_CONFIG,
                   help="recipe YAML, see cfg/ (default: cfg/cos90.yaml of this repository)")
    g.add_argument("--channel-last", action="store_true",
                   help="NHWC layout (GPU only: NNabla's CPU backend runs NCHW)")
    g.add_argument("-m", "--monitor-path", default=None,
                   help="output directory; default tmp.monitor.<YYYYmmddHHMMSS>")
    g.add_argument("-v", "--val-interval", type=int, default=10,
                   help="validate every N epochs and at the end; <= 0 disables validation "
                        "(default: %(default)s)")
    g.add_argument("-s", "--model-save-interval", type=cli.positive_int, default=10,
                   help="write param_NNN.h5 every N epochs and at the end "
                        "(default: %(default)s)")
    g.add_argument("--model-load-path", default=None,
                   help="weight file to start from (all parameters, or all but the "
                        "classifier with --finetune)")
    g.add_argument("--finetune", action="store_true",
                   help="replace the classifier of --model-load-path by a new "
                        "--num-classes one and train the whole network")
    g.add_argument("--resume", action="store_true",
                   help="require a checkpoint in --monitor-path and continue from it "
                        "(re-running into a monitor path with checkpoints also resumes)")
    g.add_argument("--keep-checkpoints", type=cli.positive_int, default=3,
                   help="how many of the newest checkpoints to keep (default: %(default)s)")
    g.add_argument("--dynamic-loss-scaling", action="store_true",
                   help="start at the config's loss scale (in any precision), halve it and "
                        "skip the step when a gradient overflows, double it after 2000 good "
                        "steps; skipped steps are counted in the epoch's log line")
    g.add_argument("--recompute-bn", type=cli.non_negative_int, default=0, metavar="N",
                   help="before each validation, re-estimate the batch-norm statistics as the "
                        "average over N training batches per rank (0: off; the running "
                        "averages lag behind the weights in short runs) (default: 0)")
    g.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                   help="keep an exponential moving average of the trainable weights "
                        "(e.g. 0.9998 per iteration), validate it too (Validation-EMA-* "
                        "series) and save it as param_ema_NNN.h5 (default: 0, off)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of initialisation, shuffling, augmentation and mixup "
                        "(default: %(default)s)")
    cli.add_train_dataset_flags(p)
    cli.add_val_dataset_flags(p)
    cli.add_dali_flags(p)
    args = p.parse_args(argv)
    cli.spatial_size_of(args)
    args.val_list = cli.val_list_of(args)
    if args.finetune and not args.model_load_path:
        p.error("--finetune needs --model-load-path")
    if not 0.0 <= args.ema_decay < 1.0:
        p.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.batch_size < 1:
        p.error("--batch-size must be positive")
    return args


def run_identity(args: argparse.Namespace, config: TrainConfig, num_ranks: int) -> Dict[str, Any]:
    """What must not change when a run is resumed."""
    return {
        "arch": args.arch,
        "num_classes": args.num_classes,
        "type_config": args.type_config,
        "channel_last": args.channel_last,
        "spatial_size": list(args.spatial_size),
        "batch_size": args.batch_size,
        "num_ranks": num_ranks,
        "config": config.to_dict(),
        "model_load_path": args.model_load_path,
        "finetune": args.finetune,
        "seed": args.seed,
        "ema_decay": args.ema_decay,
    }


def iteration_seed(seed: int, rank: int, epoch: int, iteration: int) -> int:
    """Seed of NNabla's random functions (dropout, drop-connect) for one iteration.

    Re-seeding every iteration makes them a function of the position, so a resumed run
    draws what the uninterrupted one would have.
    """
    return (seed * 1_000_003 + rank * 7_919 + epoch * 100_003 + iteration) % (2**31 - 1)


class TrainingMonitors:
    """The training series of the run (rank 0 writes); validation ones go through `record`."""

    def __init__(self, path: str, enabled: bool, start_epoch: int):
        self.loss = MonitorSeries(path, "Train-loss", enabled)
        self.error = MonitorSeries(path, "Train-error", enabled)
        self.epoch_time = MonitorTimer(path, "Epoch-time", enabled)
        if enabled:
            # Drop what an interrupted run wrote after the checkpoint resumed from (all of it
            # when starting afresh): training series are indexed by epoch (0..), validation
            # series by epochs done (1..).
            for m in (self.loss, self.error, self.epoch_time):
                m.truncate_after(start_epoch - 1)
            for name in VALIDATION_SERIES:
                truncate_series(series_path(path, name), start_epoch)


def write_run_description(path: str, args: argparse.Namespace, config: TrainConfig) -> None:
    """Arguments.txt (sorted key=value lines) and the effective config, as the official."""
    lines = "".join(f"{k}={v}\n" for k, v in sorted(vars(args).items()))
    atomic_write_text(os.path.join(path, "Arguments.txt"), lines)
    save_config(config, os.path.join(path, "train_config.yaml"))


def check_finite_parameters(comm: Communicator, ckpt_dir: str, where: str) -> None:
    """Stop every rank before a non-finite parameter is saved (a step can overflow the
    weights while its loss was still finite)."""
    bad = [k for k, v in nn.get_parameters(grad_only=False).items() if not np.isfinite(v.d).all()]
    if comm.all_reduce_sum([len(bad)])[0]:
        raise diverged(f"non-finite parameters {where}" + (f" ('{bad[0]}')" if bad else ""),
                       ckpt_dir)


def diverged(what: str, ckpt_dir: str) -> TrainingDiverged:
    """The error of a run that diverged, saying what was kept."""
    saved = list_checkpoints(ckpt_dir)
    kept = f"the last checkpoint, {saved[0]}, is intact" if saved else "no checkpoint was saved"
    return TrainingDiverged(f"{what}: training diverged; {kept}; train again with a lower "
                              "learning rate in a new --monitor-path")


def save_training_state(directory: str, epoch: int, iteration: int, sums: np.ndarray,
                        identity: Dict[str, Any], solver: MomentumSolver,
                        train_data: ImageBatches, mixup: Optional[Mixup],
                        ema: Optional[WeightEma], comm: Communicator, keep: int) -> str:
    """Checkpoint the run (rank 0 writes; every rank contributes its RNG state, batch-norm
    statistics and sums of the epoch so far); return the checkpoint's path."""
    extra: Dict[str, np.ndarray] = {}
    positions: List[Any] = []
    all_sums = comm.all_gather_object(sums.tolist())
    # Batch-norm running statistics are each rank's own (only gradients are averaged).
    statistics = comm.all_gather_object({k: v.d.copy() for k, v in
                                         nn.get_parameters(grad_only=False).items()
                                         if not v.need_grad})
    for rank, values in enumerate(statistics[1:], 1):
        extra.update({f"rank{rank}/{name}": value for name, value in values.items()})
    if mixup is not None:
        states = comm.all_gather_object(mixup.rng.get_state())
        for rank, (_, keys, pos, has_gauss, gauss) in enumerate(states):
            extra[f"mixup_rng_{rank}"] = keys
            positions.append([int(pos), int(has_gauss), float(gauss)])
    if ema is not None:  # the same on every rank: it averages the all-reduced updates
        extra.update({f"ema/{name}": value for name, value in ema.state_dict().items()})
    if comm.is_main:
        meta = {"identity": identity, "train_data": train_data.state(),
                "mixup_rng_pos": positions, "epoch_sums": all_sums}
        params = {k: v.d for k, v in nn.get_parameters(grad_only=False).items()}
        save_checkpoint(directory, epoch, iteration, meta, params, solver.state_dict(), extra,
                        keep)
    comm.barrier()
    return os.path.join(directory, checkpoint_name(epoch, iteration))


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    rt = setup_runtime(args)
    comm, log = rt.comm, rt.log
    start_watchdog(args.hang_timeout, comm)  # set-up, then every iteration and batch
    stop = StopRequest()  # from now on a stop signal is acted on after the next iteration
    arch = get_architecture(args.arch)
    config = load_config(args.train_config, args.epochs)
    if args.channel_last and rt.backend == "cpu":
        raise UsageError("--channel-last needs a GPU: NNabla's CPU backend runs NCHW only")
    if config.mixup > 0 and args.batch_size % 2:
        raise UsageError(f"{config.source}: mixup pairs sample i with sample B-1-i and needs "
                         f"an even --batch-size, got {args.batch_size}")
    monitor_path = comm.broadcast_object(
        args.monitor_path or time.strftime("tmp.monitor.%Y%m%d%H%M%S"))
    ckpt_dir = checkpoint_dir(monitor_path)
    if comm.is_main:  # fail now, not after the first epoch; clear what a kill -9 left
        check_writable(monitor_path, "monitor path")
        _monitor_lock = lock_folder(monitor_path, "monitor path")  # held until main returns
        for folder in (monitor_path, ckpt_dir):
            for path in remove_stale_temporaries(folder):
                log(f"removed {path}, left by an interrupted write")
    channels = 4 if args.type_config == "half" else 3

    # ---- data: this rank's shard of each split
    data_options = dict(
        spatial_size=args.spatial_size, channels=channels, channel_last=args.channel_last,
        dtype=np.float16 if args.type_config == "half" else np.float32,
        rank=comm.rank, num_ranks=comm.size, num_threads=args.dali_num_threads,
        prefetch=args.dali_prefetch_queue, device_id=rt.data_device_id,
        decoder_padding=args.dali_nvjpeg_memory_padding,
    )
    train_files = read_file_list(args.train_list, args.train_dir, args.num_classes)
    train_data = ImageBatches(train_files, args.batch_size, training=True, seed=args.seed,
                              **data_options)
    val_data = None
    if args.val_interval > 0:
        val_files = read_file_list(args.val_list, args.val_dir, args.num_classes)
        val_data = ImageBatches(val_files, args.batch_size, training=False, **data_options)

    # ---- graphs: training (creates the parameters), then evaluation (shares them)
    nn.seed(args.seed)
    b = args.batch_size
    x = nn.Variable(train_data.image_shape)
    label = nn.Variable((b, 1))
    mask = nn.Variable((b, 1))
    mixup = None
    inputs, target = x, label
    if config.mixup > 0:
        mixup = Mixup(config.mixup, b, args.num_classes, seed=MIXUP_SEED + comm.rank)
        inputs, target = mixup.mix_inputs(x), mixup.mix_labels(label)
    pred, _ = build_network(inputs, args.num_classes, arch.name, test=False,
                            channel_last=args.channel_last)
    pred.persistent = True
    with nn.context_scope(rt.float_ctx):
        loss = classification_loss(pred, target, config.label_smoothing, weight=mask)
        error = top_n_error_count(pred, label, n=1, weight=mask)
    loss.persistent = error.persistent = True
    val_graph = bn_data = None
    if val_data is not None:
        val_graph = build_evaluation_graph(arch.name, val_data.image_shape, args.num_classes,
                                           args.channel_last, rt.float_ctx)
        if args.recompute_bn:
            bn_data = ImageBatches(train_files, b, training=True, seed=args.seed + 1,
                                   **data_options)

    # ---- the newest intact checkpoint of this monitor path, if any, is resumed below
    checkpoint, skipped = latest_checkpoint(ckpt_dir)
    for note in skipped:
        log(f"skipping damaged checkpoint: {note}")
    if args.resume and checkpoint is None:
        raise CheckpointError(f"--resume: no intact checkpoint in {ckpt_dir}")

    if args.model_load_path and checkpoint is None:  # (a checkpoint holds every parameter)
        skip = [arch.classifier_scope] if args.finetune else []
        note = load_into_network(args.model_load_path, arch.name, skip)
        log(f"loaded {args.model_load_path}" + (" (new classifier)" if skip else "")
            + (f"; {note}" if note else ""))
    comm.broadcast_parameters(nn.get_parameters(grad_only=False))

    # A static scale only matters in half precision; a dynamic one is honoured in any.
    scaled = args.type_config == "half" or args.dynamic_loss_scaling
    loss_scale = config.loss_scaling if scaled else 1.0
    solver = MomentumSolver(nn.get_parameters(), config.momentum, config.weight_decay,
                            loss_scale=loss_scale, dynamic_loss_scaling=args.dynamic_loss_scaling)
    schedule = build_schedule(config.lr_scheduler, train_data.iterations_per_epoch)
    global_batch = b * comm.size
    ema = WeightEma(nn.get_parameters(), args.ema_decay) if args.ema_decay else None
    # Batch-norm running statistics: each rank's own (only gradients are averaged).
    statistics = [v for v in nn.get_parameters(grad_only=False).values() if not v.need_grad]
    if comm.is_main:  # room for the next checkpoint (parameters and momenta) and weight file
        param_bytes = 4 * sum(v.size for v in nn.get_parameters(grad_only=False).values())
        check_room(monitor_path, largest_file=2 * param_bytes, total=3 * param_bytes,
                   what="monitor path")

    # ---- resume
    identity = run_identity(args, config, comm.size)
    start_epoch = 0
    resumed_sums = None
    if checkpoint is not None:
        mismatch = identity_mismatch(checkpoint.meta["identity"], identity)
        if mismatch:
            raise CheckpointError(f"{checkpoint.path}: cannot resume a different run "
                                  f"({mismatch}); use another --monitor-path")
        for name, var in nn.get_parameters(grad_only=False).items():
            var.d = checkpoint.extra.get(f"rank{comm.rank}/{name}", checkpoint.params[name])
        solver.load_state_dict(checkpoint.solver)
        if mixup is not None:
            pos, has_gauss, gauss = checkpoint.meta["mixup_rng_pos"][comm.rank]
            mixup.rng.set_state(("MT19937", checkpoint.extra[f"mixup_rng_{comm.rank}"],
                                 pos, has_gauss, gauss))
        if ema is not None:
            ema.load_state_dict({k[len("ema/"):]: v for k, v in checkpoint.extra.items()
                                 if k.startswith("ema/")})
        start_epoch = checkpoint.meta["epoch"]
        resumed_sums = checkpoint.meta["epoch_sums"][comm.rank]
        train_data.restore(checkpoint.meta["train_data"])
        log(f"resuming from {checkpoint.path} (epoch {start_epoch}, "
            f"iteration {checkpoint.meta['iteration']})")
    if comm.is_main:
        write_run_description(monitor_path, args, config)
    monitors = TrainingMonitors(monitor_path, comm.is_main, start_epoch)

    def checkpoint_at(epoch: int, iteration: int, sums: np.ndarray) -> str:
        return save_training_state(ckpt_dir, epoch, iteration, sums, identity, solver,
                                   train_data, mixup, ema, comm, args.keep_checkpoints)

    # ---- training
    epoch_walls: List[float] = []  # seconds of each epoch of this process, end to end
    for epoch in range(start_epoch, config.epochs):
        started = time.time()
        # This rank's sums: loss over valid samples, wrong, valid, and steps skipped on
        # overflow (--dynamic-loss-scaling; the same on every rank). Kept by mid-epoch
        # checkpoints, so a resumed epoch reports what the uninterrupted one would.
        sums = np.zeros(4)
        if epoch == start_epoch and resumed_sums is not None:
            sums = np.array(resumed_sums)
        first = train_data.state()["iteration"] if epoch == start_epoch else 0
        bar = Progress(comm, train_data.iterations_per_epoch, f"epoch {epoch}", initial=first,
                       images_per_iteration=global_batch)
        for batch in train_data.epoch(epoch):
            lr = schedule(epoch, batch.iteration)
            solver.set_learning_rate(solver_learning_rate(lr, global_batch))
            batch.copy_to(x)
            label.d = batch.labels
            mask.d = batch.mask
            if mixup is not None:
                mixup.resample()
            nn.seed(iteration_seed(args.seed, comm.rank, epoch, batch.iteration))
            solver.zero_grad()
            nn.forward_all([loss, error], clear_no_need_grad=True)
            loss.backward(solver.loss_scale, clear_buffer=True)
            comm.all_reduce_gradients(solver.parameters())
            updated = solver.update()
            if ema is not None and updated:
                ema.update()
            value, wrong = float(loss.d), float(error.d)
            sums += (value * batch.num_valid, wrong, batch.num_valid, not updated)
            # One collective per step: did any rank get a stop signal or a non-finite loss?
            # (Loss scaling cannot fix a non-finite loss: it only scales the gradients.)
            stop_now, bad_loss = comm.all_reduce_sum([stop.requested, not np.isfinite(value)])
            if bad_loss:
                raise diverged(f"non-finite training loss at epoch {epoch}, iteration "
                               f"{batch.iteration}", ckpt_dir)
            bar.update(loss=value, error=wrong / max(batch.num_valid, 1), lr=lr)
            heartbeat()
            if stop_now and batch.iteration + 1 < train_data.iterations_per_epoch:
                bar.close()
                check_finite_parameters(comm, ckpt_dir, f"at epoch {epoch}")
                path = checkpoint_at(epoch, batch.iteration + 1, sums)
                log(f"stopped by {stop.describe()} at epoch {epoch}, iteration "
                    f"{batch.iteration + 1}; saved {path}; run the same command to resume")
                return PREEMPTED_EXIT_STATUS
        bar.close()  # a stop at the epoch's last iteration ends the epoch first (below)
        check_finite_parameters(comm, ckpt_dir, f"after epoch {epoch}")
        comm.average_values(statistics)  # one model to validate and save, the same on all ranks
        loss_sum, wrong, seen = comm.all_reduce_sum(sums[:3].tolist())
        skipped = int(sums[3])
        seconds = time.time() - started
        monitors.loss.add(epoch, loss_sum / seen)
        monitors.error.add(epoch, wrong / seen)
        monitors.epoch_time.add(epoch, seconds, train_data.iterations_per_epoch)
        overflow = (f"; {skipped} overflow step(s) skipped, loss scale now "
                    f"{solver.loss_scale:g}" if args.dynamic_loss_scaling else "")
        log(f"epoch {epoch}: train loss {loss_sum / seen:.4f}, error {wrong / seen:.4f} "
            f"({seconds:.1f} s){overflow}")
        done = epoch + 1
        if val_graph is not None and (done % args.val_interval == 0 or done == config.epochs):
            if bn_data is not None:
                if mixup is not None:
                    mixup.lam.d = 1.0  # statistics of the unmixed images
                nn.seed(iteration_seed(args.seed, comm.rank, done, -1))
                recompute_batch_norm(pred, training_feeds(bn_data, done, args.recompute_bn, x),
                                     comm)
            result = evaluate(val_graph, val_data, comm, description=f"validation {done}")
            record(result, monitor_path, done, enabled=comm.is_main)
            log(f"epoch {epoch}: validation loss {result.loss:.4f}, top-1 error "
                f"{result.top1_error:.4f}, top-5 error {result.top5_error:.4f}")
            if ema is not None:
                with ema.swapped_in():
                    result = evaluate(val_graph, val_data, comm, description=f"EMA {done}")
                record(result, monitor_path, done, prefix="Validation-EMA",
                       enabled=comm.is_main)
                log(f"epoch {epoch}: EMA weights: validation top-1 error "
                    f"{result.top1_error:.4f}")
        if comm.is_main and (done % args.model_save_interval == 0 or done == config.epochs):
            write_parameters(os.path.join(monitor_path, f"param_{done:03d}.h5"),
                             network_parameters())
            if ema is not None:
                with ema.swapped_in():
                    write_parameters(os.path.join(monitor_path, f"param_ema_{done:03d}.h5"),
                                     network_parameters())
        path = checkpoint_at(done, 0, np.zeros(4))
        if comm.is_main:
            plot_monitor(monitor_path)
        epoch_walls.append(time.time() - started)
        if done < config.epochs:
            log(f"epoch {epoch}: done in {format_duration(epoch_walls[-1])}; "
                f"{run_eta(epoch_walls, config.epochs - done)}")
        if done < config.epochs and stop.agreed(comm):
            log(f"stopped by {stop.describe()} after epoch {epoch}; saved {path}; run the "
                "same command to resume")
            return PREEMPTED_EXIT_STATUS
    log(f"finished {config.epochs} epochs; results in {monitor_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
