"""Batch-norm statistics recompute: exact batch averages, weights untouched."""
import nnabla as nn
import nnabla.functions as F
import numpy as np
import pytest

from models import build_network
from utils.process.comm import Communicator
from utils.train.bn_stats import batch_norm_statistics, recompute_batch_norm


def batches(seed, n, shape):
    rng = np.random.RandomState(seed)
    return [rng.randn(*shape).astype(np.float32) * 2 + 0.5 for _ in range(n)]


def feeder(x, data):
    def feed(d=data):
        x.d = d
    return feed


@pytest.mark.parametrize("arch,decay", [("resnet18", 0.9), ("mobilenet_v2", 0.99)])
def test_running_statistics_become_the_average_of_batch_statistics(arch, decay):
    x = nn.Variable((4, 3, 32, 32))
    pred, _ = build_network(x, 10, arch, test=False)
    stats = batch_norm_statistics(pred)
    assert [s.decay for s in stats] == pytest.approx([decay] * len(stats))
    params = nn.get_parameters(grad_only=False)
    trainable = {k: v.d.copy() for k, v in nn.get_parameters().items()}
    data = batches(0, 3, x.shape)
    used = recompute_batch_norm(pred, [feeder(x, d) for d in data], Communicator())
    assert used == 3
    # The stem's batch mean, computed independently from the convolution weights.
    stem = "conv1" if arch == "resnet18" else "first-conv"
    w = params[f"{stem}/conv/W"]
    stride, pad = ((2, 2), (3, 3)) if arch == "resnet18" else ((2, 2), (1, 1))
    means, variances = [], []
    for d in data:
        h = F.convolution(nn.Variable.from_numpy_array(d), w, stride=stride, pad=pad)
        h.forward()
        n = h.d.size // h.shape[1]
        means.append(h.d.mean(axis=(0, 2, 3)))
        variances.append(h.d.var(axis=(0, 2, 3)) * n / (n - 1))  # NNabla keeps unbiased
    np.testing.assert_allclose(params[f"{stem}/bn/mean"].d.ravel(), np.mean(means, axis=0),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params[f"{stem}/bn/var"].d.ravel(),
                               np.mean(variances, axis=0), rtol=1e-4)
    for k, v in nn.get_parameters().items():
        np.testing.assert_array_equal(v.d, trainable[k])  # no weight moved


def test_inference_after_recompute_matches_batch_statistics():
    """Fed one batch, the test-mode network normalises that batch nearly as training does.

    Not exactly: NNabla keeps the unbiased variance, training normalises with the biased one.
    """
    x = nn.Variable((16, 3, 64, 64))
    train_pred, _ = build_network(x, 10, "mobilenet_v1", test=False)
    test_pred, _ = build_network(x, 10, "mobilenet_v1", test=True)
    x.d = batches(1, 1, x.shape)[0]
    test_pred.forward()
    before = test_pred.d.copy()
    recompute_batch_norm(train_pred, [lambda: None], Communicator())
    train_pred.forward()
    test_pred.forward()
    stale = np.abs(before - train_pred.d).max()
    fresh = np.abs(test_pred.d - train_pred.d).max()
    assert fresh < 0.2 * stale


def test_inference_graph_is_refused():
    x = nn.Variable((2, 3, 32, 32))
    pred, _ = build_network(x, 10, "resnet18", test=True)
    with pytest.raises(ValueError, match="training graph"):
        recompute_batch_norm(pred, [lambda: None], Communicator())
