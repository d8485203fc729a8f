"""The recipe's solvers against NumPy implementations of their papers' updates (not of
NNabla's code), with and without weight decay, clipping and loss scaling; exact resume of
their state; the decay groups and the learning-rate unit of each type."""
from __future__ import annotations

import re
import signal
from collections import OrderedDict
from typing import Dict, List

import nnabla as nn
import numpy as np
import pytest
from run_fixtures import checkpoint_names
from train_fixtures import (
    CONFIG,
    EPOCHS,
    PREEMPTED,
    TIMEOUT,
    assert_resumes_exactly,
    epoch_bar_shown,
    run_train,
    start_train,
    train_args,
    values,
    wait_for,
)

from utils.recipe.solvers import (
    AdamWSolverSection,
    LambSolverSection,
    LarsSolverSection,
    LossScaling,
    MomentumSolver,
    MomentumSolverSection,
    NesterovSolverSection,
    Solver,
    is_decayed,
)

SHAPES = OrderedDict([("block/conv/W", (4, 3, 2, 2)), ("block/conv/b", (4,)),
                      ("block/bn/gamma", (1, 4, 1, 1)), ("block/bn/beta", (1, 4, 1, 1)),
                      ("fc/affine/W", (5, 2))])
BASE_LR = 0.01  # absolute for adamw, lamb, lars; per example for momentum and nesterov
EXAMPLES = 8  # examples of an update: the loop hands the solver base_lr * schedule * 8
SCHEDULE = (0.5, 1.0, 0.25)  # the schedule's multiplier of base_lr at steps 1, 2, 3
MOMENTUM = 0.9
SCALE = 8.0  # static loss scale: the gradients arrive multiplied by it

SECTIONS = {
    "momentum": MomentumSolverSection(),
    "nesterov": NesterovSolverSection(exclude_from_decay="batchnorm_and_bias"),
    "adamw": AdamWSolverSection(),
    "adamw-b": AdamWSolverSection(beta1=0.8, beta2=0.99, eps=1e-7, exclude_from_decay="1d"),
    "lamb": LambSolverSection(),
    "lamb-adapt": LambSolverSection(adapt_excluded=True, gamma_l=0.5, gamma_u=2.0,
                                    exclude_from_decay="1d"),
    "lars": LarsSolverSection(),
    "lars-adapt": LarsSolverSection(adapt_excluded=True, coefficient=0.02),
}


def initial_values(seed: int = 0) -> Dict[str, np.ndarray]:
    rng = np.random.RandomState(seed)
    return {name: rng.randn(*shape).astype(np.float32) for name, shape in SHAPES.items()}


def gradients(steps: int = 3, seed: int = 1, size: float = 1.0) -> List[Dict[str, np.ndarray]]:
    rng = np.random.RandomState(seed)
    return [{name: (size * rng.randn(*shape)).astype(np.float32)
             for name, shape in SHAPES.items()} for _ in range(steps)]


def make_params(values: Dict[str, np.ndarray]) -> Dict[str, nn.Variable]:
    params = OrderedDict((name, nn.Variable.from_numpy_array(value.copy(), need_grad=True))
                         for name, value in values.items())
    params["block/bn/mean"] = nn.Variable.from_numpy_array(np.ones((1, 4, 1, 1), np.float32),
                                                           need_grad=False)
    return params


def make_solver(params, section, weight_decay: float, **scaling) -> Solver:
    return Solver(params, section, MOMENTUM, weight_decay, BASE_LR, EXAMPLES,
                  LossScaling(**scaling))


def step(solver: Solver, params, grads: Dict[str, np.ndarray], multiplier: float,
         scale: float = 1.0) -> bool:
    for name, grad in grads.items():
        params[name].g = grad * scale
    solver.set_learning_rate(BASE_LR * multiplier * EXAMPLES)
    return solver.update()


# --------------------------------------------------------------------------- the papers


def norm(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(x * x)))


