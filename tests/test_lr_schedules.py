"""Learning-rate schedules: the official per-example values of each recipe, per-iteration mode."""
import math

import numpy as np
import pytest
from paths import CFG

from utils.recipe.config import load_config
from utils.recipe.schedules import (
    CosineSchedulerConfig,
    EpochCosineSchedule,
    EpochStepSchedule,
    LearningRateSchedule,
    StepSchedulerConfig,
    build_schedule,
    solver_learning_rate,
)


def recipe(name, iters_per_epoch=1):
    return build_schedule(load_config(CFG / f"{name}.yaml").lr_scheduler, iters_per_epoch)


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 6.5104e-05), (4, 3.2552e-04), (30, 3.90625e-05), (60, 3.90625e-06), (80, 3.90625e-07),
     (89, 3.90625e-07)]
    + [(e, 3.90625e-04) for e in range(5, 30)],
)
def test_step90(epoch, expected):
    assert recipe("step90")(epoch) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 6.25e-05), (15, 1e-3), (16, 1e-3), (17, 9.9955e-4), (50, 5.6351e-4), (89, 4.505e-7)],
)
def test_cos90(epoch, expected):
    assert recipe("cos90")(epoch) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("epoch, expected", [(0, 1e-3), (5, 5e-4), (9, 2.447e-5)])
def test_finetune10(epoch, expected):
    assert recipe("finetune10")(epoch) == pytest.approx(expected, rel=1e-3)


