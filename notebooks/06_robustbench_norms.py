# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (norm-robustness)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Beyond the paper: Figure 2's claim on RobustBench's published robust models
#
# **Claim (Figure 2, extended).** Adversarially robust CNNs have layer norms comparable to, or larger than,
# those of standard (plainly trained) CNNs of the same architecture: large norms do not hurt robustness. The
# paper checks four architectures its authors trained; here the claim is checked on RobustBench's published
# CIFAR-10 models (l_inf and l2 leaderboards) with no training at all, and we ask whether any norm statistic
# tracks the leaderboard's AutoAttack accuracy.
#
# **Check.** For every listed zoo entry (`<Linf|L2>/<entry>`): the exact l_inf and l1 operator norms of every
# Conv2d / Linear layer at its true 32x32-input size (Theorem 1 / the exact general method), the l1 norm with
# the BatchNorm layers (the authors' Figure 2 view) and, if asked, a certified interval holding each layer's
# l2 norm. Layers the forward never reaches and modules the engine does not norm are listed with the reason.
# Each robust model is compared layer by layer with the standard model of the same architecture (sign test
# and median ratio, as in notebook 04), and Spearman's rank correlation relates three norm statistics to the
# AutoAttack accuracy (`nblib.claims.robustbench`). Accuracies: RobustBench's leaderboard (`model_info`,
# the source is printed below).
#
# **Weights.** `random_weights = True` builds the architectures offline with random weights (smoke, rehearsal):
# then every verdict is "not testable (random weights)", never a verdict on untrained networks. The paper
# profile loads the published weights (downloaded once into `model_dir`, online only).

# %% tags=["parameters"]
profile = "smoke"  # name of the params/ profile that ran this notebook
output_dir = "../outputs/smoke"  # folder for figures/, tables/, metrics/
device = "cpu"  # torch device that holds each model while its norms are computed
standard_entries = ["Linf/Standard"]  # plainly trained zoo entries, "<Linf|L2>/<entry>"
robust_entries = ["Linf/Carmon2019Unlabeled", "Linf/Wong2020Fast"]  # robust zoo entries, "<Linf|L2>/<entry>"
random_weights = True  # True: architectures with random weights, offline; False: the published weights
model_dir = "../models"  # RobustBench's weight folder (<model_dir>/cifar10/<Linf|L2>/<entry>.pt)
model_info_dir = ""  # RobustBench's model_info folder for the accuracies; empty: the copy shipped in nblib
compute_l2 = False  # also a certified interval on every layer's l2 norm (minutes of CPU per WideResNet)
l2_rtol = 0.01  # relative width of each certified l2 interval
seed = 0  # seed of the random weights
threads = 2  # torch CPU threads

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from nblib.experiments import robustbench
from nblib.results import save_figure

torch.set_num_threads(threads)
result = robustbench.run(globals())
result.save(output_dir)
summary, norms, pairs = result.summary, result.norms, result.pairs
print("accuracies from:", result.metrics["leaderboard_source"])
summary.drop(columns=["source", "signature"]).round(3)

# %% [markdown]
# ## Figure 2 per pair: robust against standard, same architecture (l_inf view, Conv2d / Linear)

# %%
paper_view = norms[(norms.note == "") & ~norms.bn].assign(log10_linf=lambda t: np.log10(t.linf))
n = max(len(pairs), 1)
fig, axes = plt.subplots(1, n, figsize=(6 * n, 3.6), squeeze=False)
for ax, pair in zip(axes[0], pairs.itertuples(index=False)):
    for key in (f"{pair.threat_model}/{pair.standard}", f"{pair.threat_model}/{pair.entry}"):
        sns.kdeplot(x=paper_view[paper_view.key == key].log10_linf, ax=ax, label=key, warn_singular=False)
    ax.set_xlabel("log10 l_inf norm of a layer")
    ax.set_title(f"{pair.entry} vs {pair.standard} ({'random' if random_weights else 'published'} weights)",
                 fontsize=9)
    ax.legend(fontsize=7)
save_figure(fig, output_dir, "06_figure2_pairs")

# %% [markdown]
# ## Norm statistics against the leaderboard's accuracies

# %%
stats = list(robustbench.STATISTICS)
fig, axes = plt.subplots(1, len(stats), figsize=(5 * len(stats), 3.6), squeeze=False)
for ax, stat in zip(axes[0], stats):
    sns.scatterplot(data=summary, x=stat, y="autoattack_acc", hue="threat_model", style="role", ax=ax)
    ax.set_ylabel("AutoAttack accuracy (%, leaderboard)")
save_figure(fig, output_dir, "06_norms_vs_accuracy")

# %% [markdown]
# ## Layers by status, and the verdicts

# %%
for v in result.verdicts:
    print(v.explained())

# %%
# NBVAL_CHECK_OUTPUT
for key, counts in result.metrics["layers"].items():
    print(key, counts)
print("pairs:", result.metrics["pairs"])
for v in result.verdicts:
    print(v.line())
