"""Mixup in the graph: the official pairing, per-sample ratios, soft targets, and its random
stream saved and restored."""
import numpy as np
import pytest
from test_losses import LABELS, LOGITS, evaluate, expected_loss, one_hot, variable

from utils.losses import classification_loss, top_n_error_count
from utils.mixup import MIXUP_SEED, Mixup


@pytest.mark.parametrize("shape", [(4, 2, 3, 3), (4, 3, 3, 2)])
def test_mixup_pairs_sample_i_with_b_minus_1_minus_i(shape):
    x = np.random.RandomState(0).randn(*shape)
    mixup = Mixup(alpha=0.2, batch_size=4, num_classes=3, seed=MIXUP_SEED + 1)
    mixed_x = mixup.mix_inputs(variable(x))
    mixed_t = mixup.mix_labels(variable(LABELS))
    lam = mixup.resample()
    stream = np.random.RandomState(MIXUP_SEED + 1)
    stream.beta(0.2, 0.2, size=(4, 1, 1, 1))  # drawn when the graph is built, as the official
    expected_lam = stream.beta(0.2, 0.2, size=(4, 1, 1, 1))
    np.testing.assert_allclose(lam, expected_lam, rtol=1e-6)
    assert len(set(lam.ravel())) == 4  # one draw per sample, pairs not symmetric

    np.testing.assert_allclose(
        evaluate(mixed_x), lam * x + (1 - lam) * x[::-1], rtol=1e-5, atol=1e-6
    )
    lam2 = lam.reshape(4, 1)
    targets = one_hot(LABELS)
    expected_targets = lam2 * targets + (1 - lam2) * targets[::-1]
    np.testing.assert_allclose(evaluate(mixed_t), expected_targets, rtol=1e-5, atol=1e-7)
    # e.g. sample 0 (class 2) mixes with sample 3 (class 1).
    assert evaluate(mixed_t)[0] == pytest.approx([0, 1 - lam2[0, 0], lam2[0, 0]], abs=1e-6)


def test_mixup_loss_uses_mixed_targets_and_error_the_original_labels():
    mixup = Mixup(alpha=0.2, batch_size=4, num_classes=3)
    label = variable(LABELS)
    loss = classification_loss(variable(LOGITS), mixup.mix_labels(label), 0.1)
    error = top_n_error_count(variable(LOGITS), label)
    lam = mixup.resample().reshape(4, 1)
    targets = lam * one_hot(LABELS) + (1 - lam) * one_hot(LABELS)[::-1]
    assert evaluate(loss) == pytest.approx(expected_loss(LOGITS, targets, 0.1).mean(), rel=1e-5)
    assert evaluate(error) == 2


def test_mixup_draws_new_ratios_each_iteration():
    mixup = Mixup(alpha=0.2, batch_size=2, num_classes=3)
    first = mixup.resample().copy()
    assert not np.array_equal(first, mixup.resample())


def test_mixup_needs_an_even_batch_and_a_positive_alpha():
    with pytest.raises(ValueError, match="even batch size, got 3"):
        Mixup(alpha=0.2, batch_size=3, num_classes=10)
    with pytest.raises(ValueError, match="alpha"):
        Mixup(alpha=0.0, batch_size=4, num_classes=10)
    with pytest.raises(ValueError, match="batch 4"):
        Mixup(alpha=0.2, batch_size=4, num_classes=3).mix_inputs(variable(np.zeros((2, 3))))


def test_the_random_stream_resumes_from_its_state():
    mixup = Mixup(alpha=0.2, batch_size=4, num_classes=3)
    mixup.resample()
    state = mixup.state_dict()
    expected = [mixup.resample().copy() for _ in range(3)]
    restored = Mixup(alpha=0.2, batch_size=4, num_classes=3, seed=MIXUP_SEED + 5)
    restored.load_state_dict(state)
    for lam in expected:
        np.testing.assert_array_equal(restored.resample(), lam)
