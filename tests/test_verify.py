"""nblib.verify.check_against_dense records a power iteration that did not converge instead of warning."""
import warnings

import torch

from nblib import verify


def test_unconverged_power_iteration_is_recorded_not_warned():
    torch.set_default_dtype(torch.float64)
    try:
        layers = verify.random_conv_layers(100, seed=0, max_hw=9)  # notebook 01's smoke layers
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rows = [verify.check_against_dense(c, hw) for c, hw in layers[50:55]]
    finally:
        torch.set_default_dtype(torch.float32)
    assert [r["power_converged"] for r in rows] == [True, True, False, True, True]  # layer 52: close top sigmas
    assert all(r["power"] <= r["sigma"] * (1 + 1e-12) for r in rows)  # a lower bound, measured by err_power
    assert 0 < rows[2]["err_power"] < 1e-6
