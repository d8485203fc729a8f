"""The solver wrapper: weight-decay rule, momentum maths, loss scaling, state round trips."""
from collections import OrderedDict

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import nnabla.solvers as S
import numpy as np
import pytest

from utils.recipe.schedules import solver_learning_rate
from utils.recipe.solvers import MomentumSolver, is_decayed

W0 = np.array([1.0, 2.0], dtype=np.float32)
G = np.array([0.5, -0.5], dtype=np.float32)
NAMES = ["conv1/conv/W", "conv1/conv/b", "conv1/bn/gamma", "conv1/bn/beta", "fc/affine/b"]


def make_params(values=W0):
    params = OrderedDict()
    for name in NAMES:
        params[name] = nn.Variable.from_numpy_array(values.copy(), need_grad=True)
    params["conv1/bn/mean"] = nn.Variable.from_numpy_array(values.copy(), need_grad=False)
    return params


def set_grads(params, grad):
    for var in params.values():
        if var.need_grad:
            var.g = grad


def test_decay_rule_on_names():
    assert is_decayed("res2/layer1/se/fc1/conv/b")
    assert is_decayed("fc/affine/b")
    assert is_decayed("conv1/conv/W")
    assert not is_decayed("conv1/bn/gamma")
    assert not is_decayed("conv1/bn/beta")


def test_parameter_order_and_groups_on_a_network():
    x = nn.Variable((2, 3, 8, 8))
    h = PF.convolution(x, 4, (3, 3), name="conv1")
    h = PF.batch_normalization(h, name="bn1")
    h = F.global_average_pooling(h)
    PF.affine(h, 5, name="fc")
    params = nn.get_parameters(grad_only=False)
    solver = MomentumSolver(params, momentum=0.9, weight_decay=1e-4)
    trainable = [n for n, v in params.items() if v.need_grad]
    assert [id(v) for v in solver.parameters()] == [id(params[n]) for n in trainable]
    assert "bn1/mean" not in trainable
    assert [n for n in trainable if is_decayed(n)] == ["conv1/conv/W", "conv1/conv/b",
                                                       "fc/affine/W", "fc/affine/b"]


def test_one_update_decays_all_but_batch_norm_gamma_and_beta():
    params = make_params()
    solver = MomentumSolver(params, momentum=0.9, weight_decay=0.01, learning_rate=0.1)
    set_grads(params, G)
    assert solver.update()
    decayed = W0 - 0.1 * (G + 0.01 * W0)  # (0.949, 2.048)
    plain = W0 - 0.1 * G  # (0.95, 2.05)
    for name in ["conv1/conv/W", "conv1/conv/b", "fc/affine/b"]:
        np.testing.assert_allclose(params[name].d, decayed, rtol=1e-6)
    for name in ["conv1/bn/gamma", "conv1/bn/beta"]:
        np.testing.assert_allclose(params[name].d, plain, rtol=1e-6)
    np.testing.assert_array_equal(params["conv1/bn/mean"].d, W0)
    assert solver.steps == 1


def test_momentum_over_two_steps_with_learning_rate_change():
    params = make_params()
    solver = MomentumSolver(params, momentum=0.9, weight_decay=0.0, learning_rate=0.1)
    g2 = np.array([1.0, 0.25], dtype=np.float32)
    set_grads(params, G)
    solver.update()
    solver.set_learning_rate(0.05)
    assert solver.learning_rate == 0.05
    solver.zero_grad()
    np.testing.assert_array_equal(params["conv1/conv/W"].g, 0)
    set_grads(params, g2)
    solver.update()
    v1 = 0.1 * G
    v2 = 0.9 * v1 + 0.05 * g2
    expected = W0 - v1 - v2
    for name in NAMES:
        np.testing.assert_allclose(params[name].d, expected, rtol=1e-6)


def run_two_steps(loss_scale, dynamic=False):
    params = make_params()
    solver = MomentumSolver(params, 0.875, 2.0**-15, 0.2, loss_scale, dynamic)
    for grad in (G, 3 * G):
        solver.zero_grad()
        set_grads(params, grad * loss_scale)
        solver.update()
    return {name: var.d.copy() for name, var in params.items()}


@pytest.mark.parametrize("dynamic", [False, True])
def test_loss_scaling_gives_the_unscaled_update(dynamic):
    reference = run_two_steps(1.0)
    scaled = run_two_steps(128.0, dynamic)
    for name in reference:
        np.testing.assert_array_equal(scaled[name], reference[name])


