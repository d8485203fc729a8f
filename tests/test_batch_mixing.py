"""Mixup and CutMix in the graph: the official pairing, per-sample ratios, pasted boxes and the
target weights of their areas, soft targets, and the random stream saved and restored."""
import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest
from test_losses import LABELS, LOGITS, evaluate, expected_loss, one_hot, variable

from utils.eval.losses import classification_loss, top_n_error_count
from utils.train.mixing import MIXUP_SEED, BatchMixing, cutmix_boxes


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
        both.keep.forward()  # (the map is computed in the graph)
        kinds.add(bool((both.keep.d == 0).any()))  # a pasted box: a CutMix batch
    assert kinds == {True, False}
    mixup_only = BatchMixing(0.2, 0.0, (4, 3, 8, 8), 3)
    official = np.random.RandomState(MIXUP_SEED)
    official.beta(0.2, 0.2, size=(4, 1, 1, 1))
    for _ in range(3):
        np.testing.assert_array_equal(mixup_only.resample(),
                                      official.beta(0.2, 0.2, size=(4, 1, 1, 1)))
    both.unmix()
    both.keep.forward()
    assert (both.keep.d == 1).all() and (both.lam.d == 1).all()


# --------------------------------------------------------------------------- the map in the graph


def host_mixing(rng, mixup_alpha, cutmix_alpha, switch_prob, batch, height, width):
    """One batch's (keep (B, H, W), lam (B, 1, 1, 1)) as drawn and built on the host before
    the map moved into the graph (the reference the graph must equal bit for bit)."""
    cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random_sample() < switch_prob)
    if not cutmix:
        lam = rng.beta(mixup_alpha, mixup_alpha, size=(batch, 1, 1, 1))
        return np.broadcast_to(lam.reshape(-1, 1, 1), (batch, height, width)), lam
    lam = rng.beta(cutmix_alpha, cutmix_alpha, size=batch)
    keep = np.ones((batch, height, width), np.float32)
    for sample, (y0, y1, x0, x1) in enumerate(cutmix_boxes(lam, height, width, rng)):
        keep[sample, y0:y1, x0:x1] = 0.0
    return keep, keep.mean(axis=(1, 2)).reshape(batch, 1, 1, 1)


def in_layout(keep, channel_last):
    return keep[..., None] if channel_last else keep[:, None]


@pytest.mark.parametrize("half", [False, True], ids=["float", "half"])
@pytest.mark.parametrize("channel_last", [False, True])
@pytest.mark.parametrize("alphas", [(0.0, 1.0), (0.2, 1.0), (0.0, 0.3)])
def test_the_graph_s_map_weights_and_mixed_images_equal_the_host_s(channel_last, alphas, half,
                                                                   request):
    """30 batches at 13x10 (CutMix alone, both on, small boxes), in float and (as -t half
    on a GPU) in half precision: the map, the targets' weights, the mixed images and the
    random stream equal the host construction's."""
    dtype = np.float16 if half else np.float32
    if half:
        request.getfixturevalue("half_context")
    batch, height, width = 6, 13, 10
    shape = (batch, height, width, 3) if channel_last else (batch, 3, height, width)
    mixing = BatchMixing(*alphas, shape, 3, channel_last=channel_last, seed=MIXUP_SEED + 3)
    reference = np.random.RandomState(MIXUP_SEED + 3)
    host_mixing(reference, *alphas, 0.5, batch, height, width)  # the draw when built
    x = variable(np.random.RandomState(1).randn(*shape))
    mixed = mixing.mix_inputs(x)
    host_keep = nn.Variable(mixing.keep.shape)
    host_mixed = host_keep * x + (1 - host_keep) * F.flip(x, axes=[0])
    for _ in range(30):
        lam = mixing.resample()
        keep, expected_lam = host_mixing(reference, *alphas, 0.5, batch, height, width)
        host_keep.d = in_layout(keep, channel_last)
        nn.forward_all([mixed, host_mixed])
        np.testing.assert_array_equal(mixing.keep.d.astype(dtype), host_keep.d.astype(dtype))
        np.testing.assert_array_equal(lam, expected_lam)
        np.testing.assert_array_equal(mixed.d, host_mixed.d)
    assert str(mixing.rng.get_state()) == str(reference.get_state())


@pytest.mark.parametrize("channel_last", [False, True])
def test_any_box_gives_the_host_s_map(channel_last):
    """Boxes anywhere, empty, on the borders or the whole image, at 224x224, under the
    weight outside them."""
    rng = np.random.RandomState(4)
    batch, height, width = 8, 224, 224
    shape = (batch, height, width, 3) if channel_last else (batch, 3, height, width)
    mixing = BatchMixing(0.2, 1.0, shape, 3, channel_last=channel_last)
    ys = np.sort(rng.randint(0, height + 1, size=(batch, 2)), axis=1)
    xs = np.sort(rng.randint(0, width + 1, size=(batch, 2)), axis=1)
    ys[0], xs[0] = (5, 5), (0, 224)  # empty
    ys[1], xs[1] = (0, 224), (0, 224)  # the whole image
    ys[2], xs[2] = (223, 224), (0, 1)  # a corner pixel
    outside = rng.uniform(size=(batch, 1, 1, 1)).astype(np.float32)
    mixing.box.d = np.concatenate([ys, xs], axis=1)
    mixing.outside.d = outside
    mixing.keep.forward()
    keep = np.broadcast_to(outside.reshape(-1, 1, 1), (batch, height, width)).copy()
    for sample, (y0, y1, x0, x1) in enumerate(np.concatenate([ys, xs], axis=1)):
        keep[sample, y0:y1, x0:x1] = 0.0
    np.testing.assert_array_equal(mixing.keep.d, in_layout(keep, channel_last))
    assert (mixing.keep.d[1] == 0).all() and mixing.keep.d[2].sum() > 0


def test_only_the_boxes_and_weights_are_inputs():
    """What crosses to the device each step: (B, 4) boxes, (B, 1, 1, 1) weights outside
    them and the targets' weights, not a (B, H, W) map."""
    mixing = BatchMixing(0.2, 1.0, (192, 3, 224, 224), 1000)
    inputs = []
    mixing.keep.visit(lambda f: inputs.extend(v for v in f.inputs if v.parent is None))
    assert set(inputs) == {mixing.box, mixing.outside}
    assert (mixing.box.shape, mixing.outside.shape) == ((192, 4), (192, 1, 1, 1))
