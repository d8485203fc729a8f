"""Classification losses and metrics as nnabla graph functions (CPU or GPU).

Label smoothing follows the official example: per example
`(1 - eps) * CE(label) - eps * mean_c(log_softmax(pred))`, with hard integer labels (B, 1)
or soft labels (B, K) (mixup). Optional per-sample weights (B, 1) let a padded short last
batch exclude its padding from the loss and the error count.

Training may instead use timm's binary cross-entropy on the same smoothed targets
(`binary_cross_entropy`, ResNet strikes back) and add Hinton et al.'s distillation term
(`distillation_divergence`).
"""
from __future__ import annotations

from typing import Optional

import nnabla as nn
import nnabla.functions as F


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


def smoothed_targets(pred: nn.Variable, label: nn.Variable,
                     label_smoothing: float = 0.0) -> nn.Variable:
    """Per-class targets (B, K): the one-hot `label` (B, 1), or soft `label` (B, K), times
    1 - eps plus eps / K (timm's smoothed one-hot, also under mixup)."""
    classes = pred.shape[1]
    targets = label if _is_soft(pred, label) else F.one_hot(label, (classes,))
    if label_smoothing == 0:
        return targets
    return targets * (1 - label_smoothing) + label_smoothing / classes


def binary_cross_entropy(pred: nn.Variable, label: nn.Variable, label_smoothing: float = 0.0,
                         threshold: Optional[float] = None) -> nn.Variable:
    """Per-example loss (B, 1): the mean over the K classes of the sigmoid cross-entropy
    against `smoothed_targets` (so the batch mean is timm's BinaryCrossEntropy, reduction
    'mean'); with `threshold`, targets above it become 1 and the others 0 (timm's
    target_threshold)."""
    targets = smoothed_targets(pred, label, label_smoothing)
    if threshold is not None:
        targets = F.greater_scalar(targets, threshold)
    # -t log σ(x) - (1 - t) log(1 - σ(x)), stable for any x. (NNabla's sigmoid_cross_entropy
    # takes the target as an integer: it would truncate the soft targets.)
    per_class = F.relu(pred) - pred * targets + F.log(F.exp(-F.abs(pred)) + 1)
    return F.mean(per_class, axis=1, keepdims=True)


def distillation_divergence(student: nn.Variable, teacher: nn.Variable,
                            temperature: float) -> nn.Variable:
    """Per-example T^2 * KL(softmax(teacher / T) || softmax(student / T)) (B, 1): Hinton et
    al.'s soft-target term, whose gradients keep their size as T changes."""
    log_student = F.log_softmax(student / temperature, axis=1)
    log_teacher = F.log_softmax(teacher / temperature, axis=1)
    divergence = F.sum(F.exp(log_teacher) * (log_teacher - log_student), axis=1, keepdims=True)
    return divergence * temperature ** 2


def weighted_mean(per_example: nn.Variable, weight: Optional[nn.Variable] = None
                  ) -> nn.Variable:
    """Scalar training loss: the batch mean of a per-example loss (B, 1); with `weight` (B, 1) it is
    `sum(w * l) / sum(w)`, and a batch of zero weights gives 0 (the divisor is at least 1e-6,
    which 0/1 weights never reach otherwise)."""
    if weight is None:
        return F.mean(per_example)
    total = F.maximum_scalar(F.sum(weight), 1e-6)
    return _weighted_sum(per_example, weight) / total


def classification_loss(
    pred: nn.Variable,
    label: nn.Variable,
    label_smoothing: float = 0.0,
    weight: Optional[nn.Variable] = None,
) -> nn.Variable:
    """Scalar loss of a plain classifier: the `weighted_mean` of `smoothed_cross_entropy`."""
    return weighted_mean(smoothed_cross_entropy(pred, label, label_smoothing), weight)


def top_n_error_count(
    pred: nn.Variable, label: nn.Variable, n: int = 1, weight: Optional[nn.Variable] = None
) -> nn.Variable:
    """Scalar number of samples whose class `label` (B, 1) is not among the top `n` logits.

    Summed, not averaged, so that epoch error = total count / number of samples; with
    `weight` (B, 1) each sample counts `w` (0 excludes a padded sample).
    """
    return _weighted_sum(F.top_n_error(pred, label, axis=1, n=n), weight)