def test_dynamic_scaling_skips_non_finite_steps_halves_and_grows():
    params = make_params()
    solver = MomentumSolver(params, 0.9, 0.01, 0.1, loss_scale=64.0, dynamic_loss_scaling=True,
                            growth_interval=2)
    before = solver.state_dict()
    bad = G.copy()
    bad[1] = np.inf
    set_grads(params, G)
    params["conv1/bn/beta"].g = bad
    assert solver.update() is False
    for name in NAMES:
        np.testing.assert_array_equal(params[name].d, W0)
    np.testing.assert_array_equal(solver.state_dict()["momentum/conv1/conv/W"],
                                  before["momentum/conv1/conv/W"])
    assert (solver.loss_scale, solver.skipped_steps, solver.steps) == (32.0, 1, 0)

    params["conv1/conv/W"].g = np.array([np.nan, 0.0], dtype=np.float32)
    assert solver.update() is False
    assert (solver.loss_scale, solver.skipped_steps) == (16.0, 2)

    for expected_scale in (16.0, 32.0, 32.0, 64.0):
        set_grads(params, G * solver.loss_scale)
        assert solver.update() is True
        assert solver.loss_scale == expected_scale
    assert (solver.steps, solver.skipped_steps) == (4, 2)


def test_dynamic_scale_does_not_fall_below_the_minimum():
    params = make_params()
    solver = MomentumSolver(params, 0.9, 0.0, 0.1, loss_scale=2.0, dynamic_loss_scaling=True,
                            min_loss_scale=1.0)
    set_grads(params, np.array([np.inf, 0], dtype=np.float32))
    for _ in range(3):
        solver.update()
    assert solver.loss_scale == 1.0


def test_static_scaling_does_not_check_gradients():
    params = make_params()
    solver = MomentumSolver(params, 0.9, 0.0, 0.1, loss_scale=8.0)
    set_grads(params, np.array([np.inf, 0], dtype=np.float32))
    assert solver.update() is True
    assert solver.skipped_steps == 0 and solver.loss_scale == 8.0


def test_state_round_trip_gives_identical_later_updates(tmp_path):
    params_a = make_params()
    solver_a = MomentumSolver(params_a, 0.9, 0.01, 0.1, loss_scale=4.0, dynamic_loss_scaling=True,
                              growth_interval=3)
    for grad in (G, -2 * G):
        set_grads(params_a, grad * solver_a.loss_scale)
        solver_a.update()
    np.savez(tmp_path / "state.npz", **solver_a.state_dict())
    with np.load(tmp_path / "state.npz") as stored:
        state = dict(stored)

    params_b = make_params()
    for name, var in params_a.items():
        params_b[name].d = var.d
    solver_b = MomentumSolver(params_b, 0.9, 0.01, 0.1, loss_scale=1.0, dynamic_loss_scaling=True,
                              growth_interval=3)
    solver_b.load_state_dict(state)
    assert (solver_b.loss_scale, solver_b.good_steps, solver_b.steps) == (4.0, 2, 2)

    third = np.array([0.3, 0.7], dtype=np.float32)
    for params, solver in ((params_a, solver_a), (params_b, solver_b)):
        solver.zero_grad()
        set_grads(params, third * solver.loss_scale)
        solver.update()
    for name in params_a:
        np.testing.assert_array_equal(params_b[name].d, params_a[name].d)
    assert solver_b.loss_scale == solver_a.loss_scale == 8.0
    for key, value in solver_a.state_dict().items():
        np.testing.assert_array_equal(solver_b.state_dict()[key], value)


def test_state_of_other_parameters_is_rejected():
    state = MomentumSolver(make_params(), 0.9, 0.0).state_dict()
    other = OrderedDict(w=nn.Variable.from_numpy_array(W0.copy(), need_grad=True))
    with pytest.raises(ValueError, match="missing momentum/w"):
        MomentumSolver(other, 0.9, 0.0).load_state_dict(state)
    state["momentum/conv1/conv/W"] = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        MomentumSolver(make_params(), 0.9, 0.0).load_state_dict(state)


def test_identical_to_the_official_summed_gradient_scheme():
    """Mean gradients + lr * global_batch == official summed, scaled gradients (section 4)."""
    lr_pe, batch, workers, scale, wd, momentum = 0.001, 6, 4, 128.0, 2.0**-15, 0.875
    rng = np.random.RandomState(1)
    steps = [rng.randn(workers, 2).astype(np.float32) for _ in range(2)]  # per-worker means

    ours = make_params()
    solver = MomentumSolver(ours, momentum, wd, loss_scale=scale)
    solver.set_learning_rate(solver_learning_rate(lr_pe, batch * workers))
    official = make_params()
    decayed = {n: v for n, v in official.items() if v.need_grad and is_decayed(n)}
    plain = {n: v for n, v in official.items() if v.need_grad and not is_decayed(n)}
    solvers = [S.Momentum(lr_pe * batch / scale, momentum) for _ in range(2)]
    solvers[0].set_parameters(decayed)
    solvers[1].set_parameters(plain)
    for grads in steps:
        set_grads(ours, grads.mean(axis=0) * scale)  # all-reduce with division
        solver.update()
        set_grads(official, (grads * scale).sum(axis=0))  # all-reduce sum
        solvers[0].weight_decay(wd * scale * workers)
        for s in solvers:
            s.update()
    for name in NAMES:
        np.testing.assert_allclose(ours[name].d, official[name].d, rtol=1e-6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="no trainable"):
        MomentumSolver({}, 0.9, 0.0)
    with pytest.raises(ValueError, match="loss_scale"):
        MomentumSolver(make_params(), 0.9, 0.0, loss_scale=0)
