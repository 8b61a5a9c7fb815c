"""nblib.claims: every claim function on made-up tables where the claim holds, fails, and cannot be tested;
the statistics against scipy as an independent oracle."""
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nblib.claims import comparisons as C
from nblib.claims import figure2 as F2
from nblib.claims import stats as S
from nblib.claims import table2 as T2
from nblib.claims import propositions as P
from nblib.claims import table1 as T1
from nblib.claims import theorem1 as TH1
from nblib.claims import verdict as V
from nblib.perf.benchmark import PAPER_TABLE1
from nblib.claims.paper_table2 import paper_table2_frame

H, F, U = V.HOLDS, V.FAILS, V.UNTESTABLE


# ------------------------------------------------------------------------------------------ statistics
@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.9, 0.95, 0.99]))
def test_wilson_interval_matches_the_formula(kn, conf):
    """Oracle: the Wilson score formula written out."""
    k, n = kn
    z = NormalDist().inv_cdf(0.5 + conf / 2)
    p, d = k / n, 1 + z * z / n
    centre, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    assert S.wilson_interval(k, n, conf) == pytest.approx((max(0, centre - half), min(1, centre + half)), abs=1e-9)


def _upper_tail(k, n):
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 60).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_sign_test_matches_the_binomial_sum(kn):
    k, n = kn
    assert S.sign_test_p(k, n) == pytest.approx(_upper_tail(k, n) if n else 1.0, rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=80))
def test_mcnemar_is_the_binomial_sum_over_discordant_points(pairs):
    a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    m = S.mcnemar(a, b)
    n_a, n_b = sum(x and not y for x, y in pairs), sum(y and not x for x, y in pairs)
    assert (m["n_a_only"], m["n_b_only"]) == (n_a, n_b)
    d = n_a + n_b
    assert m["p_higher"] == pytest.approx(_upper_tail(n_a, d) if d else 1.0, rel=1e-9)
    assert m["p_lower"] == pytest.approx(_upper_tail(n_b, d) if d else 1.0, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=12), st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_rejects_what_the_step_down_definition_rejects(p, alpha):
    """Oracle: Holm's definition -- reject H_(1..k) for the largest k with p_(j) <= alpha / (m - j + 1) for
    every j <= k (sorted ascending)."""
    m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for j, i in enumerate(order):
        if p[i] > alpha / (m - j):
            break
        rejected.add(i)
    adjusted = S.holm(p)
    assert {i for i in range(m) if adjusted[i] <= alpha} == rejected
    assert all(adjusted[i] >= p[i] for i in range(m))


