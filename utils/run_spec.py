"""A training run as it was asked for: built once from train.py's flags and the recipe, and
all the training loop reads of them."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from .config import TrainConfig

# The fields a resumed run must keep (its checkpoint's "identity" record); -e may change the
# epochs, and the rest says how the loop runs, which a resumed run may change.
IDENTITY_FIELDS = ("arch", "num_classes", "type_config", "channel_last", "spatial_size",
                   "batch_size", "num_ranks", "config", "model_load_path", "finetune", "seed",
                   "ema_decay")


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

    @classmethod
    def from_args(cls, args: argparse.Namespace, config: TrainConfig, num_ranks: int
                  ) -> RunSpec:
        """From train.py's parsed flags (`config` loaded with their -e)."""
        return cls(
            args.arch, args.num_classes, args.type_config, args.channel_last,
            tuple(args.spatial_size), args.batch_size, num_ranks, config, args.seed,
            args.model_load_path, args.finetune, args.ema_decay, args.accumulate_steps,
            args.dynamic_loss_scaling, args.recompute_bn, args.val_interval,
            args.model_save_interval, args.keep_checkpoints, not args.no_tensorboard)

    def due(self, done: int, interval: int) -> bool:
        """Whether something done every `interval` epochs and at the end is due after `done`."""
        return done % interval == 0 or done == self.config.epochs

    def identity(self) -> Dict[str, Any]:
        """The JSON record of `IDENTITY_FIELDS` a checkpoint keeps (the keys of the first
        version: checkpoints written since then still resume)."""
        record: Dict[str, Any] = {name: getattr(self, name) for name in IDENTITY_FIELDS}
        record.update(spatial_size=list(self.spatial_size), config=self.config.to_dict())
        if self.accumulate_steps > 1:  # (only when used: older identities stay as they were)
            record["accumulate_steps"] = self.accumulate_steps
        return record
