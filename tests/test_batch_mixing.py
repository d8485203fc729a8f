"""Mixup and CutMix in the graph: the official pairing, per-sample ratios, pasted boxes and the
target weights of their areas, soft targets, and the random stream saved and restored."""
import numpy as np
import pytest
from test_losses import LABELS, LOGITS, evaluate, expected_loss, one_hot, variable

from utils.batch_mixing import MIXUP_SEED, BatchMixing
from utils.losses import classification_loss, top_n_error_count


@pytest.mark.parametrize("shape", [(4, 2, 3, 3), (4, 3, 3, 2)])
def test_mixup_pairs_sample_i_with_b_minus_1_minus_i(shape):
    x = np.random.RandomState(0).randn(*shape)
    mixup = BatchMixing(0.2, 0, (4, 3, 4, 4), 3, seed=MIXUP_SEED + 1)
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
    mixup = BatchMixing(0.2, 0, (4, 3, 4, 4), 3)
    label = variable(LABELS)
    loss = classification_loss(variable(LOGITS), mixup.mix_labels(label), 0.1)
    error = top_n_error_count(variable(LOGITS), label)
    lam = mixup.resample().reshape(4, 1)
    targets = lam * one_hot(LABELS) + (1 - lam) * one_hot(LABELS)[::-1]
    assert evaluate(loss) == pytest.approx(expected_loss(LOGITS, targets, 0.1).mean(), rel=1e-5)
    assert evaluate(error) == 2


def test_mixup_draws_new_ratios_each_iteration():
    mixup = BatchMixing(0.2, 0, (2, 3, 4, 4), 3)
    first = mixup.resample().copy()
    assert not np.array_equal(first, mixup.resample())


def test_mixup_needs_an_even_batch_and_a_positive_alpha():
    with pytest.raises(ValueError, match="even batch size, got 3"):
        BatchMixing(0.2, 0, (3, 3, 4, 4), 10)
    with pytest.raises(ValueError, match="alpha"):
        BatchMixing(0.0, 0, (4, 3, 4, 4), 10)
    with pytest.raises(ValueError, match="batch 4"):
        BatchMixing(0.2, 0, (4, 3, 4, 4), 3).mix_inputs(variable(np.zeros((2, 3))))


def test_the_random_stream_resumes_from_its_state():
    mixup = BatchMixing(0.2, 0, (4, 3, 4, 4), 3)
    mixup.resample()
    state = mixup.state_dict()
    expected = [mixup.resample().copy() for _ in range(3)]
    restored = BatchMixing(0.2, 0, (4, 3, 4, 4), 3, seed=MIXUP_SEED + 5)
    restored.load_state_dict(state)
    for lam in expected:
        np.testing.assert_array_equal(restored.resample(), lam)


@pytest.mark.parametrize("channel_last", [False, True])
def test_cutmix_pastes_the_mirror_box_and_weights_the_targets_by_area(channel_last):
    shape = (4, 12, 10, 3) if channel_last else (4, 3, 12, 10)
    x = np.random.RandomState(0).randn(*shape)
    mixing = BatchMixing(0.0, 1.0, shape, 3, channel_last=channel_last, seed=MIXUP_SEED + 2)
    mixed_x = mixing.mix_inputs(variable(x))
    mixed_t = mixing.mix_labels(variable(LABELS))
    lam = mixing.resample().reshape(4)
    keep = mixing.keep.d[..., 0] if channel_last else mixing.keep.d[:, 0]  # (B, H, W)
    out = evaluate(mixed_x)
    mirror = x[::-1]
    for sample in range(4):
        pasted = keep[sample] == 0
        assert set(np.unique(keep[sample])) <= {0.0, 1.0}
        rows, cols = np.nonzero(pasted)
        if rows.size:  # one rectangle
            assert pasted[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        area = pasted.mean()
        assert lam[sample] == pytest.approx(1 - area)
        image = out[sample] if channel_last else np.moveaxis(out[sample], 0, -1)
        ours = x[sample] if channel_last else np.moveaxis(x[sample], 0, -1)
        theirs = mirror[sample] if channel_last else np.moveaxis(mirror[sample], 0, -1)
        np.testing.assert_allclose(image[pasted], theirs[pasted], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(image[~pasted], ours[~pasted], rtol=1e-5, atol=1e-6)
    targets = one_hot(LABELS)
    expected = lam[:, None] * targets + (1 - lam[:, None]) * targets[::-1]
    np.testing.assert_allclose(evaluate(mixed_t), expected, rtol=1e-5, atol=1e-6)
    assert 0 < np.mean(lam) < 1  # boxes of Beta(1, 1) areas: some pasted


def test_both_on_switch_per_batch_and_without_cutmix_the_stream_is_the_official_one():
    both = BatchMixing(0.2, 1.0, (4, 3, 8, 8), 3, switch_prob=0.5)
    kinds = set()
    for _ in range(40):
        both.resample()
        kinds.add(bool((both.keep.d == 0).any()))  # a pasted box: a CutMix batch
    assert kinds == {True, False}
    mixup_only = BatchMixing(0.2, 0.0, (4, 3, 8, 8), 3)
    official = np.random.RandomState(MIXUP_SEED)
    official.beta(0.2, 0.2, size=(4, 1, 1, 1))
    for _ in range(3):
        np.testing.assert_array_equal(mixup_only.resample(),
                                      official.beta(0.2, 0.2, size=(4, 1, 1, 1)))
    both.unmix()
    assert (both.keep.d == 1).all() and (both.lam.d == 1).all()