def test_holm_leaves_nan_out_of_the_family():
    out = S.holm([0.01, math.nan, 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


@settings(max_examples=50, deadline=None)
@given(st.permutations(list(range(12))))
def test_spearman_is_pearson_of_ranks(perm):
    x, y = np.arange(12.0), np.array(perm, dtype=float)
    s = S.spearman(x, y)
    assert s["rho"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert s["p_negative"] + s["p_positive"] == pytest.approx(1.0, abs=1e-9)


def test_compare_rates_needs_disjoint_intervals():
    assert S.compare_rates(0.60, 1000, 0.50, 1000) == "higher"
    assert S.compare_rates(0.50, 1000, 0.60, 1000) == "lower"
    assert S.compare_rates(0.60, 50, 0.50, 50) == "overlap"  # same gap, too few points
    with pytest.raises(ValueError, match="percentages"):
        S.compare_rates(60, 100, 50, 100)


def test_with_intervals():
    f = S.with_intervals(pd.DataFrame(dict(robust=[50.0, math.nan], n=[100, 100])), "robust", "n")
    lo, hi = S.wilson_interval(50, 100)
    assert (f.robust_lo[0], f.robust_hi[0]) == pytest.approx((100 * lo, 100 * hi)) and math.isnan(f.robust_lo[1])


def test_verdict_type():
    v = V.Verdict("c", U, "too few points", {"x": math.nan})
    assert v.line() == "c: not testable (too few points)"
    assert V.Verdict("c", H, "r").line() == "c: holds" and V.Verdict("c", F, "r").line() == "c: does not hold"
    assert v.record() == {"claim": "c", "outcome": U, "reason": "too few points", "numbers": {"x": "NaN"}}
    with pytest.raises(ValueError):
        V.Verdict("c", "maybe", "r")
    with pytest.raises(ValueError, match="no reason"):
        V.Verdict("c", H, "")
    assert V.combine("all", [V.Verdict("a", H, "r"), V.Verdict("b", U, "r")]).outcome == U
    assert V.combine("all", [V.Verdict("a", H, "r"), V.Verdict("b", F, "r")]).outcome == F
    assert V.combine("all", [V.Verdict("a", H, "r")] * 2).outcome == H


# ---------------------------------------------------------------------------------------- Theorem 1
def _thm1(err1=0.0, err2=0.0, ratio=(1.5, 3.0), inside=True):
    return pd.DataFrame(dict(assumption1=[inside, inside, False], err_eq1=[err1, 0.0, 0.7],
                             err_eq2=[0.0, err2, 0.4], eq3_over_sigma=[ratio[0], ratio[1], 2.0]))


def test_theorem1_outcomes():
    assert [v.outcome for v in TH1.theorem1(_thm1())] == [H, H, H]
    assert [v.outcome for v in TH1.theorem1(_thm1(err1=1e-3))] == [F, H, H]
    assert [v.outcome for v in TH1.theorem1(_thm1(err2=math.nan))] == [H, F, H]  # not computed = wrong
    assert [v.outcome for v in TH1.theorem1(_thm1(ratio=(0.9, 2.0)))] == [H, H, F]
    assert [v.outcome for v in TH1.theorem1(_thm1(inside=False))] == [U, U, H]
    assert TH1.theorem1(_thm1())[2].numbers["median_ratio"] == 2.0  # how loose eq. 3 is


def test_exact_model_norms():
    rows = pd.DataFrame(dict(err_l1=[0.0, 1e-12], err_linf=[0.0, 0.0]))
    assert TH1.exact_model_norms(rows).outcome == H
    assert TH1.exact_model_norms(rows.assign(err_linf=[0.0, 0.1])).outcome == F
    assert TH1.exact_model_norms(rows.iloc[:0]).outcome == U


# ------------------------------------------------------------------------------------------ Table 1
def _wide(power=(100.0, 200.0), floor=0.001):
    return pd.DataFrame(dict(l1=[0.01, 0.02], linf=[0.02, 0.01], power=list(power), floor=[floor, floor]),
                        index=["k1", "k2"])


def test_paper_speedup_is_from_table1():
    s = T1.paper_speedup(PAPER_TABLE1, "power")
    assert s.max() == pytest.approx(255 / 0.0239) and s.min() == pytest.approx(27.4 / 0.00682)


def test_table1_every_kernel_needs_every_kernel_measured():
    """Power iteration ran out of time on k2: "on every kernel" is not testable, and the reason names the
    measured kernel; a measured kernel below the threshold still refutes it."""
    v = T1.table1_speed(_wide((100.0, math.nan)), "power", 5000, "power iteration")
    assert v.outcome == U and "['k1']" in v.reason and "1 of 2 kernels measured" in v.reason
    assert T1.table1_speed(_wide((100.0, math.nan)), "power", 6000, "p").outcome == F
    assert T1.table1_floor(_wide(floor=0.01).assign(l1=[0.01, math.nan]), k=3).outcome == U


def test_table1_speed_outcomes():
    assert T1.table1_speed(_wide(), "power", 6000, "power iteration").outcome == F  # ratios 5000x and 10000x
    assert T1.table1_speed(_wide((100.0, 200.0)), "power", 5000, "p").numbers["min_ratio"] == pytest.approx(5000)
    assert T1.table1_speed(_wide((100.0, 200.0)), "power", 5000, "p").outcome == H
    assert T1.table1_speed(_wide((100.0, math.nan)), "power", 5000, "p").numbers["n_not_measured"] == 1
    assert T1.table1_speed(_wide((math.nan, math.nan)), "power", 5000, "p").outcome == U


def test_table1_floor_outcomes():
    assert T1.table1_floor(_wide(floor=0.01), k=3).outcome == H
    assert T1.table1_floor(_wide(floor=0.001), k=3).outcome == F
    assert T1.table1_floor(_wide(floor=math.nan), k=3).outcome == U


# ------------------------------------------------------------------------------------------ Table 2
def _t2(plain, rows, n_clean=10000, n_robust=1000):
    """plain = (clean, robust); rows = {(kind, strength): (clean, robust)}; one model; accuracies only (the
    paper's kind of table: compared unpaired)."""
    recs = [dict(model="m", regularizer="none", strength=0.0, clean=plain[0], robust=plain[1])]
    recs += [dict(model="m", regularizer=k, strength=s, clean=c, robust=r) for (k, s), (c, r) in rows.items()]
    return pd.DataFrame(recs).assign(n_clean=n_clean, n_robust=n_robust)


def _points(n, k_plain, gained, lost):
    """(plain, run) outcomes over ``n`` points: plain right on ``k_plain``; the run right on the same points,
    minus ``lost`` of them, plus ``gained`` others (the discordant points)."""
    plain = np.arange(n) < k_plain
    run = plain.copy()
    run[:lost] = False
    run[k_plain:k_plain + gained] = True
    return plain, run


def _paired(n, k_plain, runs, model="m", acc="robust"):
    """A paired Table 2 of one model: ``runs`` = {(kind, strength): (gained, lost)} on ``acc`` over ``n``
    points (the other accuracy: the plain run's, identical points)."""
    other = "clean" if acc == "robust" else "robust"
    plain, _ = _points(n, k_plain, 0, 0)
    recs = [{"model": model, "regularizer": "none", "strength": 0.0, acc: 100 * plain.mean(), other: 50.0,
             f"{acc}_points": plain, f"{other}_points": plain}]
    for (kind, strength), (gained, lost) in runs.items():
        _, run = _points(n, k_plain, gained, lost)
        recs.append({"model": model, "regularizer": kind, "strength": strength, acc: 100 * run.mean(), other: 50.0,
                     f"{acc}_points": run, f"{other}_points": plain})
    return pd.DataFrame(recs).assign(n_clean=n, n_robust=n)


def _unpaired(frame):
    return frame.drop(columns=["clean_points", "robust_points"])


def test_paired_test_decides_where_unpaired_intervals_cannot():
    """30 % -> 22 % robust on 200 attacked points: the Wilson intervals overlap, but the run lost 16 points and
    gained none, so McNemar (p = 2^-16) says the strongest setting lowers robustness."""
    f = _paired(200, 60, {("wd", 1e-2): (0, 16), ("wd", 1e-4): (0, 0)})
    claim = "the strongest weight decay does not improve robust accuracy"
    paired, unpaired = T2.table2_robust(f), T2.table2_robust(_unpaired(f))
    assert {v.claim: v.outcome for v in unpaired}[claim] == U
    v = {v.claim: v for v in paired}[claim]
    assert v.outcome == H and "one-sided exact McNemar" in v.reason and "alpha 0.05" in v.reason
    assert "Wilson" in {v.claim: v for v in unpaired}[claim].reason  # the unpaired rule says it is unpaired


def test_paired_and_unpaired_both_not_testable_on_a_real_tie():
    f = _paired(200, 60, {("wd", 1e-2): (8, 10)})  # 10 lost, 8 gained: p = 0.41
    for frame in (f, _unpaired(f)):
        assert [v.outcome for v in T2.table2_robust(frame)] == [U, U, U, U]


def test_paired_robust_readings_strongest_and_every_strength():
    # strongest (1e-2) loses 20 points; a weak setting gains 20: the paper's reading holds, the general fails
    f = _paired(500, 200, {("wd", 1e-2): (0, 20), ("wd", 1e-5): (20, 0)})
    out = {v.claim: v.outcome for v in T2.table2_robust(f)}
    assert out["the strongest weight decay does not improve robust accuracy"] == H
    assert out["weight decay does not improve robust accuracy at any strength"] == F
    assert out["norm regularization does not improve robust accuracy at any strength"] == F


def test_a_run_without_outcomes_is_not_compared_unpaired():
    f = _paired(200, 60, {("wd", 1e-2): (0, 16)})
    f.at[1, "robust_points"] = None  # a stale run of older code
    v = T2.table2_robust(f)[0]
    assert v.outcome == U and "without per-point outcomes" in v.reason


def test_existential_clean_claim_is_holm_corrected():
    """One run 7 points up, none down: p = 2^-7 = 0.008 alone (holds), 16 x 0.008 = 0.125 after Holm over 16
    comparisons (not testable)."""
    one = _paired(1000, 500, {("wd", 1e-2): (7, 0)}, acc="clean")
    assert T2.table2_clean(one)[0].outcome == H
    many = _paired(1000, 500, {("wd", 1e-2): (7, 0), **{("wd", s): (0, 0) for s in range(2, 17)}}, acc="clean")
    v = T2.table2_clean(many)[0]
    assert v.outcome == U and "Holm-corrected over 16 comparisons" in v.reason
    assert v.numbers["cases"][0]["p_higher"] == pytest.approx(2 ** -7)


def test_clean_typically_is_a_majority_of_runs():
    up = (30, 0)
    f = _paired(1000, 500, {("wd", 1): up, ("wd", 2): up, ("wd", 3): up, ("wd", 4): (0, 0)}, acc="clean")
    typical = {v.claim: v for v in T2.table2_clean(f)}["weight decay typically improves clean accuracy"]
    assert typical.outcome == H and "3 above, 0 below, 1 undecided of 4" in typical.reason
    f = _paired(1000, 500, {("wd", 1): up, ("wd", 2): (0, 0), ("wd", 3): (0, 0), ("wd", 4): (0, 0)}, acc="clean")
    out = {v.claim: v.outcome for v in T2.table2_clean(f)}
    assert out["weight decay typically improves clean accuracy"] == U  # 1 of 4: no majority either way
    assert out["weight decay improves clean accuracy at some strength"] == H
    f = _paired(1000, 500, {("wd", 1): up, ("wd", 2): (0, 30), ("wd", 3): (0, 30), ("wd", 4): (0, 0)}, acc="clean")
    assert {v.claim: v.outcome for v in T2.table2_clean(f)}["weight decay typically improves clean accuracy"] == F


def test_table2_paper_like_holds():
    # unpaired (accuracies only): clean up by 3 points at a weak setting, robust down 10 points at the strongest
    f = _t2((90, 50), {("wd", 1e-2): (90, 40), ("wd", 1e-4): (93, 50), ("svc", 0.5): (89, 40),
                       ("svc", 2.0): (90, 50)})
    clean = {v.claim: v.outcome for v in T2.table2_clean(f)}
    assert clean["weight decay improves clean accuracy at some strength"] == H
    assert clean["singular value clipping improves clean accuracy at some strength"] == U
    assert clean["norm regularization can improve clean accuracy"] == H
    robust = T2.table2_robust(f)
    assert [v.outcome for v in robust] == [H, H, H, H, H, H]
    assert all(c["strength"] in (1e-2, 0.5) for c in robust[2].numbers["cases"])  # strongest: max wd, min c


def test_table2_contradicting_data_does_not_hold():
    # the smoke case of the issue: strongest l1 norm decay raises robust by 21 points, lowers clean
    f = _t2((95, 30), {("nd_l1", 0.1): (85, 51), ("nd_l1", 0.01): (80, 30)}, n_robust=100)
    clean = T2.table2_clean(f)
    assert [v.outcome for v in clean] == [F, F, F, F]
    assert [v.outcome for v in T2.table2_robust(f)] == [F, F, F, F]


def test_table2_too_few_points_not_testable():
    f = _t2((95, 30), {("nd_l1", 0.1): (96, 38)}, n_clean=200, n_robust=50)
    assert [v.outcome for v in T2.table2_clean(f)] == [U, U, U, U]
    robust = T2.table2_robust(f)
    assert [v.outcome for v in robust] == [U, U, U, U] and "50 attacked points" in robust[0].reason


def test_table2_needs_plain_run():
    with pytest.raises(ValueError, match="no plain"):
        T2.table2_clean(_t2((90, 50), {("wd", 1e-2): (90, 40)}).iloc[1:])


def test_table2_verdicts_on_the_papers_own_numbers():
    """The paper's Table 2 at 10,000 test images and 1024 attacked points (unpaired: no per-point outcomes).
    As the paper states it (strongest setting) the robust claim holds; at every strength it does not:
    ResNet-18 with SVC c = 1.5 has 43.2 % robust accuracy against plain 37.0 %."""
    f = paper_table2_frame()
    clean = {v.claim: v for v in T2.table2_clean(f)}
    assert clean["norm regularization can improve clean accuracy"].outcome == H
    l1 = clean["l1 norm decay typically improves clean accuracy"]
    assert l1.outcome == U and "1 above, 1 below, 14 undecided of 16" in l1.reason
    robust = {v.claim: v for v in T2.table2_robust(f)}
    assert robust["norm regularization at its strongest does not improve robust accuracy"].outcome == H
    every = robust["singular value clipping does not improve robust accuracy at any strength"]
    assert every.outcome == F and "unpaired" in every.reason
    assert [(c["model"], c["strength"]) for c in every.numbers["cases"] if c["relation"] == "higher"] == \
        [("resnet18", 1.5)]
    assert robust["norm regularization does not improve robust accuracy at any strength"].outcome == F


def test_tradeoff_on_the_papers_own_numbers():
    """Spearman rho of clean and robust accuracy over each model's 17 runs (RegNet: 16, its plain robust
    accuracy is not printed): -0.30, 0.18, -0.17 and +0.45; VGG-11's positive correlation is significant
    one-sided (p = 0.035), so the trade-off does not hold there; pooled it is not testable."""
    out = {v.claim.split(":")[0]: v for v in T2.table2_tradeoff(paper_table2_frame())}
    rho = {m: out[m].numbers["rho"] for m in ("regnetx_200mf", "resnet18", "senet18", "vgg11")}
    assert rho == pytest.approx(dict(regnetx_200mf=-0.30, resnet18=0.18, senet18=-0.17, vgg11=0.45), abs=0.01)
    assert [out[m].outcome for m in ("vgg11", "resnet18", "senet18", "regnetx_200mf")] == [F, U, U, U]
    pooled = out["higher clean accuracy goes with lower robust accuracy"]
    assert pooled.outcome == U and "centred per model" in pooled.reason


def test_tradeoff_holds_on_a_clear_trade_off():
    f = _t2((90, 50), {("wd", s): (90 + i, 50 - 3 * i) for i, s in enumerate([1e-5, 1e-4, 1e-3, 1e-2, 1e-1])})
    v = T2.table2_tradeoff(f)
    assert [x.outcome for x in v] == [H, H] and v[0].numbers["rho"] == pytest.approx(-1.0)


def test_table2_norms_lowered():
    s = pd.DataFrame(dict(model="m", regularizer=["none", "svc", "svc", "nd_l1"], reg_strength=[0, 0.5, 2.0, 0.1],
                          log_linf=[1.0, 0.5, 1.2, 1.5], log_l1=[1.0, 1.0, 1.0, 0.2]))
    assert [v.outcome for v in T2.table2_norms_lowered(s)] == [H, H]
    s.loc[1, "log_linf"] = 1.1
    assert [v.outcome for v in T2.table2_norms_lowered(s)] == [F, H]
    assert [v.outcome for v in T2.table2_norms_lowered(s[s.regularizer != "none"])] == [U, U]


def test_near_zero_robust():
    f = pd.DataFrame(dict(robust=[0.0, 1.0], n_robust=[1000, 1000]))
    assert T2.near_zero_robust(f, "8/255").outcome == H
    assert T2.near_zero_robust(f.assign(robust=[0.0, 20.0]), "8/255").outcome == F
    assert T2.near_zero_robust(f.assign(n_robust=[20, 20]), "8/255").outcome == U
    assert T2.near_zero_robust(f.assign(robust=math.nan), "8/255").outcome == U


# ---------------------------------------------------------------------------------------- Figure 2
def _norms(robust_factors, plain=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0), models=("m",)):
    layers = [f"l{i}" for i in range(len(plain))]
    rows = []
    for m in models:
        rows += [dict(model=m, adv_mode="plain", layer=name, linf=v) for name, v in zip(layers, plain)]
        for mode, fac in robust_factors.items():
            rows += [dict(model=m, adv_mode=mode, layer=name, linf=v * f) for name, v, f in zip(layers, plain, fac)]
    return pd.DataFrame(rows)


LARGER = [1.5, 2, 1.1, 3, 1.2, 2]
COMPARABLE = [0.9, 1.1, 0.95, 1.05, 1.0, 0.98]
SMALLER = [0.3, 0.5, 0.4, 0.2, 0.5, 0.6]   # the smoke case: every norm clearly smaller
MIXED = [0.3, 0.5, 0.4, 2.0, 0.5, 1.5]     # median ratio 0.5


def test_figure2_norms_one_summary_per_network():
    out = F2.figure2_norms(_norms(dict(pgd=LARGER, alp=COMPARABLE, trades=SMALLER, x=MIXED)))
    assert [v.outcome for v in out[:4]] == [H, H, F, F]
    assert out[2].numbers["median_ratio"] == pytest.approx(math.exp(np.median(np.log(SMALLER))))
    assert "not independent" in out[0].reason
    # across 4 networks a sign test can never reach 0.05
    assert out[-1].outcome == U and out[-1].numbers["n_networks"] == 4


def test_figure2_norms_across_networks_is_a_sign_test():
    five = [f"m{i}" for i in range(5)]
    larger = F2.figure2_norms(_norms(dict(pgd=LARGER), models=five))
    assert larger[-1].outcome == H and larger[-1].numbers["p_comparable"] == pytest.approx(2 ** -5)
    smaller = F2.figure2_norms(_norms(dict(pgd=SMALLER), models=five))
    assert smaller[-1].outcome == F and "sign test over 5 networks" in smaller[-1].reason


def test_figure2_band_is_a_setting():
    """A halving of the median layer norm is "smaller" at the default band 1.25, "comparable" at band 2.5."""
    half = [0.5] * 6
    assert F2.figure2_norms(_norms(dict(pgd=half)))[0].outcome == F
    assert F2.figure2_norms(_norms(dict(pgd=half)), band=2.5)[0].outcome == H
    assert F2.BAND == 1.25


def test_figure2_layers_must_match():
    bad = _norms(dict(pgd=[1.0] * 6))
    bad.loc[bad.index[-1], "layer"] = "other"
    with pytest.raises(ValueError, match="different layers"):
        F2.figure2_norms(bad)


def _acc(plain, robust, n, lip_plain=10.0, lip=5.0):
    return pd.DataFrame([dict(model="m", adv_mode="plain", robust_acc=plain, n_eval=n, lip_mean=lip_plain),
                         dict(model="m", adv_mode="pgd", robust_acc=robust, n_eval=n, lip_mean=lip)])


def test_figure2_more_robust_outcomes():
    assert [v.outcome for v in F2.figure2_more_robust(_acc(0.0, 0.5, 100))] == [H, H]
    assert [v.outcome for v in F2.figure2_more_robust(_acc(0.5, 0.0, 100))] == [F, F]
    assert [v.outcome for v in F2.figure2_more_robust(_acc(0.1, 0.25, 20))] == [U, U]
    assert [v.outcome for v in F2.figure2_more_robust(_acc(0.1, math.nan, 20))] == [U, U]  # not measured


def test_figure2_more_robust_paired():
    """10 % -> 25 % of 40 attacked points: intervals overlap; 6 points gained, none lost: McNemar p = 1/64."""
    plain, pgd = _points(40, 4, 6, 0)
    f = _acc(0.1, 0.25, 40).assign(robust_acc_points=[plain, pgd])
    assert [v.outcome for v in F2.figure2_more_robust(f.drop(columns="robust_acc_points"))] == [U, U]
    v = F2.figure2_more_robust(f)
    assert [x.outcome for x in v] == [H, H] and "one-sided exact McNemar" in v[0].reason
    assert [x.outcome for x in F2.figure2_more_robust(f.assign(robust_acc_points=[pgd, plain]))] == [F, F]
    assert F2.figure2_more_robust(f.assign(robust_acc_points=[plain, None]))[0].outcome == U


def test_figure2_local_lipschitz_outcomes():
    assert F2.figure2_local_lipschitz(_acc(0, 0, 1, lip=5.0))[0].outcome == H
    assert F2.figure2_local_lipschitz(_acc(0, 0, 1, lip=20.0))[0].outcome == F
    assert F2.figure2_local_lipschitz(_acc(0, 0, 1, lip=10.5))[0].outcome == U
    assert F2.figure2_local_lipschitz(_acc(0, 0, 1, lip=math.nan))[0].outcome == U


# ------------------------------------------------------------------------------------- Propositions
def _prop1(spread=0.0, growth=1.0):
    rows = []
    for s in (1.0, 100.0):
        rows += [dict(scale=s, p="l1", layer=i, norm=s ** growth * (i + 1)) for i in range(3)]
        rows += [dict(scale=s, p="output spread", layer=-1, norm=spread),
                 dict(scale=s, p="empirical Lipschitz", layer=-1, norm=0.0)]
    return pd.DataFrame(rows)


def test_proposition1_outcomes():
    assert P.proposition1(_prop1()).outcome == H
    assert P.proposition1(_prop1(spread=1e-3)).outcome == F
    assert P.proposition1(_prop1(growth=0.5)).outcome == F
    assert P.proposition1(_prop1()[lambda d: d.scale == 1.0]).outcome == U


def test_proposition2_outcomes():
    p = pd.DataFrame(dict(xi=[10.0, 1000.0], grid_robust_acc=[1.0, 1.0], pgd_robust_acc=[1.0, 1.0],
                          lipschitz_lower=[12.0, 1500.0]))
    assert [v.outcome for v in P.proposition2(p, d_min=0.5, eps=0.1)] == [H, H]
    assert [v.outcome for v in P.proposition2(p.assign(lipschitz_lower=[12.0, 10.0]), 0.5, 0.1)] == [H, F]
    assert [v.outcome for v in P.proposition2(p.assign(pgd_robust_acc=[0.9, 1.0]), 0.5, 0.1)] == [F, F]
    assert [v.outcome for v in P.proposition2(p, d_min=0.15, eps=0.1)] == [U, U]


# ------------------------------------------------------------------------------------------- seeds

def _seeded(*frames):
    """One table of the runs of several seeds: ``frames[s]`` holds seed ``s``'s runs (plain included)."""
    return pd.concat([f.assign(seed=s) for s, f in enumerate(frames)], ignore_index=True)


STRONGEST_WD = "the strongest weight decay does not improve robust accuracy"


def test_one_seed_with_a_seed_column_decides_as_before():
    f = _paired(500, 200, {("wd", 1e-2): (0, 20), ("wd", 1e-5): (20, 0), ("svc", 0.5): (3, 1)})
    for judge in (T2.table2_clean, T2.table2_robust, T2.table2_tradeoff):
        assert [v.record() for v in judge(f.assign(seed=3))] == [v.record() for v in judge(f)]


def test_a_direction_needs_every_seed():
    """Seed 0 loses 16 of 200 robust points at the strongest weight decay (p = 2^-16), seed 1 loses none: one
    seed's effect is not a conclusion (intersection-union: p = max = 1); when both seeds lose, it holds."""
    lost, tie, gained = (_paired(200, 60, {("wd", 1e-2): d}) for d in ((0, 16), (0, 0), (16, 0)))
    alone = T2.table2_robust(lost)[0]
    assert alone.claim == STRONGEST_WD and alone.outcome == H  # one seed: as the paper
    one_of_two = {v.claim: v for v in T2.table2_robust(_seeded(lost, tie))}[STRONGEST_WD]
    assert one_of_two.outcome == U and "in each of 2 seeds (intersection-union" in one_of_two.reason
    case = one_of_two.numbers["cases"][0]
    assert case["p_lower"] == 1.0 and case["p_lower_seeds"] == [pytest.approx(2 ** -16), 1.0]
    both = {v.claim: v for v in T2.table2_robust(_seeded(lost, lost))}[STRONGEST_WD]
    assert both.outcome == H and "1 of 1 configurations less robust" in both.reason
    assert "against plain of the same seed" in both.reason and "in each of 2 seeds" in both.reason
    # the other direction likewise: more robust in one seed only is not a counterexample, in both it is
    assert {v.claim: v.outcome for v in T2.table2_robust(_seeded(gained, tie))}[STRONGEST_WD] == U
    assert {v.claim: v.outcome for v in T2.table2_robust(_seeded(gained, gained))}[STRONGEST_WD] == F
    assert {v.claim: v.outcome for v in T2.table2_robust(_seeded(gained, lost))}[STRONGEST_WD] == U


def test_seeds_are_paired_with_the_plain_run_of_their_seed():
    """Seed 1's plain run is better than seed 0's on the same points; each regularised run matches the plain
    run of its own seed exactly (no discordant point), so nothing differs, though across seeds it would."""
    n = 200
    a, b = np.arange(n) < 60, np.arange(n) < 90
    rows = [dict(model="m", regularizer=k, strength=s, seed=seed, clean=50.0, robust=100 * p.mean(),
                 clean_points=p, robust_points=p) for seed, p in ((0, a), (1, b))
            for k, s in (("none", 0.0), ("wd", 1e-2))]
    f = pd.DataFrame(rows).assign(n_clean=n, n_robust=n)
    case = T2.table2_robust(f)[0].numbers["cases"][0]
    assert case["n_run_only"] == case["n_base_only"] == 0 and case["p_higher"] == case["p_lower"] == 1.0
    with pytest.raises(ValueError, match="plain run of that seed"):
        T2.table2_robust(f[~((f.regularizer == "none") & (f.seed == 1))])


def test_existential_claim_holm_over_configurations_of_iut_p_values():
    """Holm's family is the configurations, each with its largest seed p-value."""
    f0 = _paired(1000, 500, {("wd", 1): (9, 0), ("wd", 2): (0, 0)}, acc="clean")
    f1 = _paired(1000, 500, {("wd", 1): (7, 0), ("wd", 2): (0, 0)}, acc="clean")
    pairs = T2.table2_pairs(_seeded(f0, f1), "clean")
    assert len(pairs) == 2 and list(pairs.n_seeds) == [2, 2]
    assert pairs.p_higher.iloc[0] == pytest.approx(max(2 ** -9, 2 ** -7))
    v = T2.table2_clean(_seeded(f0, f1))[0]
    assert v.outcome == H and "Holm-corrected over 2 configurations" in v.reason  # 2 x 2^-7 < 0.05


def test_across_seeds_is_the_largest_p_value():
    per_seed = pd.DataFrame([dict(k="a", seed=s, value=v, plain=50.0, method="paired", p_higher=p, p_lower=1 - p,
                                  n_run_only=3, n_base_only=1, interval=None)
                             for s, v, p in ((0, 60.0, 0.01), (1, 40.0, 0.2), (2, 50.0, 0.03))])
    row = C.across_seeds(per_seed, ["k"]).iloc[0]
    assert row.p_higher == 0.2 and row.p_lower == pytest.approx(0.99) and row.n_seeds == 3
    assert row.value == pytest.approx(50.0) and row.n_run_only == 9
    missing = per_seed.assign(method=["paired", "missing", "paired"])
    assert C.across_seeds(missing, ["k"]).iloc[0].method == "missing"
    assert list(C.across_seeds(per_seed[per_seed.seed == 1], ["k"]).columns) == \
        [c for c in per_seed.columns if c != "seed"]  # one seed: the rows as they are


def test_tradeoff_ranks_configurations_averaged_over_seeds():
    rng = np.random.default_rng(0)
    base = _t2((90, 50), {("wd", s): (90, 50) for s in range(1, 7)})
    seeds = [base.assign(clean=rng.uniform(80, 95, len(base)), robust=rng.uniform(20, 60, len(base)))
             for _ in range(2)]
    v = T2.table2_tradeoff(_seeded(*seeds))[0]
    mean = (seeds[0][["clean", "robust"]] + seeds[1][["clean", "robust"]]) / 2
    assert v.numbers["rho"] == pytest.approx(S.spearman(mean.clean, mean.robust)["rho"])
    assert v.numbers["n"] == 7 and "averaged over 2 seeds" in v.reason and "7 configurations" in v.reason


def test_norms_lowered_in_every_seed():
    def summary(strongest_by_seed):
        return pd.DataFrame([dict(model="m", regularizer=k, reg_strength=s, seed=seed, log_linf=v, log_l1=v)
                             for seed, low in enumerate(strongest_by_seed)
                             for k, s, v in (("none", 0.0, 1.0), ("wd", 1e-2, low), ("wd", 1e-4, 1.0))])
    both = T2.table2_norms_lowered(summary([0.5, 0.6]))[0]
    assert both.outcome == H and both.reason == "lower on every model in each of 2 seeds"
    one = T2.table2_norms_lowered(summary([0.5, 1.2]))[0]
    assert one.outcome == F and one.numbers["log10_change"]["m seed 1"] == pytest.approx(0.2)


def test_figure2_every_seed_is_a_network_of_the_sign_test():
    five = [f"m{i}" for i in range(5)]
    two = _seeded(_norms(dict(pgd=LARGER), models=five), _norms(dict(pgd=LARGER), models=five))
    out = F2.figure2_norms(two)
    assert len(out) == 11 and out[0].claim.startswith("m0 PGD-AT seed 0:")
    assert out[-1].numbers["n_networks"] == 10 and out[-1].numbers["p_comparable"] == pytest.approx(2 ** -10)
    assert "every model, mode and seed of 2 is one independently trained network" in out[-1].reason
    one = F2.figure2_norms(_norms(dict(pgd=LARGER), models=five).assign(seed=0))
    assert [v.record() for v in one] == [v.record() for v in F2.figure2_norms(_norms(dict(pgd=LARGER), models=five))]


def test_figure2_more_robust_needs_every_seed():
    plain, pgd = _points(40, 4, 6, 0)  # 6 points gained, none lost: p = 1/64 in a seed
    gain = _acc(0.1, 0.25, 40).assign(robust_acc_points=[plain, pgd])
    tie = _acc(0.1, 0.1, 40).assign(robust_acc_points=[plain, plain])
    one = F2.figure2_more_robust(_seeded(gain, tie))
    assert [v.outcome for v in one] == [U, U] and "no difference shown in each of 2 seeds" in one[0].reason
    both = F2.figure2_more_robust(_seeded(gain, gain))
    assert [v.outcome for v in both] == [H, H] and "in each of 2 seeds (intersection-union" in both[0].reason
    assert [v.record() for v in F2.figure2_more_robust(gain.assign(seed=0))] == \
        [v.record() for v in F2.figure2_more_robust(gain)]


def test_figure2_local_lipschitz_needs_every_seed():
    assert F2.figure2_local_lipschitz(_seeded(_acc(0, 0, 1, lip=5.0), _acc(0, 0, 1, lip=10.0)))[0].outcome == U
    v = F2.figure2_local_lipschitz(_seeded(_acc(0, 0, 1, lip=5.0), _acc(0, 0, 1, lip=4.0)))[0]
    assert v.outcome == H and v.numbers["ratios"] == [0.5, 0.4] and "every seed must agree" in v.reason
    assert F2.figure2_local_lipschitz(_seeded(_acc(0, 0, 1, lip=20.0), _acc(0, 0, 1, lip=30.0)))[0].outcome == F
