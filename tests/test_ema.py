"""Weight EMA: the averaging formula, swapping in and out, exact state round trip."""
import nnabla as nn
import nnabla.parametric_functions as PF
import numpy as np
import pytest

from utils.ema import WeightEma


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
