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
# **Check.** The constructions of `nblib.experiments.toys`, run by `nblib.experiments.propositions`: norms
# versus a scale factor swept over several orders of magnitude, with the output's spread over random inputs;
# then on 2-D separable classes a network built as in the proof, verified robust exactly on a grid over every
# epsilon-ball and by a strong PGD attack, with its Lipschitz constant estimated from below and bounded from
# above by the product of layer norms.

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
import matplotlib.pyplot as plt
import numpy as np

from nblib.claims.verdict import UNTESTABLE
from nblib.experiments import propositions, toys
from nblib.results import save_figure

# %% [markdown]
# ## Proposition 1

# %%
result = propositions.run(globals())  # both propositions; tables and metrics JSON written below
result.save(output_dir)
prop1, X, y = result.prop1, result.X, result.y
result.prop1_summary()

# %% [markdown]
# ## Theorem 2 and Proposition 2

# %%
result.prop2

# %% [markdown]
# ## Verdict

# %%
for v in result.verdicts:
    print(v.line() + ("" if v.outcome == UNTESTABLE else f" ({v.reason})"))
print(f"Prop. 2: data 2eps-separable (d_min = {result.d_min:.3f} > {2 * eps}); Lipschitz lower bounds "
      f"{[f'{v:.3g}' for v in result.prop2.lipschitz_lower]} for xi = {xis}")

# %%
# NBVAL_CHECK_OUTPUT
for v in result.verdicts:
    print(v.line())

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for p in ["l1", "l2", "linf"]:
    d = prop1[(prop1.p == p)].groupby("scale").norm.min()
    axes[0].loglog(d.index, d.values, marker="o", label=f"smallest layer {p} norm")
spread = prop1[prop1.p == "output spread"].norm
axes[0].loglog(spread.index.map(lambda i: prop1.scale[i]), spread.clip(lower=1e-300).values + 1e-12, "k--",
               label="output spread (+1e-12)")
axes[0].set_xlabel("scale factor of the construction")
axes[0].set_ylabel("norm / output spread")
axes[0].legend(fontsize=8)
axes[0].set_title("Prop. 1: norms grow, the network stays constant", fontsize=10)
net, delta = result.nets[xis[0]]
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
