"""nblib.experiments.theorem1: a power iteration that did not converge is recorded instead of warned; every model
conv is
checked, with seeded weights."""
import warnings

import torch

from nblib.experiments import theorem1


def test_unconverged_power_iteration_is_recorded_not_warned():
    torch.set_default_dtype(torch.float64)
    try:
        layers = theorem1.random_conv_layers(100, seed=0, max_hw=9)  # notebook 01's smoke layers
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            rows = [theorem1.check_against_dense(c, hw) for c, hw in layers[50:55]]
    finally:
        torch.set_default_dtype(torch.float32)
    # layer 52 has close top singular values: the block power iteration certifies it now
    assert [r["power_converged"] for r in rows] == [True] * 5
    assert all(r["power"] <= r["sigma"] * (1 + 1e-12) for r in rows)  # a lower bound, measured by err_power
    assert all(r["err_power"] < 1e-9 for r in rows)


def test_a_power_iteration_that_could_not_certify_is_recorded_not_warned(monkeypatch):
    real = theorem1.norms.conv2d_norm

    def uncertified(conv, hw, p, **kwargs):
        if p == 2 and "max_iter" in kwargs:  # the power iteration of check_against_dense
            warnings.warn("power iteration stopped at max_iter: a lower bound", RuntimeWarning)
        return real(conv, hw, p, **kwargs)

    monkeypatch.setattr(theorem1.norms, "conv2d_norm", uncertified)
    conv, hw = theorem1.random_conv_layers(1, seed=0, max_hw=6)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        row = theorem1.check_against_dense(conv, hw)
    assert row["power_converged"] is False


def test_model_conv_rows_cover_every_conv_and_repeat_exactly():
    from nblib.experiments.theorem1 import all_convs_checked, model_conv_rows

    rows = model_conv_rows(["smallcnn"], seed=3)
    assert len(rows) == rows.convs_in_model.iloc[0] == 4 and all_convs_checked(rows)
    assert (rows[["err_l1", "err_linf"]].max() < 1e-12).all()
    assert rows.equals(model_conv_rows(["smallcnn"], seed=3))  # seeded weights: the same numbers every run
    assert not all_convs_checked(rows.iloc[1:])  # a skipped conv is noticed