def reference(section, values, grads, weight_decay: float, clip: float = 0.0):
    """The parameters after the steps, in float64, by the papers' formulas.

    momentum: Polyak's heavy ball with the rate inside (Goyal et al. 2017, eq. 10):
        u = m u + lr (g + wd w); w -= u.
    nesterov: Bengio et al. 2013, eq. 7 (the look-ahead point as the parameters):
        v' = m v - lr (g + wd w); w += -m v + (1 + m) v'.
    adamw: Loshchilov & Hutter 2019, algorithm 2, schedule multiplier eta_t:
        w -= eta_t (alpha m_hat / (sqrt(v_hat) + eps) + wd w), alpha = base_lr.
    lamb: You et al. 2020, algorithm 2: r = m_hat / (sqrt(v_hat) + eps) + wd w;
        w -= lr phi(|w|) / |r| r, phi = clip(., gamma_l, gamma_u); not adapted: Adam's
        step (Kingma & Ba 2015, algorithm 1) w -= lr m_hat / (sqrt(v_hat) + eps).
    lars: You et al. 2017, algorithm 1: local = coefficient |w| / (|g| + wd |w|);
        v = m v + lr local (g + wd w); w -= v; not adapted: v = m v + lr g.
    """
    kind = section.type
    w = {n: v.astype(np.float64) for n, v in values.items()}
    state: Dict[str, Dict[str, np.ndarray]] = {n: {} for n in w}
    for t, (g32, multiplier) in enumerate(zip(grads, SCHEDULE), start=1):
        g = {n: v.astype(np.float64) for n, v in g32.items()}
        total = np.sqrt(sum(np.sum(v * v) for v in g.values()))
        if clip and total > clip:
            g = {n: v * clip / total for n, v in g.items()}
        for n in w:
            decayed = is_decayed(n, w[n].shape, section.exclude_from_decay)
            lam = weight_decay if decayed else 0.0
            adapt = decayed or getattr(section, "adapt_excluded", True)
            s = state[n]
            if kind in ("momentum", "nesterov"):
                lr = BASE_LR * multiplier * EXAMPLES
                before = s.get("v", np.zeros_like(w[n]))
                if kind == "momentum":
                    s["v"] = MOMENTUM * before + lr * (g[n] + lam * w[n])
                    w[n] = w[n] - s["v"]
                else:
                    s["v"] = MOMENTUM * before - lr * (g[n] + lam * w[n])
                    w[n] = w[n] - MOMENTUM * before + (1 + MOMENTUM) * s["v"]
                continue
            lr = BASE_LR * multiplier
            if kind == "lars":
                if adapt:
                    local = section.coefficient * norm(w[n]) / (norm(g[n]) + lam * norm(w[n]))
                    s["v"] = MOMENTUM * s.get("v", 0.0) + lr * local * (g[n] + lam * w[n])
                else:
                    s["v"] = MOMENTUM * s.get("v", 0.0) + lr * g[n]
                w[n] = w[n] - s["v"]
                continue
            b1, b2 = section.beta1, section.beta2
            s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g[n]
            s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g[n] ** 2
            m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
            adam = m_hat / (np.sqrt(v_hat) + section.eps)
            if kind == "adamw":
                eta = multiplier  # lr_t / base_lr
                w[n] = w[n] - eta * (BASE_LR * adam + lam * w[n])
            elif adapt:
                r = adam + lam * w[n]
                phi = min(max(norm(w[n]), section.gamma_l), section.gamma_u)
                w[n] = w[n] - lr * phi / norm(r) * r
            else:
                w[n] = w[n] - lr * adam
    return w


@pytest.mark.parametrize("clip", [0.0, 10.0])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("name", list(SECTIONS))
def test_three_steps_equal_the_papers_update(name, weight_decay, clip):
    """(The clipped gradients are of the unclipped ones' size: the eps of NNabla's Adam and
    AdamW, see the eps test, stays below float32 rounding.)"""
    section = SECTIONS[name]
    if clip:
        section = type(section)(**{**section.__dict__, "clip_grad_norm": clip})
    values, grads = initial_values(), gradients(size=10.0 if clip else 1.0)
    params = make_params(values)
    solver = make_solver(params, section, weight_decay, initial=SCALE)
    for g, multiplier in zip(grads, SCHEDULE):
        assert step(solver, params, g, multiplier, SCALE)
    expected = reference(section, values, grads, weight_decay, clip)
    moved = 0
    for n in SHAPES:
        np.testing.assert_allclose(params[n].d, expected[n], rtol=1e-5, atol=1e-6, err_msg=n)
        moved += not np.array_equal(params[n].d, values[n])
    assert moved == len(SHAPES)
    np.testing.assert_array_equal(params["block/bn/mean"].d, 1.0)  # not trainable
    if clip:  # the clip is active at every step: the unscaled gradients' norm exceeds it
        assert min(np.sqrt(sum(np.sum(v * v) for v in g.values())) for g in grads) > 4 * clip


