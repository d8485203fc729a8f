"""A training run: set up from its spec (`start_run`), then epoch after epoch
(`TrainingRun.train`), each one `train_one_epoch` and `end_of_epoch`. The run owns what changes
as it goes (the learning rate, the images/s origin, the epochs' wall times); what a checkpoint
keeps is its `TrainingState`; every output goes through its sink."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Tuple

import nnabla as nn
import numpy as np

from models import get_architecture, supports_stochastic_depth

from ..data.batch_plan import BatchPlan
from ..data.pipelines import ImageBatches, check_val_resize
from ..eval.evaluation import EvaluationGraph, build_evaluation_graph, evaluate
from ..eval.per_class import CONFUSION_LIMIT, ClassCounts
from ..labels.file_list import read_file_list, read_id_csv
from ..labels.imagenet import class_names
from ..outputs.batch_grid import batch_grid
from ..outputs.monitor import VALIDATION_EMA
from ..outputs.sink import (
    EpochResult,
    IterationPoint,
    OutputSink,
    default_interval,
    metric_tags,
    output_sink,
)
from ..process.comm import Communicator
from ..process.errors import DataError, UsageError
from ..process.pause_point import pause_at
from ..process.progress import Progress, format_duration, run_eta
from ..process.runtime import Runtime
from ..process.stop_signals import StopRequest
from ..process.watchdog import heartbeat
from ..recipe.config import recipe_warnings
from ..recipe.schedules import LearningRateSchedule, build_schedule
from ..recipe.solvers import recipe_solver
from ..weights.files import WeightFileError, network_parameters, open_weights
from ..weights.published import published
from .bn_stats import recompute_batch_norm, training_feeds
from .checkpoint import Checkpoint, CheckpointError, checkpoint_dir, latest_checkpoint
from .ema import WeightEma
from .spec import DataSources, RunSpec
from .state import TrainingState, diverged
from .step import (
    Teacher,
    TrainingGraph,
    TrainingNetwork,
    accumulate_gradients,
    apply_update,
    batch_share,
    build_training_graph,
    check_layout,
    input_channels,
    iteration_seed,
    update_group,
    updates_done,
    updates_per_epoch,
)

PREEMPTED_EXIT_STATUS = 75  # EX_TEMPFAIL: stopped on request, resumable


@dataclass
class Validator:
    """The evaluation network (sharing the training parameters) and what it validates on."""

    graph: EvaluationGraph
    data: ImageBatches
    bn_data: Optional[ImageBatches]  # training batches to recompute batch-norm statistics
    bn_batches: int = 0  # how many (--recompute-bn)

    def set_resolution(self, size: int) -> None:
        """Recompute the statistics from training batches at the size trained at."""
        if self.bn_data is not None:
            self.bn_data.set_spatial_size(size)

    def recompute_statistics(self, graph: TrainingGraph, epochs_done: int, seed: int,
                             comm: Communicator) -> None:
        """--recompute-bn: the batch-norm statistics of the training graph re-estimated
        from training batches (plain, not mixed), before validating."""
        if self.bn_data is None:
            return
        if graph.mixing is not None:
            graph.mixing.unmix()  # statistics of the plain images
        nn.seed(iteration_seed(seed, comm.rank, epochs_done, -1))
        feeds = training_feeds(self.bn_data, epochs_done, self.bn_batches, graph.image)
        recompute_batch_norm(graph.logits, feeds, comm)


@dataclass
class TrainingRun:
    """One training run (see the module's docstring)."""

    spec: RunSpec
    runtime: Runtime
    state: TrainingState
    schedule: LearningRateSchedule
    validator: Optional[Validator]
    stop: StopRequest
    outputs: OutputSink
    names: List[Optional[str]]  # class names (None: the id)
    interval: int  # updates between points of the curves within the epoch
    lr: float = 0.0  # per example, of the latest update
    # (time, step) since which this session's images/s are measured
    throughput_origin: Tuple[float, int] = (0.0, 0)
    batch_pictured: bool = False  # train_batch.png of this session written
    epoch_seconds: List[float] = field(default_factory=list)  # each epoch's, end to end

    @property
    def checkpoints(self) -> str:
        return checkpoint_dir(self.spec.monitor_path)

    def step(self, epoch: int, iteration: int = 0) -> int:
        """Updates done over the whole run before batch `iteration` of `epoch`: the curves'
        x axis."""
        return updates_done(epoch, iteration, self.state.data.iterations_per_epoch,
                            self.spec.accumulate_steps)

    def train(self) -> int:
        """Train from where the state stands to the end; the exit status."""
        epochs, comm = self.spec.config.epochs, self.runtime.comm
        try:
            self.outputs.session(self.step(*self.state.position), dict(self.spec.flags),
                                 self.spec.config.to_dict(), self.metric_tags())
            for epoch in range(self.state.position[0], epochs):
                started = time.time()
                self.set_resolution(epoch)
                if not self.train_one_epoch(epoch):
                    return PREEMPTED_EXIT_STATUS
                path = self.end_of_epoch(epoch, started)
                if epoch + 1 < epochs and self.stop.agreed(comm):
                    self.runtime.log(f"stopped by {self.stop.describe()} after epoch {epoch}; "
                                     f"saved {path}; {how_to_resume(self.spec)}")
                    return PREEMPTED_EXIT_STATUS
            self.outputs.finished(self.step(epochs))
            self.runtime.log(f"finished {epochs} epochs; results in {self.spec.monitor_path}")
            return 0
        finally:
            self.outputs.close()

    def metric_tags(self) -> List[str]:
        return metric_tags(self.validator is not None, self.state.ema is not None)

    def set_resolution(self, epoch: int) -> None:
        """With progressive resizing, train `epoch` at its resolution (the batches of
        --recompute-bn too); parameters, solver, data position and mixing stream carry over."""
        resizing = self.spec.config.progressive_resizing
        if resizing is None:
            return
        size = resizing.resolution(epoch)
        self.state.set_resolution(size)
        if self.validator is not None:
            self.validator.set_resolution(size)
        self.runtime.log(f"epoch {epoch}: training at {size}x{size}")

    def train_one_epoch(self, epoch: int) -> bool:
        """Train `epoch` from where the state stands; False if a stop signal ended it early
        (the run is then checkpointed mid-epoch)."""
        state, comm, spec = self.state, self.runtime.comm, self.spec
        graph, solver, data, steps = state.graph, state.solver, state.data, spec.accumulate_steps
        global_batch = data.plan.global_batch
        bar = Progress(comm, data.iterations_per_epoch, f"epoch {epoch}",
                       initial=state.position[1], images_per_iteration=global_batch)
        self.throughput_origin = (time.time(), self.step(*state.position))  # (no validation)
        for batch in data.epoch(epoch):
            first, last, group = update_group(batch.iteration, data.iterations_per_epoch, steps)
            if first:
                self.lr = self.schedule(epoch, batch.iteration // steps)
                update_images = data.plan.images_in(batch.iteration, group)
                solver.zero_grad()
            graph.feed(batch)
            step = self.step(epoch, batch.iteration)
            if not self.batch_pictured:  # the session's first batch
                self.picture_batch(batch, step)
            if graph.draws_random:  # (dropout, drop-path; not the ResNets)
                nn.seed(iteration_seed(spec.seed, comm.rank, epoch, batch.iteration))
            loss, wrong = accumulate_gradients(
                graph, solver, batch_share(batch.num_valid, comm.size, update_images))
            updated = True
            if last:  # (a short last group steps as a whole one: padding is left out above)
                updated = apply_update(solver, comm, self.lr, global_batch * steps)
                if state.ema is not None and updated:
                    state.ema.update()
            state.sums.add(loss * batch.num_valid, wrong, batch.num_valid, not updated)
            pause_at(f"epoch {epoch} iteration {batch.iteration}",
                     lambda: self.stop.agreed(comm))
            # One collective per step: did any rank get a stop signal or a non-finite loss, and
            # the batch's sums over all ranks for the curves within the epoch. (Loss scaling
            # cannot fix a non-finite loss: it only scales the gradients.)
            stop_now, bad_loss, *sums = comm.all_reduce_sum(
                [self.stop.requested, not np.isfinite(loss), loss * batch.num_valid, wrong,
                 batch.num_valid])
            if bad_loss:
                raise diverged(f"non-finite training loss at epoch {epoch}, iteration "
                               f"{batch.iteration}", self.checkpoints)
            state.since_point.add(*sums, not updated)
            if last and (step + 1) % self.interval == 0:
                self.record_point(step + 1)
            bar.update(loss=loss, error=wrong / max(batch.num_valid, 1), lr=self.lr)
            heartbeat()
            # A stop takes effect after an update, so no accumulated gradient is lost.
            if stop_now and last and batch.iteration + 1 < data.iterations_per_epoch:
                bar.close()
                state.check_finite(self.checkpoints)
                path = state.save(self.checkpoints, spec.keep_checkpoints)
                self.runtime.log(f"stopped by {self.stop.describe()} at epoch {epoch}, "
                                 f"iteration {batch.iteration + 1}; saved {path}; "
                                 f"{how_to_resume(spec)}")
                return False
        bar.close()  # a stop at the epoch's last iteration ends the epoch first
        return True

    def picture_batch(self, batch: Any, step: int) -> None:
        """train_batch.png (and its TensorBoard image): the batch in the graph's inputs as the
        network receives it, with the labels and, under mixup or CutMix, the targets'
        weights."""
        graph, data = self.state.graph, self.state.data
        weights = graph.mixing.lam.d.copy() if graph.mixing is not None else None
        self.outputs.batch(batch_grid(graph.fed_images(), batch.labels, self.names,
                                      data.image.channel_last, data.image.norm, weights), step)
        self.batch_pictured = True

    def record_point(self, step: int) -> None:
        """A point of the curves within the epoch after `step` updates: the means of all
        ranks since the point before (kept in the checkpoint across a resume); the images per
        second of this session since then."""
        sums, (since, since_step) = self.state.take_since_point(), self.throughput_origin
        now = time.time()
        images = (step - since_step) * self.spec.split.global_batch
        dynamic = self.spec.dynamic_loss_scaling
        self.outputs.iteration(IterationPoint(
            step, sums.loss / max(sums.seen, 1), sums.wrong / max(sums.seen, 1),
            self.lr, images / (now - since) if now > since else float("nan"),
            self.state.solver.loss_scale if dynamic else None,
            int(sums.skipped) if dynamic else None))
        self.throughput_origin = (now, step)

    def end_of_epoch(self, epoch: int, started: float) -> str:
        """Log the epoch, validate, write the weight files, checkpoint and plot; return the
        checkpoint's path."""
        spec, state, epochs_done = self.spec, self.state, epoch + 1
        state.check_finite(self.checkpoints)
        state.average_statistics()  # one model to validate and save, the same on all ranks
        self.log_epoch(epoch, time.time() - started)
        if self.validator is not None and spec.due_after(epochs_done, spec.val_interval):
            self.validate(epochs_done)
        if spec.due_after(epochs_done, spec.model_save_interval):
            write_weight_files(self.outputs, epochs_done, state.ema)
        path = state.save(self.checkpoints, spec.keep_checkpoints)
        self.outputs.end_of_epoch()
        self.epoch_seconds.append(time.time() - started)
        if epochs_done < spec.config.epochs:
            self.runtime.log(
                f"epoch {epoch}: done in {format_duration(self.epoch_seconds[-1])}; "
                f"{run_eta(self.epoch_seconds, spec.config.epochs - epochs_done)}")
        return path

    def log_epoch(self, epoch: int, seconds: float) -> None:
        """The epoch's training loss and error over all ranks: series, scalars, log line."""
        state = self.state
        sums = state.take_epoch_sums()
        loss_sum, wrong, seen = self.runtime.comm.all_reduce_sum(
            [sums.loss, sums.wrong, sums.seen])
        dynamic = self.spec.dynamic_loss_scaling
        self.outputs.epoch(EpochResult(
            epoch, self.step(epoch + 1), loss_sum / seen, wrong / seen, seconds,
            state.data.iterations_per_epoch, self.lr,
            state.solver.loss_scale if dynamic else None,
            int(sums.skipped) if dynamic else None))

    def validate(self, epochs_done: int) -> None:
        """Validate after `epochs_done` epochs (re-estimating the batch-norm statistics first
        with --recompute-bn), and the EMA weights too with --ema-decay."""
        validator, comm, spec = self.validator, self.runtime.comm, self.spec
        validator.recompute_statistics(self.state.graph, epochs_done, spec.seed, comm)
        # The confusion matrix goes to TensorBoard, up to 100 classes (its counts are summed
        # over ranks: every rank decides alike).
        counts = ClassCounts.empty(spec.num_classes) if (
            spec.tensorboard and spec.num_classes <= CONFUSION_LIMIT) else None
        result = evaluate(validator.graph, validator.data, comm,
                          description=f"validation {epochs_done}",
                          observers=[counts] if counts is not None else ())
        step = self.step(epochs_done)
        self.outputs.validation(result, epochs_done, step, counts=counts, names=self.names)
        if self.state.ema is not None:
            with self.state.ema.swapped_in():
                result = evaluate(validator.graph, validator.data, comm,
                                  description=f"EMA {epochs_done}")
            self.outputs.validation(result, epochs_done, step, part=VALIDATION_EMA)


def write_weight_files(outputs: OutputSink, epochs_done: int, ema: Optional[WeightEma]) -> None:
    """param_NNN.h5, and param_ema_NNN.h5 with the EMA weights."""
    outputs.weight_file(f"param_{epochs_done:03d}.h5", network_parameters())
    if ema is not None:
        with ema.swapped_in():
            outputs.weight_file(f"param_ema_{epochs_done:03d}.h5", network_parameters())


# --------------------------------------------------------------------------- set-up


def start_run(spec: RunSpec, runtime: Runtime, stop: StopRequest) -> TrainingRun:
    """Everything the epochs need, in order: the output folder claimed, the data, the graphs
    (the parameters seeded, loaded or resumed, the same on every rank), the solver and state,
    the run's description written and the series opened where the run stands."""
    comm = runtime.comm
    outputs = output_sink(spec.monitor_path, comm.rank, runtime.log)
    check_options(spec, runtime, outputs)
    outputs.claim_for_training(checkpoint_dir(spec.monitor_path))
    train_data, val_data, bn_data = build_datasets(spec)
    check_accumulation(spec.accumulate_steps, train_data.iterations_per_epoch)
    nn.seed(spec.seed)  # the training graph creates the parameters; evaluation shares them
    teacher = distillation_teacher(spec, train_data.image.norm)
    graph = build_training_graph(TrainingNetwork(
        spec.arch, spec.num_classes, spec.channel_last, spec.config, comm.rank,
        runtime.float_ctx, teacher), train_data.image_shape)
    if teacher is not None:
        load_teacher(teacher, spec, runtime)
    validator = build_validator(spec, runtime, val_data, bn_data)
    checkpoint = find_checkpoint(checkpoint_dir(spec.monitor_path), spec.resume, runtime)
    if spec.model_load_path and checkpoint is None:  # (a checkpoint holds every parameter)
        load_initial_weights(spec, runtime)
    comm.broadcast_parameters(nn.get_parameters(grad_only=False))

    ema = WeightEma(nn.get_parameters(), spec.ema_decay, runtime.float_ctx) \
        if spec.ema_decay else None
    solver = recipe_solver(spec.config, spec.type_config, spec.dynamic_loss_scaling,
                           spec.split.global_batch)
    state = TrainingState(spec, comm, solver, train_data, graph, ema)
    param_bytes = 4 * sum(v.size for v in nn.get_parameters(grad_only=False).values())
    outputs.check_room(largest_file=2 * param_bytes, total=3 * param_bytes)  # a checkpoint
    if checkpoint is not None:
        changes = state.resume(checkpoint)
        runtime.log(f"resuming from {checkpoint.path} (epoch {checkpoint.meta['epoch']}, "
                    f"iteration {checkpoint.meta['iteration']})")
        for change in changes:
            runtime.log(change)
    outputs.run_description(dict(spec.flags), spec.config, spec.recipe_file)
    updates = updates_per_epoch(train_data.iterations_per_epoch, spec.accumulate_steps)
    runtime.log(describe_batch(spec, train_data.plan))
    start_epoch, start_iteration = state.position
    outputs.start_session(start_epoch, updates_done(
        start_epoch, start_iteration, train_data.iterations_per_epoch, spec.accumulate_steps),
        checkpoint is not None, spec.tensorboard)
    return TrainingRun(spec, runtime, state, build_schedule(spec.config.lr_scheduler, updates),
                       validator, stop, outputs, training_class_names(spec.data, spec.num_classes),
                       spec.log_interval or default_interval(updates))


def how_to_resume(spec: RunSpec) -> str:
    """The end of a stop message: how to continue the run. Without -m every run writes a new
    tmp.monitor.<YYYYmmddHHMMSS> folder, so the same command again would start over."""
    if spec.monitor_path_given:
        return "run the same command again to resume"
    folder = spec.monitor_path
    return (f"to resume, run the same command with -m {folder} added (or --resume -m "
            f"{folder}): without -m it starts a new run in a new folder")


def check_options(spec: RunSpec, runtime: Runtime, outputs: OutputSink) -> None:
    """Refuse combinations that cannot run, before any work; warn of what the recipe will
    not do in this run."""
    config = spec.config
    check_layout(spec.channel_last, runtime.backend)
    if config.drop_path_rate > 0 and not supports_stochastic_depth(spec.arch):
        raise UsageError(f"{config.source}: drop_path_rate (stochastic depth) is built for the "
                         f"ResNet family, not {spec.arch}")
    if (config.mixup > 0 or config.cutmix > 0) and spec.batch_size % 2:
        raise UsageError(f"{config.source}: mixup and CutMix pair sample i with sample B-1-i "
                         f"and need an even --batch-size, got {spec.batch_size}")
    for warning in recipe_warnings(config):
        outputs.warn(warning)


def check_accumulation(steps: int, iterations_per_epoch: int) -> None:
    """An update sums `steps` batches of one epoch: more than the epoch has would make every
    update a short one, whose learning rate is still that of the full global batch."""
    if steps > iterations_per_epoch:
        raise UsageError(f"--accumulate-steps {steps} is more than the {iterations_per_epoch} "
                         f"batches of an epoch: use at most {iterations_per_epoch}, or a smaller "
                         "-b")


def build_datasets(spec: RunSpec
                   ) -> Tuple[ImageBatches, Optional[ImageBatches], Optional[ImageBatches]]:
    """This rank's shard of the training split (augmented as the recipe says); of the
    validation split (None with -v 0); and the training batches that re-estimate batch-norm
    statistics (--recompute-bn)."""
    pipeline = spec.inputs.formatted(channel_last=spec.channel_last,
                                     channels=input_channels(spec.type_config))
    data, augmentation = spec.data, spec.config.augmentation
    train_files = read_file_list(data.train_list, data.train_dir, spec.num_classes,
                                 flag="--train-list")
    train = pipeline.batches(train_files, spec.batch_size, True, spec.seed, augmentation)
    if not spec.validating:
        return train, None, None
    val_files = read_file_list(data.val_list, data.val_dir, spec.num_classes, flag="--val-list")
    # the recipe's val_resize: the test-time size belongs to the recipe that trains at its
    # own size (FixRes), and is saved with it, so a resumed run validates alike
    check_val_resize(spec.config.val_resize, pipeline.image.spatial_size,
                     f"{spec.config.source or 'the recipe'}: val_resize")
    val = pipeline.formatted(val_resize=spec.config.val_resize).batches(
        val_files, spec.batch_size, False)
    bn = None
    if spec.recompute_bn:
        bn = pipeline.batches(train_files, spec.batch_size, True, spec.seed + 1, augmentation)
    return train, val, bn


def build_validator(spec: RunSpec, runtime: Runtime, val_data: Optional[ImageBatches],
                    bn_data: Optional[ImageBatches]) -> Optional[Validator]:
    """The evaluation network on the training parameters (None without validation data), in
    the training precision as validation.py's, so the two give the same numbers (the loss and
    errors are in float32 in both)."""
    if val_data is None:
        return None
    return Validator(build_evaluation_graph(
        spec.arch, val_data.image_shape, spec.num_classes, spec.channel_last, runtime.ctx),
        val_data, bn_data, spec.recompute_bn)


def describe_batch(spec: RunSpec, plan: BatchPlan) -> str:
    """The start-up line: batch, ranks, accumulation, the images per update."""
    steps = spec.accumulate_steps
    return (f"batch {plan.batch_size} per rank x {plan.shard.num_ranks} rank(s)"
            + (f" x {steps} accumulated batches" if steps > 1 else "")
            + f" = {plan.global_batch * steps} images per update; "
              f"{plan.iterations_per_epoch} iterations per epoch")


def find_checkpoint(checkpoints: str, required: bool, runtime: Runtime) -> Optional[Checkpoint]:
    """The newest intact checkpoint of this monitor path (damaged ones are named), if any."""
    checkpoint, skipped = latest_checkpoint(checkpoints)
    for note in skipped:
        runtime.log(f"skipping damaged checkpoint: {note}")
    if required and checkpoint is None:
        raise CheckpointError(f"--resume: no intact checkpoint in {checkpoints}")
    # Every rank resumes from what it reads itself: a monitor path on a disk of rank 0's
    # machine alone would start the other ranks over, out of step, until the hang timeout.
    seen = runtime.comm.all_gather_object(checkpoint.path if checkpoint else None)
    if len(set(seen)) > 1:
        rank = next(r for r, path in enumerate(seen) if path != seen[0])
        raise CheckpointError(
            f"rank 0 resumes from {seen[0] or 'no checkpoint'} but rank {rank} from "
            f"{seen[rank] or 'none'} in {checkpoints}: the monitor path must be one folder "
            "that every machine of the job sees (a shared file system)")
    return checkpoint


def distillation_teacher(spec: RunSpec, student_norm: str) -> Optional[Teacher]:
    """--teacher's network (its parameters not loaded yet: `load_teacher`), fed the student's
    batches renormalised to its own normalisation: a published file's, else its
    architecture's."""
    if spec.teacher is None:
        return None
    known = published(spec.teacher)
    norm = known.norm if known is not None else get_architecture(spec.teacher_arch).norm
    return Teacher(spec.teacher_arch, norm, student_norm)


def load_teacher(teacher: Teacher, spec: RunSpec, runtime: Runtime) -> None:
    """--teacher's weights into the teacher's parameters (built with the training graph), on
    every rank from the file itself; a classifier of other classes than the student's is
    refused (the distillation compares their outputs class by class)."""
    weights = open_weights(spec.teacher, spec.teacher_arch, spec.download, runtime.comm)
    if weights.num_classes is not None and weights.num_classes != spec.num_classes:
        raise WeightFileError(f"{spec.teacher}: the teacher's classifier has "
                              f"{weights.num_classes} classes, the student's --num-classes "
                              f"{spec.num_classes}: distillation needs the same classes")
    with nn.parameter_scope("teacher", teacher.params):
        note = weights.load_into(spec.teacher_arch)
    runtime.log(f"teacher {spec.teacher_arch} {spec.teacher} ({teacher.norm} normalisation)"
                + (f"; {note}" if note else ""))


def load_initial_weights(spec: RunSpec, runtime: Runtime) -> None:
    """--model-load-path: every parameter, or all but the classifier with --finetune."""
    skip = [get_architecture(spec.arch).classifier_scope] if spec.finetune else []
    weights = open_weights(spec.model_load_path, spec.arch, spec.download, runtime.comm)
    try:
        note = weights.load_into(spec.arch, skip)
    except WeightFileError as e:
        found = None if spec.finetune else weights.num_classes
        if found is not None and found != spec.num_classes:  # the classifier: --finetune
            raise WeightFileError(f"{e}; its classifier has {found} classes: add --finetune to "
                                  f"train a new one of --num-classes {spec.num_classes}"
                                  ) from None
        raise
    runtime.log(f"loaded {spec.model_load_path}" + (" (new classifier)" if skip else "")
                + (f"; {note}" if note else ""))


def training_class_names(data: DataSources, num_classes: int) -> List[Optional[str]]:
    """--labels (checked), else label_words.csv beside the training list when it names
    --num-classes classes (create_input_files.py writes it there), else ImageNet's names for
    1000 classes, else none."""
    if data.labels is not None:
        return class_names(data.labels, num_classes)
    beside = os.path.join(os.path.dirname(os.path.abspath(data.train_list)), "label_words.csv")
    try:
        names = read_id_csv(beside) if os.path.exists(beside) else []
    except DataError:  # (not asked for: the ids will do)
        names = []
    if len(names) == num_classes:
        return list(names)
    return class_names(None, num_classes)
