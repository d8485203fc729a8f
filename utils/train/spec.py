"""A training run as it was asked for: built once from train.py's flags and the recipe, and
all the run reads of them (nothing reads the flags after it)."""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

from ..data.pipelines import InputPipeline
from ..process.comm import Communicator
from ..recipe.config import TrainConfig

# The fields a resumed run must keep (its checkpoint's "identity" record); -e may change the
# epochs, the fields of `BatchSplit` may change if their global batch stays (see it), and the
# rest says how the loop runs, which a resumed run may change.
IDENTITY_FIELDS = ("arch", "num_classes", "type_config", "channel_last", "spatial_size",
                   "batch_size", "num_ranks", "config", "model_load_path", "finetune", "seed",
                   "ema_decay", "teacher", "teacher_arch")
# Recorded only when set, so the identities written before they existed stay as they were.
SET_ONLY_FIELDS = ("teacher", "teacher_arch")


@dataclass(frozen=True)
class BatchSplit:
    """How the global batch of an update is made: `batch_size` images per rank and batch, on
    `num_ranks` ranks, over `accumulate_steps` batches. The learning rate, the schedule and
    the data order follow the global batch alone, so a run may resume with another split of
    the same global batch (another number of ranks) and continue the same training."""

    batch_size: int
    num_ranks: int
    accumulate_steps: int = 1

    @classmethod
    def of(cls, identity: Dict[str, Any]) -> BatchSplit:
        """The split of a checkpoint's identity record."""
        return cls(identity["batch_size"], identity["num_ranks"],
                   identity.get("accumulate_steps", 1))

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.num_ranks * self.accumulate_steps

    def __str__(self) -> str:
        ranks = f"{self.num_ranks} rank" + ("s" if self.num_ranks > 1 else "")
        steps = f" x {self.accumulate_steps} accumulated" if self.accumulate_steps > 1 else ""
        return f"{self.batch_size} x {ranks}{steps}"

    def resumed_as(self, now: BatchSplit) -> str:
        """The log line of a run of this split resumed with `now`, of the same global batch."""
        return (f"resuming a {self.num_ranks}-rank run on {now.num_ranks} rank"
                f"{'s' if now.num_ranks > 1 else ''}: batch {self} -> {now}, global batch "
                f"{self.global_batch} kept")

    def refusal(self, now: BatchSplit) -> str:
        """Why a run of this split cannot resume as `now` (another global batch), and the
        -b and --accumulate-steps that would keep it on `now`'s ranks (or on the most ranks
        below that can)."""
        total, ranks = self.global_batch, now.num_ranks
        said = (f"the run was trained with a global batch of {total} ({self}), not "
                f"{now.global_batch} ({now}); ")
        if total % ranks:
            fits = max(r for r in range(1, ranks + 1) if total % r == 0)
            said += f"on {ranks} ranks no -b keeps it; on {fits} rank{'s' if fits > 1 else ''}"
            ranks = fits
        else:
            said += f"on {ranks} rank{'s' if ranks > 1 else ''}"
        options = " or ".join(_keeping(total // ranks, (now.batch_size, self.batch_size),
                                       now.accumulate_steps > 1))
        return f"{said} use {options} (a new --monitor-path starts a new run)"


SPLIT_FIELDS = tuple(f.name for f in fields(BatchSplit))  # in the identity, as RunSpec's


def _keeping(per_rank: int, batch_sizes: Tuple[int, ...], accumulating: bool) -> List[str]:
    """-b (and --accumulate-steps, always said when the run has it) that make `per_rank`
    images per rank and update: the whole as one batch, and the first of `batch_sizes` that
    divides it in several."""
    options = [f"-b {per_rank}" + (" --accumulate-steps 1" if accumulating else "")]
    for b in batch_sizes:
        if b < per_rank and per_rank % b == 0:
            options.append(f"-b {b} --accumulate-steps {per_rank // b}")
            break
    return options


def run_folder(given: Optional[str], comm: Communicator) -> str:
    """-m, or a new tmp.monitor.<YYYYmmddHHMMSS> (as the official example), rank 0's name on
    every rank."""
    return given or comm.broadcast_object(time.strftime("tmp.monitor.%Y%m%d%H%M%S"))