def test_weight_decay_changes_each_solver_as_its_paper_says():
    """The decay is really applied (a wrong scale of it fails the comparison above): the
    decayed parameters differ with and without it, the excluded ones do not."""
    for name, section in SECTIONS.items():
        runs = []
        for weight_decay in (0.0, 0.05):
            params = make_params(initial_values())
            solver = make_solver(params, section, weight_decay)
            for g, multiplier in zip(gradients(), SCHEDULE):
                step(solver, params, g, multiplier)
            runs.append({n: params[n].d.copy() for n in SHAPES})
        for n in SHAPES:
            decayed = is_decayed(n, SHAPES[n], section.exclude_from_decay)
            assert decayed != np.array_equal(runs[0][n], runs[1][n]), (name, n)


@pytest.mark.parametrize("name", list(SECTIONS))
def test_resume_after_step_two_equals_the_uninterrupted_step_three(name, tmp_path):
    section, grads = SECTIONS[name], gradients()
    params = make_params(initial_values())
    solver = make_solver(params, section, 0.05, initial=SCALE, dynamic=True, growth_interval=2)
    for g, multiplier in zip(grads, SCHEDULE):
        assert step(solver, params, g, multiplier, solver.loss_scale)

    first = make_params(initial_values())
    interrupted = make_solver(first, section, 0.05, initial=SCALE, dynamic=True,
                              growth_interval=2)
    for g, multiplier in zip(grads[:2], SCHEDULE[:2]):
        step(interrupted, first, g, multiplier, interrupted.loss_scale)
    np.savez(tmp_path / "state.npz", **interrupted.state_dict())
    resumed_params = make_params({n: first[n].d.copy() for n in SHAPES})
    resumed = make_solver(resumed_params, section, 0.05, initial=1.0, dynamic=True,
                          growth_interval=2)
    with np.load(tmp_path / "state.npz") as saved:
        resumed.load_state_dict(dict(saved))
    assert resumed.loss_scale == 2 * SCALE  # grown after two good steps
    step(resumed, resumed_params, grads[2], SCHEDULE[2], resumed.loss_scale)
    for n in SHAPES:
        np.testing.assert_array_equal(resumed_params[n].d, params[n].d, err_msg=n)
    final, again = solver.state_dict(), resumed.state_dict()
    assert sorted(final) == sorted(again)
    for key in final:
        np.testing.assert_array_equal(again[key], final[key], err_msg=key)


def test_state_keys_of_each_solver():
    """Momentum's keys are those of the checkpoints written before the solver section; the
    others name NNabla's state entries."""
    expected = {"momentum": {"momentum", "t"}, "nesterov": {"momentum", "t"},
                "adamw": {"mean", "var", "t"}, "lamb": {"mean", "var", "t"},
                "lars": {"v", "momentum", "t"}, "lars-adapt": {"v", "t"}}
    for name, kinds in expected.items():
        state = make_solver(make_params(initial_values()), SECTIONS[name], 0.0).state_dict()
        per_parameter = {k for k in state if "/" in k}
        assert per_parameter == {f"{kind}/{n}" for n in SHAPES for kind in kinds
                                 if kind in ("t",) or _holds(name, kind, n)}, name
        assert {k for k in state if "/" not in k} == {"loss_scale", "good_steps", "steps",
                                                       "skipped_steps"}
    old = MomentumSolver(make_params(initial_values()), MOMENTUM, 1e-4).state_dict()
    assert {k for k in old if "/" in k} == {f"{kind}/{n}" for n in SHAPES
                                           for kind in ("momentum", "t")}


