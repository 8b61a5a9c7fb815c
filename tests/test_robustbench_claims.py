"""Notebook 06's claims (nblib.claims.robustbench) on synthetic tables, and its experiment on one random-weight
zoo architecture (offline; skipped without the optional extra)."""
import numpy as np
import pandas as pd
import pytest

from nblib.claims import FAILS, HOLDS, UNTESTABLE
from nblib.claims.robustbench import MIN_MODELS, RANDOM, norms_vs_robust_accuracy, robust_vs_standard

PAIRS = pd.DataFrame([dict(threat_model="Linf", entry="Robust", standard="Standard")])


def norms(scale: float, n: int = 12, entries=("Robust",)) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = rng.uniform(1, 10, n)
    rows = [dict(key="Linf/Standard", layer=f"l{i}", linf=v) for i, v in enumerate(base)]
    for e in entries:
        rows += [dict(key=f"Linf/{e}", layer=f"l{i}", linf=v * scale) for i, v in enumerate(base)]
        rows.append(dict(key=f"Linf/{e}", layer="unused", linf=np.nan))  # a row without a norm is left out
    rows.append(dict(key="Linf/Standard", layer="unused", linf=np.nan))
    return pd.DataFrame(rows)


def test_robust_vs_standard_decides_on_published_weights_only():
    """One pair: its own verdict from the median layer ratio; the claim over pairs needs at least 5 networks
    (a one-sided sign test over one network can never reach 0.05)."""
    assert [v.outcome for v in robust_vs_standard(norms(2.0), PAIRS, False)] == [HOLDS, UNTESTABLE]
    assert [v.outcome for v in robust_vs_standard(norms(0.5), PAIRS, False)] == [FAILS, UNTESTABLE]
    random = robust_vs_standard(norms(2.0), PAIRS, True)
    assert [v.outcome for v in random] == [UNTESTABLE, UNTESTABLE] and random[0].reason == RANDOM


def test_robust_vs_standard_over_many_pairs():
    entries = [f"R{i}" for i in range(6)]
    pairs = pd.DataFrame([dict(threat_model="Linf", entry=e, standard="Standard") for e in entries])
    assert [v.outcome for v in robust_vs_standard(norms(2.0, entries=entries), pairs, False)] == [HOLDS] * 7
    assert [v.outcome for v in robust_vs_standard(norms(0.5, entries=entries), pairs, False)] == [FAILS] * 7


def summary(slope: float, n: int) -> pd.DataFrame:
    stat = np.arange(n, dtype=float)
    return pd.DataFrame(dict(threat_model="Linf", role=["robust"] * n, autoattack_acc=50 + slope * stat,
                             stat=stat)).pipe(lambda t: pd.concat([t, t.iloc[:1].assign(role="standard",
                                                                                             autoattack_acc=0.0)]))


def test_norms_vs_robust_accuracy():
    assert norms_vs_robust_accuracy(summary(-1.0, 10), "stat", False)[0].outcome == FAILS
    assert norms_vs_robust_accuracy(summary(1.0, 10), "stat", False)[0].outcome == HOLDS
    few = norms_vs_robust_accuracy(summary(-1.0, MIN_MODELS - 1), "stat", False)[0]
    assert few.outcome == UNTESTABLE and "fewer than" in few.reason
    random = norms_vs_robust_accuracy(summary(-1.0, 10), "stat", True)[0]
    assert random.outcome == UNTESTABLE and random.reason == RANDOM


def test_experiment_on_random_weights_pairs_same_architecture_and_judges_nothing(tmp_path):
    zoo = pytest.importorskip("nblib.models.robustbench_zoo")
    try:
        zoo.robustbench_zoo()
    except ImportError as e:
        pytest.skip(str(e))
    from nblib.experiments import robustbench

    settings = dict(standard_entries=["Linf/Wong2020Fast"], robust_entries=["Linf/Wong2020Fast"],
                    random_weights=True, seed=0, model_dir=str(tmp_path), compute_l2=False, l2_rtol=0.01)
    result = robustbench.run(settings)
    assert list(result.pairs.standard) == ["Wong2020Fast"]  # the same architecture
    assert result.metrics["layers"]["Linf/Wong2020Fast"] == dict(conv_linear=21, batchnorm=16, not_reached=0,
                                                                  not_normed=0)
    assert all(v.outcome == UNTESTABLE for v in result.verdicts)
    assert result.summary.autoattack_acc.tolist() == [43.21, 43.21]
    assert result.norms.l2_upper.isna().all()
    result.save(tmp_path)
    assert (tmp_path / "metrics" / "06_robustbench_norms.json").exists()
    with pytest.raises(ValueError, match="<Linf|L2>"):
        robustbench.split_key("Wong2020Fast")
