# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (norm-robustness)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Propositions 1 and 2: layer norms and Lipschitz constants say little about robustness
#
# **Claim (Proposition 1).** A ReLU network can have all layer norms arbitrarily large while its Lipschitz
# constant is 0. **Claim (Theorem 2, Proposition 2).** On 2-epsilon-separable data (Assumption 2) a network
# with robust accuracy 1 under attacks of size epsilon exists, and its Lipschitz constant can exceed any xi.
#
# **Check.** The constructions of `nblib.experiments.toys`: norms versus a scale factor swept over several orders of
# magnitude, with the output's spread over random inputs; then on 2-D separable classes a network built
# as in the proof, verified robust exactly on a grid over every epsilon-ball and by a strong PGD attack,
# with its Lipschitz constant estimated from below and bounded from above by the product of layer norms.

# %% tags=["parameters"]
profile = "smoke"  # name of the params/ profile that ran this notebook
output_dir = "../outputs/smoke"  # folder for figures/, tables/, metrics/
device = "cpu"  # unused: the toy networks are tiny and run on CPU
scales = [1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0]  # Proposition 1 scale factors
prop1_depth = 4  # Linear layers of the Proposition 1 network
n_random_inputs = 2000  # random inputs for the output spread
eps = 0.1  # attack radius (l_inf) for Proposition 2
xis = [10.0, 1000.0]  # Lipschitz lower bounds the Proposition 2 networks must exceed
n_per_class = 6  # data points per class
n_classes = 3  # classes of the 2-D data set
grid_points_per_dim = 21  # grid points per dimension inside each eps-ball (exact check)
pgd_steps = 100  # PGD steps per restart
pgd_restarts = 5  # PGD restarts
seed = 0  # seed of data and networks

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from nblib.experiments import toys
from nblib.claims import propositions as judge
from nblib.claims.verdict import UNTESTABLE, records
from nblib.norms import layer_norms
from nblib.results import save_figure, save_metrics, save_table

torch.manual_seed(seed)

# %% [markdown]
# ## Proposition 1

# %%
x = 100 * torch.randn(n_random_inputs, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
rows = []
for s in scales:
    net = toys.prop1_network(s, depth=prop1_depth, seed=seed, dtype=torch.float64)
    for p, label in [(1, "l1"), (2, "l2"), (math.inf, "linf")]:
        t = layer_norms(net, (2,), p)
        rows += [dict(scale=s, p=label, layer=i, norm=v) for i, v in enumerate(t.norm)]
    rows.append(dict(scale=s, p="output spread", layer=-1, norm=toys.output_spread(net, x)))
    rows.append(dict(scale=s, p="empirical Lipschitz", layer=-1, norm=toys.empirical_lipschitz(net, x, seed=seed)))
prop1 = pd.DataFrame(rows)
save_table(prop1, output_dir, "05_prop1")
prop1.pivot_table(index="scale", columns="p", values="norm", aggfunc="min")

# %% [markdown]
# ## Theorem 2 and Proposition 2

# %%
X, y = toys.separable_blobs(n_per_class=n_per_class, n_classes=n_classes, eps=eps, seed=seed)
d_min = toys.min_interclass_distance(X, y)
prop2 = []
nets = {}
for xi in xis:
    net, delta = toys.prop2_network(X, y, eps, xi)
    nets[xi] = (net, delta)
    _, pgd_acc = toys.pgd_linf(net, X, y, eps, steps=pgd_steps, restarts=pgd_restarts, seed=seed)
    prop2.append(dict(xi=xi, delta=delta,
                      grid_robust_acc=toys.robust_accuracy_grid(net, X, y, eps, grid_points_per_dim),
                      pgd_robust_acc=pgd_acc, lipschitz_lower=toys.lipschitz_lower_bound(net, X, seed=seed),
                      lipschitz_upper_product=toys.lipschitz_upper_bound_product(net)))
prop2 = pd.DataFrame(prop2)
save_table(prop2, output_dir, "05_prop2")
prop2

# %% [markdown]
# ## Verdict

# %%
spread = prop1[prop1.p == "output spread"].norm
smallest = prop1[prop1.layer >= 0].groupby("scale").norm.min()
metrics = dict(
    prop1_min_layer_norm_at_max_scale=float(smallest.iloc[-1]), prop1_max_output_spread=float(spread.max()),
    prop1_norm_growth=float(smallest.iloc[-1] / smallest.iloc[0]),
    prop2_min_interclass_distance=d_min, prop2_eps=eps,
    prop2_grid_robust_acc=prop2.grid_robust_acc.tolist(), prop2_pgd_robust_acc=prop2.pgd_robust_acc.tolist(),
    prop2_xi=prop2.xi.tolist(), prop2_lipschitz_lower=prop2.lipschitz_lower.tolist(),
)
claims = [judge.proposition1(prop1), *judge.proposition2(prop2, d_min, eps)]
metrics["verdicts"] = records(claims)
save_metrics(output_dir, "05_propositions", metrics)
for v in claims:
    print(v.line() + ("" if v.outcome == UNTESTABLE else f" ({v.reason})"))
print(f"Prop. 2: data 2eps-separable (d_min = {d_min:.3f} > {2 * eps}); Lipschitz lower bounds "
      f"{[f'{v:.3g}' for v in prop2.lipschitz_lower]} for xi = {xis}")

# %%
# NBVAL_CHECK_OUTPUT
for v in claims:
    print(v.line())

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for p in ["l1", "l2", "linf"]:
    d = prop1[(prop1.p == p)].groupby("scale").norm.min()
    axes[0].loglog(d.index, d.values, marker="o", label=f"smallest layer {p} norm")
axes[0].loglog(spread.index.map(lambda i: prop1.scale[i]), spread.clip(lower=1e-300).values + 1e-12, "k--",
               label="output spread (+1e-12)")
axes[0].set_xlabel("scale factor of the construction")
axes[0].set_ylabel("norm / output spread")
axes[0].legend(fontsize=8)
axes[0].set_title("Prop. 1: norms grow, the network stays constant", fontsize=10)
net, delta = nets[xis[0]]
pad = 3 * eps
xx, yy, pred = toys.decision_grid(net, (X[:, 0].min() - pad, X[:, 0].max() + pad),
                                  (X[:, 1].min() - pad, X[:, 1].max() + pad), n=300)
axes[1].contourf(xx, yy, np.ma.masked_less(pred, 0), levels=np.arange(-0.5, n_classes), cmap="tab10", vmin=0, vmax=9,
                 alpha=0.3)
for xi_, yi_ in zip(X.tolist(), y.tolist()):
    axes[1].add_patch(plt.Rectangle((xi_[0] - eps, xi_[1] - eps), 2 * eps, 2 * eps, fill=False, lw=0.8))
axes[1].scatter(X[:, 0], X[:, 1], c=y, cmap="tab10", vmin=0, vmax=9, s=12)
axes[1].set_title(f"Prop. 2: decision regions (xi = {xis[0]:g}, delta = {delta:.3g}), boxes: eps-balls", fontsize=10)
axes[1].set_aspect("equal")
axes[1].set_xlabel("x1")
axes[1].set_ylabel("x2")
save_figure(fig, output_dir, "05_propositions");