def _holds(name: str, kind: str, parameter: str) -> bool:
    """Whether the solver `name` keeps state `kind` for `parameter` (lars without
    adapt_excluded: Momentum's velocity for the excluded ones, Lars' for the others)."""
    if name != "lars":
        return True
    decayed = is_decayed(parameter, SHAPES[parameter], "batchnorm")
    return kind == ("v" if decayed else "momentum")


@pytest.mark.parametrize("name", list(SECTIONS))
def test_an_overflowing_step_is_skipped_with_dynamic_scaling(name):
    section, grads = SECTIONS[name], gradients()
    params = make_params(initial_values())
    solver = make_solver(params, section, 0.05, initial=SCALE, dynamic=True)
    bad = {n: np.full(s, np.inf, np.float32) for n, s in SHAPES.items()}
    assert not step(solver, params, bad, SCHEDULE[0])
    assert solver.loss_scale == SCALE / 2 and solver.skipped_steps == 1
    for g, multiplier in zip(grads, SCHEDULE):
        assert step(solver, params, g, multiplier, solver.loss_scale)
    expected = reference(section, initial_values(), grads, 0.05)
    for n in SHAPES:
        np.testing.assert_allclose(params[n].d, expected[n], rtol=1e-5, atol=1e-6, err_msg=n)


def test_exclusion_rules():
    assert is_decayed("fc/affine/b", (4,), "batchnorm")
    assert not is_decayed("fc/affine/b", (4,), "batchnorm_and_bias")
    assert not is_decayed("fc/affine/b", (4,), "1d")
    for rule in ("batchnorm", "batchnorm_and_bias", "1d"):
        assert not is_decayed("c/bn/gamma", (1, 4, 1, 1), rule)
        assert not is_decayed("c/bn/beta", (1, 4, 1, 1), rule)
        assert is_decayed("c/conv/W", (4, 3, 1, 1), rule)
    assert not is_decayed("se/fc1/conv/W", (1, 4, 1, 1), "1d")  # one axis longer than 1
    assert is_decayed("se/fc1/conv/W", (1, 4, 1, 1), "batchnorm_and_bias")


def test_the_learning_rate_unit_of_each_type():
    """The loop hands every solver base_lr * schedule * examples; adamw, lamb and lars step
    base_lr * schedule (absolute), momentum and nesterov the rate handed."""
    for name, section in SECTIONS.items():
        solver = make_solver(make_params(initial_values()), section, 0.0)
        solver.set_learning_rate(0.5 * EXAMPLES)
        absolute = section.type in ("adamw", "lamb", "lars")
        assert solver.learning_rate == (0.5 if absolute else 0.5 * EXAMPLES), name


def test_zero_norm_parameters_under_the_trust_ratio():
    """With the paper's trust ratio (adapt_excluded) a parameter of norm 0 never moves under
    lamb (phi(0) = 0 with gamma_l 0, NNabla as the paper); under lars NNabla steps it by
    the global rate instead (|w| < eps), where the paper's local rate is 0. The plain step
    (the default) moves both."""
    grads = gradients(1)
    for section, moves in ((LambSolverSection(adapt_excluded=True), False),
                           (LarsSolverSection(adapt_excluded=True), True),
                           (LambSolverSection(), True), (LarsSolverSection(), True)):
        values = {**initial_values(), "block/bn/beta": np.zeros((1, 4, 1, 1), np.float32)}
        params = make_params(values)
        step(make_solver(params, section, 0.0), params, grads[0], 1.0)
        assert moves == bool(np.any(params["block/bn/beta"].d != 0)), section
        if section.type == "lars" and moves:
            np.testing.assert_allclose(params["block/bn/beta"].d,
                                       -BASE_LR * grads[0]["block/bn/beta"], rtol=1e-6)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="adamw needs base_lr > 0"):
        Solver(make_params(initial_values()), AdamWSolverSection(), MOMENTUM, 0.0, 0.0)