def test_step_warmup_without_legacy_form():
    schedule = EpochStepSchedule(base_lr=1.0, warmup_epochs=4)
    assert [schedule(e) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_past_the_end_is_zero_when_warmup_covers_training():
    schedule = EpochCosineSchedule(base_lr=1.0, epochs=3, warmup_epochs=16)
    assert schedule(2) == pytest.approx(3 / 16)
    assert schedule(16) == 0.0


def test_cosine_decays_to_min_lr():
    schedule = EpochCosineSchedule(base_lr=1.0, epochs=12, warmup_epochs=2, min_lr=0.1)
    assert [schedule(e) for e in (0, 1)] == [0.5, 1.0]  # the warm-up does not see it
    assert schedule(2) == 1.0
    assert schedule(7) == pytest.approx(0.55)  # half-way: the mean of base_lr and min_lr
    assert schedule(12) == schedule(40) == pytest.approx(0.1)
    official = EpochCosineSchedule(base_lr=0.001, epochs=90, warmup_epochs=16)
    cosine = [0.001 * 0.5 * (1.0 + math.cos(math.pi * ((e - 16) / 74))) for e in range(16, 90)]
    assert [official(e) for e in range(16, 90)] == cosine  # min_lr 0: exactly the official


def test_per_epoch_mode_is_constant_within_an_epoch():
    schedule = recipe("cos90", iters_per_epoch=100)
    assert {schedule(17, i) for i in range(100)} == {schedule(17)}


def test_per_iteration_option_leaves_integer_epochs_unchanged():
    base = EpochCosineSchedule(base_lr=0.001, epochs=90, warmup_epochs=16)
    per_epoch = LearningRateSchedule(base, iters_per_epoch=10)
    per_iter = LearningRateSchedule(base, iters_per_epoch=10, per_iteration=True)
    for epoch in range(90):
        assert per_iter(epoch, 0) == per_epoch(epoch)
    step = EpochStepSchedule(base_lr=0.1 / 256, warmup_epochs=5, legacy_warmup=True)
    for epoch in range(90):
        assert LearningRateSchedule(step, 7, True)(epoch) == step(epoch)


def test_per_iteration_values_at_fractional_epochs():
    cosine = build_schedule(CosineSchedulerConfig(EpochCosineSchedule(0.001, 90, 16), True), 4)
    assert cosine.position(17, 2) == 17.5
    assert cosine(17, 2) == pytest.approx(0.001 * 0.5 * (1 + math.cos(math.pi * 1.5 / 74)))
    assert cosine(0, 2) == pytest.approx(0.001 * 1.5 / 16)
    # The ramp is capped at base_lr (it would exceed it in the last warm-up epoch).
    assert cosine(15, 2) == pytest.approx(0.001)

    step = build_schedule(
        StepSchedulerConfig(EpochStepSchedule(0.1 / 256, (30, 60, 80), 0.1, 5, True), True), 2
    )
    assert step(0, 1) == pytest.approx(0.1 / 256 * 1.5 / 6)
    assert step(29, 1) == pytest.approx(0.1 / 256)
    assert step(30, 1) == pytest.approx(0.1 / 256 * 0.1)


def test_per_iteration_schedule_is_continuous_and_monotone_in_decay():
    schedule = recipe("cos90", iters_per_epoch=50)
    schedule.per_iteration = True
    values = np.array([schedule(e, i) for e in range(90) for i in range(50)])
    assert values.max() == pytest.approx(0.001)
    peak = int(np.argmax(values >= 0.001 * (1 - 1e-12)))
    assert np.all(np.diff(values[:peak + 1]) > 0)
    assert np.all(np.diff(values[16 * 50:]) < 0)
    assert np.abs(np.diff(values)).max() < 0.001 / 16 / 50 * 1.01


def test_iters_per_epoch_must_be_positive():
    with pytest.raises(ValueError, match="iters_per_epoch"):
        LearningRateSchedule(EpochCosineSchedule(0.001, 90), iters_per_epoch=0)


def test_solver_learning_rate_matches_the_official_summed_gradient_update():
    """Mean gradients with lr * global_batch == official summed scaled gradients."""
    lr_per_example, batch_per_worker, n_workers, scale, wd = 0.001, 192, 4, 128.0, 2.0**-15
    rng = np.random.RandomState(0)
    w = rng.randn(5)
    worker_mean_grads = rng.randn(n_workers, 5)  # each worker's batch-mean gradient

    ours = solver_learning_rate(lr_per_example, batch_per_worker * n_workers) * (
        worker_mean_grads.mean(axis=0) + wd * w
    )
    official_grad = (scale * worker_mean_grads).sum(axis=0)  # backward(scale), summed
    official = lr_per_example * batch_per_worker / scale * (
        official_grad + wd * scale * n_workers * w
    )
    np.testing.assert_allclose(ours, official, rtol=1e-12)
    assert solver_learning_rate(0.001, 256) == pytest.approx(0.256)


def test_step_schedule_edges_a_decay_inside_warm_up_and_fractional_epochs():
    """At epoch W the warm-up is over, so a decay due by then applies; a fractional epoch in
    the last warm-up epoch is capped at base_lr."""
    schedule = EpochStepSchedule(base_lr=1.0, warmup_epochs=2, decay_at=(2,), decay_rate=0.5)
    assert [schedule(e) for e in (0, 1, 2)] == [0.5, 1.0, 0.5]
    assert EpochStepSchedule(base_lr=1.0, warmup_epochs=4)(3.5) == 1.0


@pytest.mark.parametrize("epochs, expected", [(4, [0.0, 0.0]), (5, [1.0, 0.0])])
def test_cosine_with_a_decay_of_zero_or_one_epoch(epochs, expected):
    schedule = EpochCosineSchedule(base_lr=1.0, epochs=epochs, warmup_epochs=4)
    assert [schedule(4), schedule(5)] == pytest.approx(expected, abs=1e-12)


def test_the_schedule_is_per_epoch_unless_asked_and_starts_an_epoch_at_its_first_iteration():
    cosine = EpochCosineSchedule(base_lr=1.0, epochs=10, warmup_epochs=0)
    assert LearningRateSchedule(cosine, 10)(2, 5) == cosine(2)
    per_iteration = LearningRateSchedule(cosine, 10, per_iteration=True)
    assert per_iteration.position(3) == 3.0 and per_iteration(3) == cosine(3)
    assert per_iteration.position(3, 5) == 3.5
