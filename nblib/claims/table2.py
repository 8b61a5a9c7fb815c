"""Verdicts on Table 2's claim: norm regularization may improve clean accuracy, but not robustness, and when the
clean accuracy gets higher the robust accuracy typically gets lower.

``frame`` is the long Table 2 of :func:`nblib.experiments.table2_frame` (accuracies in %, ``n_clean`` test
images, ``n_robust`` attacked points, a plain run per model) and, for our runs, the per-point outcomes
``clean_points`` / ``robust_points`` (boolean arrays).  Each regularised run is compared with the plain run of
its model by :mod:`nblib.claims.comparisons`: the exact one-sided McNemar test on the discordant points when the
outcomes are there, disjoint Wilson intervals for the paper's published numbers (no outcomes), never unpaired
for a run whose outcomes are missing.  Each verdict's reason names its test, sidedness, correction and level.

With several training seeds (a ``seed`` column) each run is compared with the plain run of its model *and seed*,
and a configuration (model, regularizer, strength) goes one way only when it does so in every seed
(:func:`nblib.claims.comparisons.across_seeds`, an intersection-union test); the trade-off ranks the
configurations' accuracies averaged over the seeds.  One seed: one comparison per run, as the paper.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from nblib.vocabulary import NORM_DECAY_P, REGULARIZER_LABELS, strongest_strength
from nblib.claims.comparisons import across_seeds, compare, counts, decide, missing_text, n_seeds, rule, units
from nblib.claims.stats import is_missing, rate_interval, spearman
from nblib.claims.verdict import FAILS, HOLDS, UNTESTABLE, Verdict, require_columns


TABLE2_COLUMNS = ["model", "regularizer", "strength", "clean", "robust", "n_clean", "n_robust"]
#: The family-wise level of every Table 2 verdict.
ALPHA = 0.05


def table2_pairs(frame: pd.DataFrame, acc: str, only_strongest: bool = False) -> pd.DataFrame:
    """One row per regularised configuration with a measured ``acc``: its comparison with the plain run of its
    model (:func:`nblib.claims.comparisons.compare`; paired when ``frame`` has ``<acc>_points``); with several
    seeds each run against the plain run of its seed, one row per configuration over the seeds
    (:func:`nblib.claims.comparisons.across_seeds`)."""
    require_columns(frame, TABLE2_COLUMNS, "the Table 2 verdicts")
    n_col, paired = f"n_{acc}", f"{acc}_points" in frame
    frame = frame if "seed" in frame else frame.assign(seed=0)
    plain = {(r["model"], r["seed"]): r for r in frame[frame.regularizer == "none"].to_dict("records")}
    missing = sorted(set(frame.model) - {m for m, _ in plain})
    if missing:
        raise ValueError(f"no plain (regularizer 'none') run for models {missing}: Table 2 compares with it")
    missing = sorted(set(zip(frame.model, frame.seed)) - set(plain))
    if missing:
        raise ValueError(f"no plain (regularizer 'none') run for (model, seed) {missing}: each seed's runs are "
                         "compared with the plain run of that seed")
    rows = []
    for (model, kind), g in frame[frame.regularizer != "none"].groupby(["model", "regularizer"], sort=False):
        if only_strongest:
            g = g[g.strength == strongest_strength(kind, g.strength)]
        for r in g.to_dict("records"):
            base = plain[(model, r["seed"])]
            if is_missing(r[acc]) or is_missing(base[acc]):
                continue  # not measured (no attack, or a number the paper does not print)
            rows.append(dict(model=model, regularizer=kind, strength=r["strength"], seed=r["seed"], value=r[acc],
                             plain=base[acc], n=int(r[n_col]), **compare(r, base, acc, n_col, True, paired)))
    pairs = pd.DataFrame(rows, columns=["model", "regularizer", "strength", "seed", "value", "plain", "n", "method",
                                        "p_higher", "p_lower", "n_run_only", "n_base_only", "interval"])
    return across_seeds(pairs, ["model", "regularizer", "strength"])


def _numbers(pairs: pd.DataFrame, alpha: float, **extra) -> dict:
    return dict(**counts(pairs), alpha=alpha, n_runs=len(pairs), **extra,
                cases=pairs.drop(columns=["interval"]).to_dict("records"))


def _improves_some(claim: str, pairs: pd.DataFrame, alpha: float) -> Verdict:
    """Existential: some run above plain (Holm over the family); fails when every run is below plain."""
    pairs = decide(pairs, alpha, correct=True)
    c, how, runs = counts(pairs), rule(pairs, alpha, correct=True), units(pairs)
    nums = _numbers(pairs, alpha, rule=how)
    if pairs.empty:
        return Verdict(claim, UNTESTABLE, "no regularised run with a plain run to compare", nums)
    if c["higher"]:
        return Verdict(claim, HOLDS, f"{c['higher']} of {len(pairs)} {runs} above plain ({how})", nums)
    if c["lower"] == len(pairs):
        return Verdict(claim, FAILS, f"all {len(pairs)} {runs} below plain ({how})", nums)
    return Verdict(claim, UNTESTABLE, f"no {runs[:-1]} above plain ({how}){missing_text(c)}", nums)


def _improves_typically(claim: str, pairs: pd.DataFrame, alpha: float) -> Verdict:
    """Majority rule: holds when more than half of the runs are above plain, fails when at least half are below
    (a majority above is then impossible); each run tested on its own, one-sided, at ``alpha``."""
    pairs = decide(pairs, alpha, correct=False)
    c, how = counts(pairs), rule(pairs, alpha, correct=False)
    nums = _numbers(pairs, alpha, rule=how, majority=len(pairs) // 2 + 1)
    where = (f"{c['higher']} above, {c['lower']} below, {c['neither'] + c['missing']} undecided of {len(pairs)} "
             f"{units(pairs)}")
    if pairs.empty:
        return Verdict(claim, UNTESTABLE, "no regularised run with a plain run to compare", nums)
    if 2 * c["higher"] > len(pairs):
        return Verdict(claim, HOLDS, f"a majority above plain: {where} ({how})", nums)
    if 2 * c["lower"] >= len(pairs):
        return Verdict(claim, FAILS, f"at least half below plain, no majority above possible: {where} ({how})", nums)
    return Verdict(claim, UNTESTABLE, f"no majority either way: {where} ({how})", nums)


def _not_more_robust(claim: str, pairs: pd.DataFrame, alpha: float) -> Verdict:
    """"Does not improve robust accuracy": fails when some run is more robust than plain, holds when none is and
    some run is less robust (Holm over the family, each direction one-sided at ``alpha``)."""
    pairs = decide(pairs, alpha, correct=True)
    c, how, runs = counts(pairs), rule(pairs, alpha, correct=True), units(pairs)
    nums = _numbers(pairs, alpha, rule=how)
    if c["higher"]:
        return Verdict(claim, FAILS, f"{c['higher']} of {len(pairs)} {runs} more robust than plain ({how})", nums)
    if pairs.empty:
        return Verdict(claim, UNTESTABLE, "no robust accuracy to compare", nums)
    if c["missing"]:
        return Verdict(claim, UNTESTABLE, f"none more robust among those compared{missing_text(c)}", nums)
    if c["lower"]:
        return Verdict(claim, HOLDS, f"{c['lower']} of {len(pairs)} {runs} less robust than plain, none more "
                                     f"({how})", nums)
    return Verdict(claim, UNTESTABLE, f"no {runs[:-1]} differs from plain at {int(pairs.n.min())} attacked points "
                                      f"({how})", nums)


def _per_regularizer(pairs: pd.DataFrame, judge, claim, overall: str, alpha: float) -> list[Verdict]:
    """``judge(claim(label), pairs of the regularizer, alpha)`` per regularizer, then over all of them."""
    out = [judge(claim(REGULARIZER_LABELS.get(k, k)), pairs[pairs.regularizer == k], alpha)
           for k in pairs.regularizer.unique()]
    return out + [judge(overall, pairs, alpha)]


def table2_clean(frame: pd.DataFrame, alpha: float = ALPHA) -> list[Verdict]:
    """First half of the Table 2 claim: norm regularisation *may improve* clean accuracy, in two readings, per
    regulariser (any model, any strength) and overall.

    * **at some strength** (existential): holds when some run's clean accuracy is above the plain run's, one-sided
      exact McNemar, Holm-corrected over the family's runs at ``alpha``; does not hold when every run is below
      plain (same test, other side); not testable otherwise.
    * **typically** (majority): holds when more than half of the runs (models x strengths) are above plain, each
      by a one-sided McNemar test at ``alpha`` (uncorrected: a majority of tests, not one of many); does not
      hold when at least half are below; not testable otherwise.

    The paper's published table (no per-point outcomes) is compared on disjoint 95 % Wilson intervals instead.
    """
    pairs = table2_pairs(frame, "clean")
    return [*_per_regularizer(pairs, _improves_some, lambda k: f"{k} improves clean accuracy at some strength",
                              "norm regularization can improve clean accuracy", alpha),
            *_per_regularizer(pairs, _improves_typically, lambda k: f"{k} typically improves clean accuracy",
                              "norm regularization typically improves clean accuracy", alpha)]


def table2_robust(frame: pd.DataFrame, alpha: float = ALPHA) -> list[Verdict]:
    """Second half of the Table 2 claim: norm regularisation does *not improve* robust accuracy, in two readings,
    per regulariser (over the models) and overall.

    * **at the strongest setting** (the paper's statement, the first column of each method in Table 2,
      :func:`strongest_strength`);
    * **at every strength** (the general reading).

    Does not hold when some run is more robust than plain (one-sided exact McNemar on the ``n_robust`` attacked
    points, Holm-corrected over the family at ``alpha``: an existential counterexample); holds when no run is
    more robust and some run is less robust (the other side, same correction); not testable when nothing
    differs, or when runs lack their per-point outcomes.  Published numbers: disjoint 95 % Wilson intervals.
    """
    strongest = table2_pairs(frame, "robust", only_strongest=True)
    every = table2_pairs(frame, "robust")
    return [*_per_regularizer(strongest, _not_more_robust, lambda k: f"the strongest {k} does not improve robust "
                              "accuracy", "norm regularization at its strongest does not improve robust accuracy",
                              alpha),
            *_per_regularizer(every, _not_more_robust, lambda k: f"{k} does not improve robust accuracy at any "
                              "strength", "norm regularization does not improve robust accuracy at any strength",
                              alpha)]


def _tradeoff(claim: str, clean, robust, alpha: float, what: str, runs: str = "runs") -> Verdict:
    s = spearman(clean, robust)
    how = (f"Spearman rank correlation over {s['n']} {runs}{what}, one-sided p < {alpha:g} each way, "
           "each claim at its own level")
    nums = dict(**s, alpha=alpha, rule=how)
    if s["p_negative"] < alpha:
        return Verdict(claim, HOLDS, f"rho = {s['rho']:.2f}, p = {s['p_negative']:.3f} for rho < 0 ({how})", nums)
    if s["p_positive"] < alpha:
        return Verdict(claim, FAILS, f"clean and robust accuracy rise together: rho = {s['rho']:.2f}, p = "
                                     f"{s['p_positive']:.3f} for rho > 0 ({how})", nums)
    if s["n"] < 3 or s["rho"] != s["rho"]:
        return Verdict(claim, UNTESTABLE, f"{s['n']} {runs} with both accuracies: too few to rank", nums)
    return Verdict(claim, UNTESTABLE, f"rho = {s['rho']:.2f}, not significant either way ({how})", nums)


def table2_tradeoff(frame: pd.DataFrame, alpha: float = ALPHA) -> list[Verdict]:
    """The trade-off of Table 2: "when the clean accuracy gets a higher value, the robust accuracy typically gets
    a lower value", judged by Spearman's rank correlation of clean and robust accuracy over the runs of each model
    (plain included) and pooled over the models (accuracies centred per model, so that differences between
    architectures do not count).

    Holds when rho < 0 with one-sided p < ``alpha``; **does not hold** when rho > 0 with one-sided p < ``alpha``
    (a higher clean accuracy goes with a *higher* robust accuracy); not testable otherwise.  Each model's verdict
    is its own claim (not corrected across models); the pooled one is the general claim.  Ranks, not a paired
    test: the correlation is across runs, whose accuracies carry no per-point pairing.  With several seeds the
    clean and the robust accuracy of each configuration (model, regularizer, strength) are first averaged over
    its seeds, and the configurations are ranked (the reason says so).
    """
    require_columns(frame, TABLE2_COLUMNS, "table2_tradeoff")
    f = frame.dropna(subset=["clean", "robust"])
    k, runs, seeds = n_seeds(f), "runs", ""
    if k > 1:
        f = f.groupby(["model", "regularizer", "strength"], as_index=False, sort=False)[["clean", "robust"]].mean()
        runs, seeds = "configurations", f" (clean and robust accuracy each averaged over {k} seeds)"
    out = [_tradeoff(f"{model}: higher clean accuracy goes with lower robust accuracy", g.clean, g.robust, alpha,
                     seeds, runs) for model, g in f.groupby("model", sort=False)]
    centred = f.assign(clean=f.clean - f.groupby("model").clean.transform("mean"),
                       robust=f.robust - f.groupby("model").robust.transform("mean"))
    return out + [_tradeoff("higher clean accuracy goes with lower robust accuracy", centred.clean, centred.robust,
                            alpha, f" of {f.model.nunique()} models, centred per model{seeds}", runs)]


def table2_norms_lowered(summary: pd.DataFrame, targets: Optional[dict] = None) -> list[Verdict]:
    """The premise of Table 2: the strongest setting of each regulariser lowers the layer norm it targets.

    ``summary``: one row per (model, regularizer, reg_strength[, seed]) with the mean log10 layer norms
    ``log_linf`` and ``log_l1`` (exact norms: no sampling error).  Holds when, for every model, the strongest
    run's mean is below the plain run's; with several seeds, for every model in each seed (the strongest run of
    a seed against the plain run of that seed).  ``targets``: regulariser -> column (default: l1 for l1 norm
    decay, l_inf otherwise).
    """
    require_columns(summary, ["model", "regularizer", "reg_strength", "log_linf", "log_l1"], "table2_norms_lowered")
    targets = targets or {"wd": "log_linf", "svc": "log_linf",
                          **{k: "log_l1" if p == 1 else "log_linf" for k, p in NORM_DECAY_P.items()}}
    k = n_seeds(summary)
    summary = summary if "seed" in summary else summary.assign(seed=0)
    plain = summary[summary.regularizer == "none"].set_index(["model", "seed"])
    where, unit = ("model", "models") if k == 1 else (f"model in each of {k} seeds", "(model, seed) runs")
    out = []
    for kind in [k for k in targets if k in set(summary.regularizer)]:
        col = targets[kind]
        norm = col[4:].replace("inf", "_inf")
        claim = f"the strongest {REGULARIZER_LABELS.get(kind, kind)} lowers the mean {norm} layer norm"
        diffs = {}
        for (model, seed), g in summary[summary.regularizer == kind].groupby(["model", "seed"]):
            g = g[g.reg_strength == strongest_strength(kind, g.reg_strength)]
            if (model, seed) in plain.index:
                name = model if k == 1 else f"{model} seed {seed}"
                diffs[name] = float(g[col].iloc[0] - plain.loc[(model, seed), col])
        if not diffs:
            out.append(Verdict(claim, UNTESTABLE, "no plain run to compare"))
        elif all(d < 0 for d in diffs.values()):
            out.append(Verdict(claim, HOLDS, f"lower on every {where}", dict(log10_change=diffs)))
        else:
            out.append(Verdict(claim, FAILS, f"not lower on {sum(d >= 0 for d in diffs.values())} of {len(diffs)} "
                                             f"{unit}", dict(log10_change=diffs)))
    return out


def near_zero_robust(frame: pd.DataFrame, eps_label: str, ceiling: float = 5.0,
                     confidence: float = 0.95) -> Verdict:
    """The paper's remark that every regularised model has "basically zero" robust accuracy at a large radius.

    ``frame``: one row per regularised run with ``robust`` (%) and ``n_robust``.  Holds when every run's
    Wilson interval lies below ``ceiling`` %; does not hold when some run's interval lies above it;
    not testable otherwise (too few attacked points to place it).  The default ceiling of 5 % reads
    "basically zero" generously: 0 of 100 attacked points already has an upper bound of 3.7 %, 0 of 1024
    one of 0.4 %, so a true rate near 0 passes at both sizes while the paper's 1/255 rates (20-60 %) fail.
    """
    require_columns(frame, ["robust", "n_robust"], "near_zero_robust")
    claim = f"regularized models have about 0% robust accuracy at {eps_label} (below {ceiling:g}%)"
    frame = frame.dropna(subset=["robust"])
    if frame.empty:
        return Verdict(claim, UNTESTABLE, f"no robust accuracy at {eps_label} measured")
    ci = [rate_interval(r / 100, int(n), confidence) for r, n in zip(frame.robust, frame.n_robust)]
    above = sum(lo * 100 > ceiling for lo, _ in ci)
    below = sum(hi * 100 < ceiling for _, hi in ci)
    how = (f"two-sided {100 * confidence:g}% Wilson interval of each run against the ceiling (one-sided level "
           f"{(1 - confidence) / 2:g} per run; 'every run' needs each, so no correction)")
    nums = dict(max_robust=float(frame.robust.max()), n_runs=len(frame), ceiling=ceiling, n_above=above,
                n_below=below, rule=how)
    if above:
        return Verdict(claim, FAILS, f"{above} of {len(frame)} runs above {ceiling:g}% ({how})", nums)
    if below == len(frame):
        return Verdict(claim, HOLDS, f"all {len(frame)} runs below {ceiling:g}% ({how})", nums)
    return Verdict(claim, UNTESTABLE, f"intervals of {int(frame.n_robust.min())} attacked points reach "
                                      f"{ceiling:g}% ({how})", nums)
