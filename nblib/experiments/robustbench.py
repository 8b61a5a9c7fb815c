"""Notebook 06 end to end: Figure 2's claim on RobustBench's published CIFAR-10 models, no training.

``run(settings) -> RobustBenchResult``: for every listed zoo entry (``"<Linf|L2>/<entry>"``, robust and standard),
its published weights (``random_weights: false``; read from ``model_dir``, downloaded when online) or its
architecture with random weights (``random_weights: true``, offline), then the exact l_inf and l1 operator norm
of every Conv2d / Linear layer at its true 32x32-input size (Theorem 1 / the exact general method), the l1 norm
with the BatchNorm layers (the authors' Figure 2 view), and a certified interval holding each layer's l2 norm
(:func:`nblib.norms.l2_interval`, relative width ``l2_rtol``).  Layers the forward never reaches and modules the
engine does not norm are rows with a note, never dropped.  Each robust model is paired with the standard model
of the same threat model whose parameters have the same names and shapes (the same architecture); the claims
are decided by :mod:`nblib.claims.robustbench` with the leaderboard's clean and AutoAttack accuracies
(:func:`nblib.models.robustbench_zoo.leaderboard`).
"""
from __future__ import annotations

import gc
import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from nblib.claims import robustbench as judge
from nblib.claims.verdict import records
from nblib.models.robustbench_zoo import build_entry, leaderboard, load_entry
from nblib.norms import CONV_TYPES, NOT_REACHED, l2_interval, layer_norms, linear_norm
from nblib.results import save_metrics, save_table

INPUT_SHAPE = (3, 32, 32)  # CIFAR-10
NAME = "06_robustbench_norms"
STATISTICS = ("log10_linf_product", "median_log10_linf", "median_log10_l1_with_bn")


@dataclass
class RobustBenchResult:
    """Notebook 06's tables and verdicts (accuracies in percent, from the leaderboard)."""

    summary: pd.DataFrame   # one row per model: role, architecture, weights, layer counts, norm statistics, accuracies
    norms: pd.DataFrame     # one row per layer (Conv2d / Linear / BatchNorm / not normed): linf, l1, l2 interval, note
    pairs: pd.DataFrame     # robust entry, the standard entry of the same architecture
    verdicts: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # outputs/<profile>/metrics/06_robustbench_norms.json

    def save(self, output_dir) -> None:
        """Write the tables (``tables/06_*``) and the metrics JSON."""
        save_table(self.summary, output_dir, "06_models", float_format="%.4g")
        save_table(self.norms, output_dir, "06_layer_norms", float_format="%.6g")
        save_table(self.pairs, output_dir, "06_pairs")
        save_metrics(output_dir, NAME, self.metrics)


def split_key(key: str) -> tuple[str, str]:
    """``"Linf/Carmon2019Unlabeled"`` -> ``("Linf", "Carmon2019Unlabeled")``; ValueError naming the form."""
    threat, sep, entry = key.partition("/")
    if not sep or threat not in ("Linf", "L2") or not entry:
        raise ValueError(f"a zoo entry is written '<Linf|L2>/<entry name>', got {key!r}")
    return threat, entry


def weight_shape(module: nn.Module) -> tuple | None:
    """The shape of ``module.weight`` (None for a BatchNorm without affine parameters)."""
    weight = getattr(module, "weight", None)
    return None if weight is None else tuple(weight.shape)


def architecture_signature(model: nn.Module, table: pd.DataFrame) -> str:
    """A short hash of the name, kind, input shape and weight shape of every layer the forward reaches (rows of
    ``table`` without a note): equal for the same architecture, whatever unused blocks a definition carries."""
    modules = dict(model.named_modules())
    text = ";".join(f"{r.layer}:{r.kind}:{r.input_shape}:{weight_shape(modules[r.layer])}"
                    for r in table[table.note == ""].itertuples(index=False))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def l2_bounds(module: nn.Module, in_shape, rtol: float) -> tuple[float, float]:
    """``(lower, upper)`` holding the layer's l2 operator norm: a certified interval for a conv, the exact
    largest singular value for a Linear, ``max |gamma| / sqrt(var + eps)`` (exact) for an eval-mode BatchNorm."""
    if isinstance(module, CONV_TYPES):
        return l2_interval(module, tuple(in_shape[-len(module.kernel_size):]), rtol=rtol,
                           generator=torch.Generator().manual_seed(0))
    if isinstance(module, nn.Linear):
        value = float(linear_norm(module, 2))
        return value, value
    value = float((module.weight / torch.sqrt(module.running_var + module.eps)).abs().max())
    return value, value


def model_norm_table(model: nn.Module, l2_rtol: float | None) -> pd.DataFrame:
    """One row per layer: name, kind, input_shape, linf, l1 (every conv / Linear / BatchNorm in eval mode), the
    l2 interval ``l2_lower`` / ``l2_upper`` (NaN when ``l2_rtol`` is None: not computed; a certified interval
    on a WideResNet-28-10 takes minutes of CPU per model), ``bn`` (a BatchNorm row: left out of the paper's
    l_inf view) and the ``note`` of rows without a norm (never reached, not normed)."""
    with torch.no_grad():
        linf = layer_norms(model, INPUT_SHAPE, math.inf, include_batchnorm=True)
        l1 = layer_norms(model, INPUT_SHAPE, 1, include_batchnorm=True)
        modules = dict(model.named_modules())
        bounds = [l2_bounds(modules[r.name], r.input_shape, l2_rtol) if r.note == "" and l2_rtol is not None
                  else (math.nan, math.nan)
                  for r in linf.itertuples(index=False)]
    table = linf[["name", "kind", "input_shape", "note"]].rename(columns={"name": "layer"})
    table["bn"] = [isinstance(modules[n], nn.modules.batchnorm._BatchNorm) for n in table.layer]
    table["linf"], table["l1"] = linf.norm.to_numpy(), l1.norm.to_numpy()
    table["l2_lower"], table["l2_upper"] = [b[0] for b in bounds], [b[1] for b in bounds]
    return table


