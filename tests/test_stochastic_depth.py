"""Stochastic depth in the ResNet family: rates linear over the blocks, each branch dropped
per sample and the kept ones scaled so that the expectation is the test-mode output, the
test-mode network and the parameters unchanged, the draws a function of the seed."""
from __future__ import annotations

import nnabla as nn
import numpy as np
import pytest
from marks import marking_slow

from models import build_network
from models.layers import drop_path
from models.resnet import CONFIGS, block_drop_rates
from utils.train.step import draws_global_random


def test_drop_rates_are_linear_over_the_blocks():
    rates = block_drop_rates(CONFIGS["resnet50"].depths, 0.05)
    assert len(rates) == 16
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.05)
    np.testing.assert_allclose(np.diff(rates), 0.05 / 15)


def test_the_mean_of_the_training_passes_is_the_test_mode_output():
    """Each sample's branch is 0 or branch / keep; over many passes the mean is the branch."""
    rng = np.random.default_rng(0)
    branch = nn.Variable.from_numpy_array(rng.normal(size=(16, 3, 2, 2)).astype(np.float32))
    dropped = drop_path(branch, 0.3, test=False)
    assert drop_path(branch, 0.3, test=True) is branch
    nn.seed(1)
    passes = []
    for _ in range(2000):
        dropped.forward()
        passes.append(dropped.d.copy())
    passes = np.stack(passes)
    kept = np.abs(passes).sum(axis=(2, 3, 4)) > 0
    np.testing.assert_allclose(passes[kept.nonzero()], np.broadcast_to(
        branch.d / 0.7, passes.shape)[kept.nonzero()], rtol=1e-5)
    assert kept.mean() == pytest.approx(0.7, abs=0.015)
    np.testing.assert_allclose(passes.mean(axis=0), branch.d, atol=0.1)


def parameters_of(arch, rate, test):
    nn.clear_parameters()
    x = nn.Variable((2, 3, 32, 32))
    logits, _ = build_network(x, 10, arch, test=test, drop_path_rate=rate)
    return logits, {k: v.shape for k, v in nn.get_parameters(grad_only=False).items()}


@pytest.mark.parametrize("arch", marking_slow(["resnet18", "se_resnet50"], ["se_resnet50"]))
def test_parameters_and_the_test_network_are_unchanged(arch):
    _, plain = parameters_of(arch, 0.0, test=False)
    training, dropping = parameters_of(arch, 0.2, test=False)
    assert list(dropping.items()) == list(plain.items())
    assert draws_global_random(training)
    tested, _ = parameters_of(arch, 0.2, test=True)
    assert not draws_global_random(tested)


def test_a_dropping_network_averages_to_its_branches_and_follows_the_seed():
    """With the parameters fixed: a pass is a function of nn.seed, and the training passes
    differ from the no-drop output only where a branch was dropped."""
    nn.clear_parameters()
    nn.seed(0)
    rng = np.random.default_rng(0)
    x = nn.Variable.from_numpy_array(rng.normal(size=(4, 3, 32, 32)).astype(np.float32))
    plain, _ = build_network(x, 10, "resnet18", test=True)
    dropping, _ = build_network(x, 10, "resnet18", test=True, drop_path_rate=0.5)
    plain.forward()
    dropping.forward()
    np.testing.assert_array_equal(dropping.d, plain.d)  # test mode: no drop
    training, _ = build_network(x, 10, "resnet18", test=False, drop_path_rate=0.5)
    outputs = []
    for seed in (3, 3, 4):
        nn.seed(seed)
        training.forward()
        outputs.append(training.d.copy())
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2])


def test_other_families_refuse_a_drop_rate():
    with pytest.raises(ValueError, match="ResNet family"):
        build_network(nn.Variable((2, 3, 32, 32)), 10, "mobilenet_v3_small",
                      drop_path_rate=0.1)
