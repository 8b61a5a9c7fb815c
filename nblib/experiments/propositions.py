"""Notebook 05 end to end (Proposition 1, Theorem 2, Proposition 2): layer norms and Lipschitz constants say
little about robustness.

``run(settings) -> PropositionsResult``: the l1 / l2 / l_inf norms of every layer of Proposition 1's network
(:func:`nblib.experiments.toys.prop1_network`) over a sweep of scale factors, next to the network's output
spread and an empirical Lipschitz estimate (both 0: the network is constant); then, on 2-eps-separable data
(Assumption 2), Proposition 2's networks (:func:`nblib.experiments.toys.prop2_network`), one per xi, with robust
accuracy on a grid over every eps-ball and under PGD, and Lipschitz lower / upper bounds.  The claims are
decided by :mod:`nblib.claims.propositions`.  ``settings`` is the notebook's parameters (``globals()``) or the
same names in a dict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch

from nblib.claims import propositions as judge
from nblib.claims.verdict import records
from nblib.experiments import toys
from nblib.norms import layer_norms
from nblib.results import save_metrics, save_table

#: The parameters of notebook 05 that :func:`run` reads.
SETTINGS = ("scales", "prop1_depth", "n_random_inputs", "eps", "xis", "n_per_class", "n_classes",
            "grid_points_per_dim", "pgd_steps", "pgd_restarts", "seed")


@dataclass
class PropositionsResult:
    """Notebook 05's tables, data, networks and verdicts."""

    prop1: pd.DataFrame          # scale, p, layer, norm (layer -1: "output spread", "empirical Lipschitz")
    prop2: pd.DataFrame          # one row per xi: delta, grid / PGD robust accuracy, Lipschitz lower / upper
    X: torch.Tensor              # the 2-eps-separable data (float64, n x 2) ...
    y: torch.Tensor              # ... and their classes
    d_min: float                 # smallest l_inf distance between points of different classes
    nets: dict                   # xi -> (Proposition 2 network, delta)
    verdicts: list = field(default_factory=list)  # the claims (nblib.claims.propositions)
    metrics: dict = field(default_factory=dict)   # outputs/<profile>/metrics/05_propositions.json

    def prop1_summary(self) -> pd.DataFrame:
        """Per scale: the smallest layer norm for each p, the output spread and the Lipschitz estimate."""
        return self.prop1.pivot_table(index="scale", columns="p", values="norm", aggfunc="min")

    def save(self, output_dir) -> None:
        """Write the tables (``tables/05_prop1``, ``tables/05_prop2``) and the metrics JSON."""
        save_table(self.prop1, output_dir, "05_prop1")
        save_table(self.prop2, output_dir, "05_prop2")
        save_metrics(output_dir, "05_propositions", self.metrics)


def proposition1_table(scales, depth: int, n_random_inputs: int, seed: int) -> pd.DataFrame:
    """Proposition 1 per scale factor s: the l1, l2 and l_inf operator norm of every layer of
    ``prop1_network(s)`` (float64; each proportional to s), and, as rows with ``layer = -1``, the output spread
    and the empirical Lipschitz estimate over ``n_random_inputs`` inputs N(0, 100^2 I) (both exactly 0)."""
    x = 100 * torch.randn(n_random_inputs, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows = []
    for s in scales:
        net = toys.prop1_network(s, depth=depth, seed=seed, dtype=torch.float64)
        for p, label in [(1, "l1"), (2, "l2"), (math.inf, "linf")]:
            rows += [dict(scale=s, p=label, layer=i, norm=v) for i, v in enumerate(layer_norms(net, (2,), p).norm)]
        rows.append(dict(scale=s, p="output spread", layer=-1, norm=toys.output_spread(net, x)))
        rows.append(dict(scale=s, p="empirical Lipschitz", layer=-1, norm=toys.empirical_lipschitz(net, x, seed=seed)))
    return pd.DataFrame(rows)


def proposition2_table(X: torch.Tensor, y: torch.Tensor, eps: float, xis, grid_points_per_dim: int,
                       pgd_steps: int, pgd_restarts: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Theorem 2 / Proposition 2 per xi: the network of ``prop2_network`` (l_inf Lipschitz >= 1/delta >= 2 xi),
    its robust accuracy at radius ``eps`` on a grid over every eps-ball and under PGD with restarts, and its
    Lipschitz constant bounded from below (bisection) and above (product of layer l_inf norms).  Returns the
    table and ``{xi: (net, delta)}``."""
    rows, nets = [], {}
    for xi in xis:
        net, delta = toys.prop2_network(X, y, eps, xi)
        nets[xi] = (net, delta)
        pgd = toys.pgd_robust_accuracy(net, X, y, eps, steps=pgd_steps, restarts=pgd_restarts, seed=seed)
        rows.append(dict(xi=xi, delta=delta,
                         grid_robust_acc=toys.robust_accuracy_grid(net, X, y, eps, grid_points_per_dim),
                         pgd_robust_acc=pgd.accuracy, lipschitz_lower=toys.lipschitz_lower_bound(net, X, seed=seed),
                         lipschitz_upper_product=toys.lipschitz_upper_bound_product(net)))
    return pd.DataFrame(rows), nets


def propositions_metrics(prop1: pd.DataFrame, prop2: pd.DataFrame, d_min: float, eps: float, claims) -> dict:
    """The metrics JSON of notebook 05: the smallest layer norm at the largest scale and its growth over the
    sweep, the largest output spread, the data's separation, and per xi the robust accuracies and the
    Lipschitz lower bound; then the verdicts."""
    spread = prop1[prop1.p == "output spread"].norm
    smallest = prop1[prop1.layer >= 0].groupby("scale").norm.min()
    return dict(
        prop1_min_layer_norm_at_max_scale=float(smallest.iloc[-1]), prop1_max_output_spread=float(spread.max()),
        prop1_norm_growth=float(smallest.iloc[-1] / smallest.iloc[0]),
        prop2_min_interclass_distance=d_min, prop2_eps=eps,
        prop2_grid_robust_acc=prop2.grid_robust_acc.tolist(), prop2_pgd_robust_acc=prop2.pgd_robust_acc.tolist(),
        prop2_xi=prop2.xi.tolist(), prop2_lipschitz_lower=prop2.lipschitz_lower.tolist(),
        verdicts=records(claims),
    )


def run(settings: dict) -> PropositionsResult:
    """Notebook 05 end to end: :func:`proposition1_table`, the data of
    :func:`nblib.experiments.toys.separable_blobs`, :func:`proposition2_table`, the verdicts."""
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise KeyError(f"propositions.run needs the notebook parameters {missing}")
    seed, eps = settings["seed"], settings["eps"]
    prop1 = proposition1_table(settings["scales"], settings["prop1_depth"], settings["n_random_inputs"], seed)
    X, y = toys.separable_blobs(n_per_class=settings["n_per_class"], n_classes=settings["n_classes"], eps=eps,
                                seed=seed)
    d_min = toys.min_interclass_distance(X, y)
    prop2, nets = proposition2_table(X, y, eps, settings["xis"], settings["grid_points_per_dim"],
                                     settings["pgd_steps"], settings["pgd_restarts"], seed)
    claims = [judge.proposition1(prop1), *judge.proposition2(prop2, d_min, eps)]
    return PropositionsResult(prop1=prop1, prop2=prop2, X=X, y=y, d_min=d_min, nets=nets, verdicts=claims,
                              metrics=propositions_metrics(prop1, prop2, d_min, eps, claims))
