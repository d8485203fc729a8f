"""Losses and error counts as nnabla graphs, against numpy computed by hand."""
import nnabla as nn
import numpy as np
import pytest

from utils.eval.losses import (
    binary_cross_entropy,
    classification_loss,
    distillation_divergence,
    smoothed_cross_entropy,
    smoothed_targets,
    top_n_error_count,
)

LOGITS = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0], [0.5, 0.5, 2.0], [0.0, 3.0, 1.0]])
LABELS = np.array([[2], [1], [0], [1]])


def variable(array):
    return nn.Variable.from_numpy_array(np.asarray(array, dtype=np.float32))


def evaluate(var):
    var.forward()
    return var.d.copy()


def log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def expected_loss(logits, targets, eps):
    """(1 - eps) * CE - eps * mean_c(log_softmax), targets as (B, K) probabilities."""
    logp = log_softmax(logits)
    ce = -(targets * logp).sum(axis=1, keepdims=True)
    return (1 - eps) * ce - eps * logp.mean(axis=1, keepdims=True)


def one_hot(labels, classes=3):
    return np.eye(classes)[labels[:, 0]]


def test_plain_cross_entropy_when_smoothing_is_zero():
    logp = log_softmax(LOGITS)
    plain = -logp[np.arange(4), LABELS[:, 0]][:, None]  # e.g. row 0: log(e+e^2+e^3) - 3
    assert plain[0, 0] == pytest.approx(np.log(np.e + np.e**2 + np.e**3) - 3)
    got = evaluate(smoothed_cross_entropy(variable(LOGITS), variable(LABELS), 0.0))
    np.testing.assert_allclose(got, plain, rtol=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_for_hard_and_soft_labels(eps):
    expected = expected_loss(LOGITS, one_hot(LABELS), eps)
    hard = evaluate(smoothed_cross_entropy(variable(LOGITS), variable(LABELS), eps))
    soft = evaluate(smoothed_cross_entropy(variable(LOGITS), variable(one_hot(LABELS)), eps))
    np.testing.assert_allclose(hard, expected, rtol=1e-5)
    np.testing.assert_allclose(soft, expected, rtol=1e-5)


def test_soft_labels_with_mixed_targets():
    targets = np.array([[0.2, 0.0, 0.8], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.1, 0.6, 0.3]])
    got = evaluate(smoothed_cross_entropy(variable(LOGITS), variable(targets), 0.1))
    np.testing.assert_allclose(got, expected_loss(LOGITS, targets, 0.1), rtol=1e-5)


def test_batch_mean_and_weighted_mean():
    per_example = expected_loss(LOGITS, one_hot(LABELS), 0.1)
    loss = evaluate(classification_loss(variable(LOGITS), variable(LABELS), 0.1))
    assert loss == pytest.approx(per_example.mean(), rel=1e-5)
    weights = np.array([[1.0], [0.0], [1.0], [0.0]])
    weighted = classification_loss(variable(LOGITS), variable(LABELS), 0.1, variable(weights))
    assert evaluate(weighted) == pytest.approx(per_example[[0, 2]].mean(), rel=1e-5)
    zero = classification_loss(variable(LOGITS), variable(LABELS), 0.1, variable(0 * weights))
    assert evaluate(zero) == 0.0


def test_zero_weight_samples_get_no_gradient():
    pred = variable(LOGITS)
    pred.need_grad = True
    weights = variable([[1.0], [0.0], [1.0], [0.0]])
    loss = classification_loss(pred, variable(LABELS), 0.1, weights)
    loss.forward()
    pred.grad.zero()
    loss.backward()
    np.testing.assert_array_equal(pred.g[[1, 3]], 0)
    assert np.abs(pred.g[[0, 2]]).sum() > 0


def test_error_counts():
    # Predicted classes 2, 0, 2, 1 vs labels 2, 1, 0, 1: samples 1 and 2 are top-1 errors.
    assert evaluate(top_n_error_count(variable(LOGITS), variable(LABELS))) == 2
    # Top-2: sample 1 (class 1 is second) is right; sample 2's class 0 ties class 1 for second
    # place, and nnabla counts a tie against the label: wrong.
    assert evaluate(top_n_error_count(variable(LOGITS), variable(LABELS), n=2)) == 1
    weights = variable([[1.0], [1.0], [0.0], [1.0]])
    assert evaluate(top_n_error_count(variable(LOGITS), variable(LABELS), 1, weights)) == 1


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="do not match"):
        smoothed_cross_entropy(variable(LOGITS), variable(np.zeros((4, 2))))


RNG = np.random.default_rng(7)
RANDOM_LOGITS = RNG.normal(0, 3, (6, 5))
RANDOM_LABELS = RNG.integers(0, 5, (6, 1))
RANDOM_TARGETS = RNG.dirichlet(np.ones(5), 6)  # mixed soft targets


def numpy_bce(logits, targets, eps, threshold):
    """timm's BinaryCrossEntropy per example: smoothed targets (eps / K off, 1 - eps + eps / K
    on), binarised above `threshold`, element-wise log-loss of the sigmoid, mean over classes."""
    targets = targets * (1 - eps) + eps / logits.shape[1]
    if threshold is not None:
        targets = (targets > threshold).astype(float)
    p = 1 / (1 + np.exp(-logits))
    return -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1, keepdims=True)


@pytest.mark.parametrize("eps,threshold", [(0.0, None), (0.1, None), (0.1, 0.2), (0.0, 0.2)])
def test_binary_cross_entropy_of_hard_and_soft_targets(eps, threshold):
    hard = binary_cross_entropy(variable(RANDOM_LOGITS), variable(RANDOM_LABELS), eps, threshold)
    np.testing.assert_allclose(evaluate(hard), numpy_bce(
        RANDOM_LOGITS, one_hot(RANDOM_LABELS, 5), eps, threshold), rtol=1e-5)
    soft = binary_cross_entropy(variable(RANDOM_LOGITS), variable(RANDOM_TARGETS), eps,
                                threshold)
    np.testing.assert_allclose(evaluate(soft), numpy_bce(
        RANDOM_LOGITS, RANDOM_TARGETS, eps, threshold), rtol=1e-5)


def test_threshold_binarises_the_mixed_targets():
    """A target of 0.3 (above 0.2) counts as 1, one of 0.1 as 0."""
    targets = np.array([[0.7, 0.3, 0.0], [0.9, 0.1, 0.0]])
    smoothed = evaluate(smoothed_targets(variable(LOGITS[:2]), variable(targets), 0.3))
    np.testing.assert_allclose(smoothed, targets * 0.7 + 0.1, rtol=1e-6)
    binarised = evaluate(binary_cross_entropy(variable(LOGITS[:2]), variable(targets), 0.0, 0.2))
    np.testing.assert_allclose(binarised, numpy_bce(
        LOGITS[:2], np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), 0.0, None), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distillation_divergence(temperature):
    teacher = RNG.normal(0, 2, RANDOM_LOGITS.shape)
    log_s = log_softmax(RANDOM_LOGITS / temperature)
    log_t = log_softmax(teacher / temperature)
    expected = temperature ** 2 * (np.exp(log_t) * (log_t - log_s)).sum(axis=1, keepdims=True)
    got = evaluate(distillation_divergence(variable(RANDOM_LOGITS), variable(teacher),
                                           temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    same = evaluate(distillation_divergence(variable(teacher), variable(teacher), temperature))
    np.testing.assert_allclose(same, 0, atol=1e-5)