def get_model(key: str, settings: dict) -> nn.Module:
    """Entry ``key`` with random weights (seeded) or its published weights (:func:`load_entry`)."""
    threat, entry = split_key(key)
    if settings["random_weights"]:
        torch.manual_seed(settings["seed"])
        model = build_entry(entry, threat)
    else:
        model = load_entry(entry, threat, model_dir=settings["model_dir"], download=True)
    return model.to(settings.get("device", "cpu"))


def model_summary(key: str, role: str, model: nn.Module, table: pd.DataFrame, weights: str) -> dict:
    """One summary row: layer counts by status and the norm statistics (log10 of the product of the Conv2d /
    Linear l_inf norms, median log10 l_inf, median log10 l1 with the BatchNorm layers)."""
    threat, entry = split_key(key)
    normed = table[table.note == ""]
    paper = normed[~normed.bn]
    return dict(key=key, threat_model=threat, entry=entry, role=role, weights=weights,
                signature=architecture_signature(model, table), n_params=sum(p.numel() for p in model.parameters()),
                n_conv_linear=len(paper), n_batchnorm=int(normed.bn.sum()),
                n_not_reached=int((table.note == NOT_REACHED).sum()),
                n_not_normed=int(((table.note != "") & (table.note != NOT_REACHED)).sum()),
                log10_linf_product=float(np.log10(paper.linf).sum()),
                median_log10_linf=float(np.log10(paper.linf).median()),
                median_log10_l1_with_bn=float(np.log10(normed.l1).median()))


def norm_tables(settings: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, norms)`` over every robust and standard entry of ``settings``, one model in memory at a time."""
    weights = "random" if settings["random_weights"] else "published"
    rows, tables = [], []
    roles = [*((k, "standard") for k in settings["standard_entries"]),
             *((k, "robust") for k in settings["robust_entries"])]
    for key, role in roles:
        model = get_model(key, settings)
        table = model_norm_table(model, settings["l2_rtol"] if settings["compute_l2"] else None)
        rows.append(model_summary(key, role, model, table, weights))
        tables.append(table.assign(key=key, role=role, depth=range(len(table))))
        del model
        gc.collect()
    return pd.DataFrame(rows), pd.concat(tables, ignore_index=True)


def pair_models(summary: pd.DataFrame) -> pd.DataFrame:
    """Each robust model with the standard model of its threat model and architecture signature (if any)."""
    standard = summary[summary.role == "standard"].set_index(["threat_model", "signature"]).entry
    rows = [dict(threat_model=r.threat_model, entry=r.entry, standard=standard.get((r.threat_model, r.signature)))
            for r in summary[summary.role == "robust"].itertuples(index=False)]
    pairs = pd.DataFrame(rows, columns=["threat_model", "entry", "standard"])
    return pairs.dropna(subset=["standard"]).reset_index(drop=True)


def with_accuracies(summary: pd.DataFrame, model_info_dir: str = "") -> pd.DataFrame:
    """``summary`` with the leaderboard's ``architecture``, ``clean_acc`` and ``autoattack_acc`` (percent)."""
    board = leaderboard(model_info_dir or None)
    cols = ["threat_model", "entry", "architecture", "clean_acc", "autoattack_acc", "source"]
    return summary.merge(board[cols], on=["threat_model", "entry"], how="left")


def run(settings: dict) -> RobustBenchResult:
    """Notebook 06 end to end (see the module docstring)."""
    summary, norms = norm_tables(settings)
    summary = with_accuracies(summary, settings.get("model_info_dir", ""))
    pairs = pair_models(summary)
    random_weights = bool(settings["random_weights"])
    paper_view = norms[~norms.bn]
    verdicts = [*judge.robust_vs_standard(paper_view, pairs, random_weights, "linf", "l_inf"),
                *judge.robust_vs_standard(norms, pairs, random_weights, "l1", "l1-with-BatchNorm")]
    for statistic in STATISTICS:
        verdicts += judge.norms_vs_robust_accuracy(summary, statistic, random_weights)
    counts = {r.key: dict(conv_linear=r.n_conv_linear, batchnorm=r.n_batchnorm, not_reached=r.n_not_reached,
                          not_normed=r.n_not_normed) for r in summary.itertuples(index=False)}
    metrics = dict(standard_entries=list(settings["standard_entries"]),
                   robust_entries=list(settings["robust_entries"]),
                   random_weights=random_weights, compute_l2=bool(settings["compute_l2"]), l2_rtol=settings["l2_rtol"],
                   layers=counts,
                   pairs=[f"{p.threat_model}/{p.entry} vs {p.standard}" for p in pairs.itertuples(index=False)],
                   leaderboard_source=str(summary.source.dropna().iloc[0]) if summary.source.notna().any() else "",
                   verdicts=records(verdicts))
    return RobustBenchResult(summary=summary, norms=norms, pairs=pairs, verdicts=verdicts, metrics=metrics)