def test_nnabla_adds_adams_eps_before_the_bias_correction():
    """The documented difference of NNabla's Adam and AdamW from the paper: with gradients
    near eps their step is the paper's with eps / sqrt(1 - beta2^t) in place of eps (for
    LAMB's own layers NNabla places eps as the paper does)."""
    section = AdamWSolverSection(eps=1e-4)
    values, grads = initial_values(), gradients(size=1e-4)
    params = make_params(values)
    solver = make_solver(params, section, 0.0)
    for g, multiplier in zip(grads, SCHEDULE):
        step(solver, params, g, multiplier)
    papers = reference(section, values, grads, 0.0)
    moved = {n: params[n].d - values[n] for n in SHAPES}
    assert max(np.max(np.abs(moved[n] - (papers[n] - values[n]))) for n in SHAPES) > 1e-4
    w = {n: v.astype(np.float64) for n, v in values.items()}
    m = {n: 0.0 for n in w}
    v = {n: 0.0 for n in w}
    for t, (g, multiplier) in enumerate(zip(grads, SCHEDULE), start=1):
        for n in w:
            m[n] = 0.9 * m[n] + 0.1 * g[n]
            v[n] = 0.999 * v[n] + 0.001 * g[n].astype(np.float64) ** 2
            eps_t = section.eps / np.sqrt(1 - 0.999**t)
            m_hat, v_hat = m[n] / (1 - 0.9**t), v[n] / (1 - 0.999**t)
            w[n] = w[n] - BASE_LR * multiplier * m_hat / (np.sqrt(v_hat) + eps_t)
    for n in SHAPES:
        np.testing.assert_allclose(params[n].d, w[n], rtol=1e-5, atol=1e-7, err_msg=n)


# --------------------------------------------------------------------------- demo-set runs

# Absolute step sizes (see utils.recipe.solvers), chosen for these 2-class, 3-epoch runs; the
# decays are published recipes' (DeiT's AdamW: PyTorch's 0.05, which is 0.05 * base_lr in the
# paper's terms that ours follow; LAMB of "ResNet strikes back" A2: 0.02, the same in both).
RUNS = {"adamw": ("0.002", "solver: {type: adamw, exclude_from_decay: 1d}\n", "1.0e-4"),
        "lamb": ("0.01", "solver: {type: lamb, exclude_from_decay: 1d, clip_grad_norm: 5}\n",
                 "0.02")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_a_demo_run_learns_and_resumes_mid_run_exactly(setup, tmp_path, kind):
    """Three epochs of mobilenet_v3_small on the demo subset with the solver, with dynamic
    loss scaling and two accumulated batches an update: the training loss falls, and a run
    stopped by SIGTERM mid-epoch 1 and resumed ends as the uninterrupted one (parameters,
    solver state, series)."""
    base_lr, section, weight_decay = RUNS[kind]
    config = tmp_path / f"{kind}.yaml"
    config.write_text(CONFIG.format(epochs=EPOCHS, mixup=0, base_lr=base_lr).replace(
        "weight_decay: 5.0e-05", f"weight_decay: {weight_decay}") + section)
    extra = ("--dynamic-loss-scaling", "--accumulate-steps", 2, "-b", 4)
    reference = tmp_path / "reference"
    result = run_train(*train_args(setup, reference, *extra, config=config))
    assert result.returncode == 0, result.stderr
    loss = values(reference, "Train-loss")
    assert loss[-1] < 0.9 * loss[0], loss  # adamw 0.811 -> 0.631, lamb 0.700 -> 0.566
    error = values(reference, "Train-error")
    assert error[-1] < error[0], error  # adamw 0.40 -> 0.28, lamb 0.46 -> 0.26
    saved = (reference / "cfg" / config.name).read_text()
    assert f"type: {kind}" in saved

    monitor = tmp_path / "stopped"
    args = train_args(setup, monitor, *extra, config=config)
    log = tmp_path / "first.log"
    process = start_train(args, log)
    wait_for(epoch_bar_shown(log, 1), process, "epoch 1")
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED, log.read_text()
    stop = checkpoint_names(monitor)[0]
    assert re.fullmatch(r"checkpoint_e0001_i0*[1-9]\d*\.npz", stop), stop  # mid-epoch 1
    assert_resumes_exactly(args, monitor / "checkpoints" / stop, reference, monitor)
