"""nblib.perf.benchmark: the cost tables (norm decay, torchvision models, Table 1) against scripted timings.

``time_calls`` is replaced by a fake that runs the timed callable once, recognises it (an SGD step, a
``NormDecay.step``, a norm table, ...) and returns a scripted number of seconds, so every column of a table is
checked against a known value: a timing of the wrong callable, a swapped column or a wrong ratio fails."""
import math

import pytest
import torch
import torch.nn as nn

from nblib.models import build
from nblib.perf import benchmark
from nblib.training.regularizers import NormDecay

pytestmark = pytest.mark.usefixtures("one_thread")


def scripted_time_calls(monkeypatch, seconds, classify):
    """Replace ``benchmark.time_calls``: run ``fn`` once, name it with ``classify(fn, result)``, answer
    ``(seconds[name], runs)``; returns the list of (name, runs) calls."""
    calls = []

    def fake(fn, runs, budget_s=math.inf, device="cpu", warmup=1):
        name = classify(fn, fn())
        calls.append((name, runs))
        return seconds[name], runs

    monkeypatch.setattr(benchmark, "time_calls", fake)
    return calls


def is_norm_decay_step(fn) -> bool:
    return isinstance(getattr(fn, "__self__", None), NormDecay) and fn.__name__ == "step"


def test_norm_decay_cost_reports_the_scripted_timings(monkeypatch):
    seconds = {"sgd": 0.25, "nd": 0.01}
    calls = scripted_time_calls(monkeypatch, seconds,
                                lambda fn, _: ("nd" if fn.__self__.p == math.inf else "nd-l1")
                                if is_norm_decay_step(fn) else {"sgd_step": "sgd"}[fn.__name__])
    t = benchmark.norm_decay_cost(["smallcnn"], batch_size=4, sgd_runs=2, nd_runs=7, n_train=10)
    row = t.iloc[0]
    assert sorted(calls) == [("nd", 7), ("sgd", 2)]  # each step timed once, with its own number of runs, l_inf
    convs_and_linears = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in build("smallcnn").modules())
    assert row.model == "smallcnn" and row.n_layers == convs_and_linears == 6  # every layer regularised
    assert (row.sgd_s, row.nd_s) == (0.25, 0.01)
    assert row.overhead == pytest.approx(0.04)  # 0.01 s of norm decay per 0.25 s SGD step
    assert row.epoch_s == pytest.approx(0.75)  # ceil(10 / 4) = 3 steps per epoch


def test_model_norm_cost_reports_the_scripted_timings(monkeypatch):
    pytest.importorskip("torchvision")
    import nblib.norms

    real_norms = nblib.norms.layer_norms
    monkeypatch.setattr(nblib.norms, "layer_norms", lambda model, shape, p: ("table", p, real_norms(model, shape, p)))

    def classify(fn, result):
        if isinstance(result, tuple):  # a norm table, tagged with its p
            return {math.inf: "linf", 1: "l1"}[result[1]]
        if isinstance(result, torch.Tensor):
            return "floor"
        if is_norm_decay_step(fn):
            return "nd"
        return {"shapes": "shapes", "sgd_step": "sgd"}[fn.__name__]

    seconds = dict(shapes=0.001, linf=0.002, l1=0.003, floor=0.004, nd=0.005, sgd=0.006)
    calls = scripted_time_calls(monkeypatch, seconds, classify)
    t = benchmark.model_norm_cost(["mobilenet_v3_small"], image_size=64, batch_size=1, runs=4, sgd_runs=1)
    row = t.iloc[0]
    assert sorted(name for name, _ in calls) == sorted(seconds)  # each callable timed once
    assert dict(calls)["sgd"] == 1 and dict(calls)["linf"] == 4
    assert row.model == "mobilenet_v3_small" and row.n_layers == 54  # 52 convs + 2 linear
    assert [row.shapes_ms, row.linf_ms, row.l1_ms, row.floor_ms, row.nd_ms, row.sgd_ms] == \
        pytest.approx([1, 2, 3, 4, 5, 6])
    assert row.linf_over_floor == pytest.approx(0.5) and row.nd_over_sgd == pytest.approx(5 / 6)


def test_table1_records_a_method_that_refuses_the_size_as_not_measured():
    """Gram iteration refuses Table 1's largest kernel (over its memory cap): not measured, with the reason,
    and the next entries still run (the paper profile's notebook 02 reaches that kernel)."""
    from nblib.perf.benchmark import TABLE1_KERNELS, run_table1

    t = run_table1(methods=("gram", "l1"), kernels=[TABLE1_KERNELS[-1]], runs=1, budget_s=0.1, progress=False)
    gram, l1 = t.iloc[0], t.iloc[1]
    assert not gram.measured and math.isnan(gram.sec_per_100) and "Gram iteration" in gram.note
    assert l1.measured and l1.value > 0 and l1.note == ""
