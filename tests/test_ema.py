"""Weight EMA: the averaging formula, swapping in and out, exact state round trip."""
import nnabla as nn
import nnabla.parametric_functions as PF
import numpy as np
import pytest

from utils.train.ema import WeightEma


def small_params():
    x = nn.Variable((2, 3))
    with nn.parameter_scope("fc"):
        PF.affine(x, 4)
    return nn.get_parameters(grad_only=False)


def test_average_follows_the_formula_and_swaps_cleanly():
    params = small_params()
    w = params["fc/affine/W"]
    start = w.d.copy()
    ema = WeightEma(params, 0.9)
    steps = [start + 1.0, start + 3.0]
    for value in steps:
        w.d = value
        ema.update()
    expected = 0.9 * (0.9 * start + 0.1 * steps[0]) + 0.1 * steps[1]
    with ema.swapped_in():
        np.testing.assert_allclose(w.d, expected, rtol=1e-6)
    np.testing.assert_array_equal(w.d, steps[1])
    assert not np.allclose(ema.state_dict()["fc/affine/W"], w.d)


def test_state_round_trip_gives_identical_future():
    params = small_params()
    w = params["fc/affine/W"]
    a = WeightEma(params, 0.99)
    w.d = w.d + 2.0
    a.update()
    b = WeightEma(params, 0.99)
    b.load_state_dict(a.state_dict())
    w.d = w.d - 5.0
    a.update()
    b.update()
    for name in params:
        np.testing.assert_array_equal(a.state_dict()[name], b.state_dict()[name])
    with pytest.raises(ValueError, match="lacks"):
        b.load_state_dict({})
    with pytest.raises(ValueError, match="decay"):
        WeightEma(params, 1.0)


def test_average_is_float32_under_a_half_training_context(half_context):
    """-t half makes the default context cudnn:half; the CPU's half context reaches the same
    NdArray arithmetic. In float16 a decay of 0.9998 is 1.0: the average went astray. The
    swapped-in weights (validated, saved as param_ema_NNN.h5) are that float32 average."""
    x = nn.Variable((1, 4))
    with nn.parameter_scope("fc"):
        PF.affine(x, 1, with_bias=False)
    params = nn.get_parameters()
    w = params["fc/affine/W"]
    w.d = 0.0
    ema = WeightEma(params, 0.9998)
    values = np.random.default_rng(0).uniform(0.0, 1.0, (1000, 4, 1))
    reference = np.zeros((4, 1))
    for value in values:
        w.d = value
        ema.update()
        reference = 0.9998 * reference + 0.0002 * value
    # about one float32 rounding per update at most (float16 rounds 8192 times coarser)
    rtol = len(values) * np.finfo(np.float32).eps
    np.testing.assert_allclose(ema.state_dict()["fc/affine/W"], reference, rtol=rtol)
    with ema.swapped_in():
        assert w.d.dtype == np.float32
        np.testing.assert_allclose(w.d, reference, rtol=rtol)
    np.testing.assert_array_equal(w.d, values[-1])
