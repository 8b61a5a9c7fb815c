"""nblib.perf.benchmark.norm_decay_cost: the table the norm-decay cost benchmark prints (shape, not speed)."""
import math

import pytest

from nblib.perf.benchmark import norm_decay_cost

pytestmark = pytest.mark.usefixtures("one_thread")


def test_norm_decay_cost_table():
    t = norm_decay_cost(["smallcnn"], batch_size=4, sgd_runs=1, nd_runs=1, n_train=10)
    row = t.iloc[0]
    assert row.model == "smallcnn" and row.n_layers == 6  # 4 convs + 2 linear: every layer regularised
    assert row.sgd_s > 0 and row.nd_s > 0
    assert math.isclose(row.overhead, row.nd_s / row.sgd_s)
    assert math.isclose(row.epoch_s, row.sgd_s * 3)  # ceil(10 / 4) steps per epoch


def test_model_norm_cost_table():
    pytest.importorskip("torchvision")
    from nblib.perf.benchmark import model_norm_cost

    t = model_norm_cost(["mobilenet_v3_small"], image_size=64, batch_size=1, runs=1, sgd_runs=1)
    row = t.iloc[0]
    assert row.model == "mobilenet_v3_small" and row.n_layers == 54  # 52 convs + 2 linear
    assert min(row.shapes_ms, row.linf_ms, row.l1_ms, row.floor_ms, row.nd_ms, row.sgd_ms) > 0
    assert math.isclose(row.linf_over_floor, row.linf_ms / row.floor_ms)
    assert math.isclose(row.nd_over_sgd, row.nd_ms / row.sgd_ms)


def test_table1_records_a_method_that_refuses_the_size_as_not_measured():
    """Gram iteration refuses Table 1's largest kernel (over its memory cap): not measured, with the reason,
    and the next entries still run (the paper profile's notebook 02 reaches that kernel)."""
    from nblib.perf.benchmark import TABLE1_KERNELS, run_table1

    t = run_table1(methods=("gram", "l1"), kernels=[TABLE1_KERNELS[-1]], runs=1, budget_s=0.1, progress=False)
    gram, l1 = t.iloc[0], t.iloc[1]
    assert not gram.measured and math.isnan(gram.sec_per_100) and "Gram iteration" in gram.note
    assert l1.measured and l1.value > 0 and l1.note == ""
