"""Mixup (Zhang et al., 2018) inside the training graph, with the official example's pairing.

Each sample is mixed with its mirror in the batch (sample i with sample B-1-i) by a ratio
drawn per sample from Beta(alpha, alpha); the one-hot targets are mixed alike and go through
the same soft-target loss (`utils.losses.smoothed_cross_entropy`). The ratios come from a
NumPy RandomState seeded, as in the official example, with MIXUP_SEED + rank, which also
draws once when the graph is built, so that the first training step uses the stream's second
draw; its state is part of a training checkpoint.
"""
from __future__ import annotations

from typing import Any, Dict

import nnabla as nn
import nnabla.functions as F
import numpy as np

MIXUP_SEED = 726  # the official mixup RandomState seed is MIXUP_SEED + rank


class Mixup:
    """Mixup inside the graph: sample i is mixed with sample B-1-i (the batch reversed).

    `lam` is an input Variable (B, 1, 1, 1) holding one Beta(alpha, alpha) draw per sample
    (so a pair is not mixed symmetrically); call `resample()` before every iteration.
    Inputs and one-hot targets are mixed with the same `lam`; score the error against the
    original labels. Works for NCHW and NHWC inputs.
    """

    def __init__(self, alpha: float, batch_size: int, num_classes: int, seed: int = MIXUP_SEED):
        if alpha <= 0:
            raise ValueError(f"mixup alpha must be > 0, got {alpha}")
        if batch_size % 2:
            raise ValueError(
                f"mixup pairs sample i with sample B-1-i and needs an even batch size, "
                f"got {batch_size}"
            )
        self.alpha = alpha
        self.batch_size = batch_size
        self.num_classes = num_classes
        self.rng = np.random.RandomState(seed)
        self.lam = nn.Variable((batch_size, 1, 1, 1), need_grad=False)
        self.resample()  # as the official graph does once when built: step 1 uses draw 2

    def state_dict(self) -> Dict[str, Any]:
        """The random stream: its MT19937 key and [position, has_gauss, gauss]."""
        _, key, position, has_gauss, gauss = self.rng.get_state()
        return {"key": key, "position": [int(position), int(has_gauss), float(gauss)]}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        position, has_gauss, gauss = state["position"]
        self.rng.set_state(("MT19937", np.asarray(state["key"], np.uint32), int(position),
                            int(has_gauss), float(gauss)))

    def resample(self) -> np.ndarray:
        """Draw new mixing ratios into `lam` and return them."""
        self.lam.d = self.rng.beta(self.alpha, self.alpha, size=self.lam.shape)
        return self.lam.d

    def _lam_for(self, x: nn.Variable) -> nn.Variable:
        if x.shape[0] != self.batch_size:
            raise ValueError(f"mixup built for batch {self.batch_size}, got {x.shape}")
        return F.reshape(self.lam, (self.batch_size,) + (1,) * (x.ndim - 1), inplace=False)

    def mix_inputs(self, x: nn.Variable) -> nn.Variable:
        """`lam * x + (1 - lam) * reversed(x)` over the batch axis."""
        lam = self._lam_for(x)
        return lam * x + (1 - lam) * F.flip(x, axes=[0])

    def mix_labels(self, label: nn.Variable) -> nn.Variable:
        """Soft targets (B, K) from class indices (B, 1), mixed like the inputs."""
        lam = self._lam_for(label)
        one_hot = F.one_hot(label, (self.num_classes,))
        return lam * one_hot + (1 - lam) * F.flip(one_hot, axes=[0])
