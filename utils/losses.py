"""Classification losses and metrics as nnabla graph functions (CPU or GPU), and mixup.

Label smoothing follows the official example: per example
`(1 - eps) * CE(label) - eps * mean_c(log_softmax(pred))`, with hard integer labels (B, 1)
or soft labels (B, K) (mixup). Optional per-sample weights (B, 1) let a padded short last
batch exclude its padding from the loss and the error count.
"""
from __future__ import annotations

from typing import Optional

import nnabla as nn
import nnabla.functions as F
import numpy as np

MIXUP_SEED = 726  # the official mixup RandomState seed is MIXUP_SEED + rank


def _is_soft(pred: nn.Variable, label: nn.Variable) -> bool:
    if label.ndim != 2 or pred.ndim != 2 or label.shape[0] != pred.shape[0]:
        raise ValueError(f"expected logits (B, K) and labels (B, 1) or (B, K), got "
                         f"{pred.shape} and {label.shape}")
    if label.shape[1] == 1:
        return False
    if label.shape[1] != pred.shape[1]:
        raise ValueError(f"soft labels {label.shape} do not match logits {pred.shape}")
    return True


def smoothed_cross_entropy(
    pred: nn.Variable, label: nn.Variable, label_smoothing: float = 0.0
) -> nn.Variable:
    """Per-example loss (B, 1): cross-entropy mixed with the uniform-label term.

    `label` is (B, 1) class indices or (B, K) soft targets; `label_smoothing` 0 is plain CE.
    """
    if _is_soft(pred, label):
        ce = -F.sum(label * F.log_softmax(pred, axis=1), axis=1, keepdims=True)
    else:
        ce = F.softmax_cross_entropy(pred, label, axis=1)
    if label_smoothing == 0:
        return ce
    uniform = -F.mean(F.log_softmax(pred, axis=1), axis=1, keepdims=True)
    return (1 - label_smoothing) * ce + label_smoothing * uniform


def _weighted_sum(values: nn.Variable, weight: Optional[nn.Variable]) -> nn.Variable:
    return F.sum(values if weight is None else values * weight)


def classification_loss(
    pred: nn.Variable,
    label: nn.Variable,
    label_smoothing: float = 0.0,
    weight: Optional[nn.Variable] = None,
) -> nn.Variable:
    """Scalar training/validation loss: the batch mean of `smoothed_cross_entropy`.

    With `weight` (B, 1) it is `sum(w * l) / sum(w)`; a batch of zero weights gives 0 (the
    divisor is at least 1e-6, which 0/1 weights never reach otherwise).
    """
    per_example = smoothed_cross_entropy(pred, label, label_smoothing)
    if weight is None:
        return F.mean(per_example)
    total = F.maximum_scalar(F.sum(weight), 1e-6)
    return _weighted_sum(per_example, weight) / total


def top_n_error_count(
    pred: nn.Variable, label: nn.Variable, n: int = 1, weight: Optional[nn.Variable] = None
) -> nn.Variable:
    """Scalar number of samples whose class `label` (B, 1) is not among the top `n` logits.

    Summed, not averaged, so that epoch error = total count / number of samples; with
    `weight` (B, 1) each sample counts `w` (0 excludes a padded sample).
    """
    return _weighted_sum(F.top_n_error(pred, label, axis=1, n=n), weight)


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
        self.lam.d = 1.0

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