@dataclass(frozen=True)
class DataSources:
    """Where the images and their names are: the training and validation folders and lists,
    and --labels (None: found beside the training list, or ImageNet's)."""

    train_dir: str
    train_list: str
    val_dir: str
    val_list: str
    labels: Optional[str] = None


@dataclass(frozen=True)
class RunSpec:
    """What to train and how the loop runs (see `IDENTITY_FIELDS` for which is which)."""

    arch: str
    num_classes: int
    type_config: str
    channel_last: bool
    spatial_size: Tuple[int, int]
    batch_size: int  # per rank
    num_ranks: int
    config: TrainConfig
    seed: int
    model_load_path: Optional[str] = None
    finetune: bool = False
    ema_decay: float = 0.0  # 0: no EMA
    accumulate_steps: int = 1  # batches summed into one update
    dynamic_loss_scaling: bool = False
    recompute_bn: int = 0  # training batches that re-estimate BN statistics before validation
    val_interval: int = 10  # epochs; <= 0: no validation
    model_save_interval: int = 10  # epochs
    keep_checkpoints: int = 3
    tensorboard: bool = True
    # Where the data comes from and the outputs go, and how the process is watched.
    data: Optional[DataSources] = None
    inputs: Optional[InputPipeline] = None  # image format, DALI options, this rank's shard
    monitor_path: str = "."
    monitor_path_given: bool = True  # False: a new tmp.monitor.<time> folder
    resume: bool = False  # a checkpoint is required
    download: bool = True  # a published weight file's name may be downloaded
    log_interval: int = 0  # updates between points of the curves within the epoch (0: ~100)
    hang_timeout: float = 0.0
    recipe_file: str = "cos90.yaml"  # the name the recipe's copy is saved under
    flags: Tuple[Tuple[str, Any], ...] = ()  # every flag as parsed: Arguments.txt, HParams
    teacher: Optional[str] = None  # the distillation teacher's weight file (or published name)
    teacher_arch: Optional[str] = None  # its architecture

    @classmethod
    def from_args(cls, args: argparse.Namespace, config: TrainConfig, inputs: InputPipeline,
                  monitor_path: str) -> RunSpec:
        """From train.py's parsed flags (`config` loaded with their -e), reading through
        `inputs` on its shard's ranks, writing into `monitor_path` (see `run_folder`)."""
        return cls(
            args.arch, args.num_classes, args.type_config, args.channel_last,
            tuple(args.spatial_size), args.batch_size, inputs.shard.num_ranks, config,
            args.seed,
            args.model_load_path, args.finetune, args.ema_decay, args.accumulate_steps,
            args.dynamic_loss_scaling, args.recompute_bn, args.val_interval,
            args.model_save_interval, args.keep_checkpoints, not args.no_tensorboard,
            DataSources(args.train_dir, args.train_list, args.val_dir, args.val_list,
                        args.labels),
            inputs, monitor_path, args.monitor_path is not None, args.resume,
            not args.no_download, args.log_interval, args.hang_timeout,
            os.path.basename(args.train_config), tuple(sorted(vars(args).items())),
            args.teacher, args.teacher_arch)

    @property
    def validating(self) -> bool:
        return self.val_interval > 0

    @property
    def split(self) -> BatchSplit:
        return BatchSplit(self.batch_size, self.num_ranks, self.accumulate_steps)

    def due_after(self, epochs_done: int, interval: int) -> bool:
        """Whether something done every `interval` epochs and at the end is due after
        `epochs_done` epochs."""
        return epochs_done % interval == 0 or epochs_done == self.config.epochs

    def identity(self) -> Dict[str, Any]:
        """The JSON record of `IDENTITY_FIELDS` a checkpoint keeps (the keys of the first
        version: checkpoints written since then still resume)."""
        record: Dict[str, Any] = {name: getattr(self, name) for name in IDENTITY_FIELDS
                                  if name not in SET_ONLY_FIELDS or getattr(self, name)}
        record.update(spatial_size=list(self.spatial_size), config=self.config.to_dict())
        if self.accumulate_steps > 1:  # (only when used: older identities stay as they were)
            record["accumulate_steps"] = self.accumulate_steps
        return record
