# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (norm-robustness)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Figure 2: do adversarially robust networks have small layer norms?
#
# **Claim (Figure 2).** CNNs trained with PGD-AT (Madry et al.), ALP (Kannan et al.) and TRADES (Zhang et
# al.) have l_inf layer norms comparable to, or larger than, those of plainly trained CNNs, while being far
# more robust. Large norms do not hurt robustness; what matters is the *local* Lipschitzness of the network.
#
# **Check.** For each model, one plain and three adversarially trained runs (l_inf, eps 8/255, step 2/255,
# 10 PGD steps, TRADES beta 6; through the sweep cache), then the exact l_inf and l1 norms of every Conv2d
# and Linear layer (Theorem 1 at the layer's input size), the Figure 2 plot (KDE + rug of the layers' norms
# per method; the legend gives clean and standard-AutoAttack robust accuracy at eps), and the norms
# against depth. Beyond the paper: an empirical local Lipschitz constant of each network around test
# points (the largest ratio ||f(x') - f(x)||_1 / ||x' - x||_inf found by gradient ascent in the eps-ball,
# `nblib.attacks.local_lipschitz`) beside the product of its layers' l_inf norms (the global bound of the
# composed linear maps; it leaves out BatchNorm and skip connections).
#
# `smoke`: the embedded digits, a small CNN, a few epochs, a small attacked subset (standard AutoAttack
# costs about half a minute per network on this CPU even on 20 points). `paper`: CIFAR-10, 120 epochs,
# lr 0.1 with the paper's schedule.

# %% tags=["parameters"]
profile = "smoke"  # name of the params/ profile that ran this notebook
output_dir = "../outputs/smoke"  # folder for figures/, tables/, metrics/
device = "cpu"  # torch device of every training run
runs_dir = ""  # sweep cache, one folder per config hash: empty for output_dir/runs (this profile only), or a folder shared by profiles
executor = "local"  # nblib.sweep executor: local | slurm
gpus = []  # local executor: one worker process per listed GPU; [] runs sequentially in this kernel
slurm_partition = ""  # slurm executor: partition, empty for the cluster default; one GPU per job
slurm_timeout_min = 1440  # slurm executor: time limit of one run (killed runs resume on the next call)
models = ["smallcnn"]  # nblib.models names
modes = ["plain", "pgd", "alp", "trades"]  # training modes (nblib.adversarial)
adv_preset = "standard"  # standard (8/255, 2/255, 10 steps, TRADES beta 6) | authors (0.031, 0.007, beta 1)
dataset = "digits"  # digits (embedded, offline) | cifar10
data_root = "../data"  # folder holding cifar-10-batches-py (cifar10 only)
train_subset = 0  # training images used (a fixed, seeded subset); 0: all of them
epochs = 6  # training epochs (the schedule scales with it)
lr = 0.05  # initial learning rate (paper: 0.1)
batch_size = 128  # SGD batch size
eps_255 = 8  # evaluation l_inf radius in units of 1/255 (AutoAttack and local Lipschitz)
attack = "standard"  # standard AutoAttack | authors (APGD-CE + APGD-T only)
attack_budget = 1.0  # fraction of AutoAttack's iterations/queries: 1 as published, < 1 rehearses only
n_eval = 20  # attacked test points (fixed, seeded subset)
seed = 0  # seed of every run

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from nblib import experiments, sweep
from nblib.results import save_figure, save_metrics, save_table

torch.manual_seed(seed)
slurm = sweep.slurm_kwargs(executor, slurm_partition, slurm_timeout_min)
LABELS = {"plain": "plain", "pgd": "PGD-AT", "alp": "ALP", "trades": "TRADES"}

# %% [markdown]
# ## The runs (cached: finished runs are read back, killed runs resume)

# %%
configs = experiments.figure2_run_configs(globals())
results = sweep.run_sweep(configs, runs_dir or f"{output_dir}/runs", executor=executor,
                          gpus=gpus or None, slurm_kwargs=slurm)
summary = results[["model", "adv_mode", "clean_acc", "robust_acc", "lip_mean", "lip_max", "grad_margin_mean",
                   "log10_linf_norm_product"]].copy()
save_table(summary, output_dir, "04_accuracy_lipschitz")
summary.round(4)

# %% [markdown]
# ## Figure 2: distribution of the layers' l_inf norms

# %%
norms = experiments.layer_norm_frame(results)
norms["method"] = norms.adv_mode.map(LABELS)
norms["log10_linf"] = np.log10(norms.linf)
save_table(norms, output_dir, "04_layer_norms")
fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
for ax, model in zip(axes[0], models):
    part = norms[norms.model == model]
    acc = summary[summary.model == model].set_index("adv_mode")
    for mode in modes:
        vals = part[part.adv_mode == mode].log10_linf
        label = (f"{LABELS[mode]} (clean {100 * acc.clean_acc[mode]:.1f}%, "
                 f"robust {100 * acc.robust_acc[mode]:.1f}%)")
        color = sns.color_palette()[modes.index(mode)]
        sns.kdeplot(x=vals, ax=ax, color=color, label=label, warn_singular=False)
        sns.rugplot(x=vals, ax=ax, color=color, height=0.06)
    ax.set_xlabel("log10 l_inf norm of a layer")
    ax.set_title(f"{model}: layer norms (robust accuracy: AutoAttack {attack}, eps {eps_255}/255)")
    ax.legend(fontsize=7)
save_figure(fig, output_dir, "04_figure2")

# %%
fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.8), squeeze=False)
for ax, model in zip(axes[0], models):
    part = norms[norms.model == model]
    for mode in modes:
        g = part[part.adv_mode == mode]
        ax.plot(g.depth, g.linf, marker="o", ms=3, label=LABELS[mode])
    ax.set_yscale("log")
    ax.set_xlabel("layer (Conv2d / Linear, in module order)")
    ax.set_ylabel("l_inf norm")
    ax.set_title(f"{model}: norm of each layer")
    ax.legend(fontsize=8)
save_figure(fig, output_dir, "04_norms_per_layer")

# %% [markdown]
# ## Local Lipschitz estimate against the product of layer norms

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
lab = summary.assign(run=summary.model + " " + summary.adv_mode.map(LABELS))
axes[0].bar(lab.run, lab.lip_mean)
axes[0].set_ylabel("mean local Lipschitz estimate (l_inf -> l1)")
axes[1].bar(lab.run, lab.log10_linf_norm_product)
axes[1].set_ylabel("log10 product of layer l_inf norms")
for ax in axes:
    ax.tick_params(axis="x", rotation=45)
axes[0].set_title(f"around {n_eval} test points, eps {eps_255}/255")
axes[1].set_title("global bound of the composed linear maps")
save_figure(fig, output_dir, "04_local_lipschitz")

# %% [markdown]
# ## Verdict

# %%
rows = []
for model in models:
    med = norms[norms.model == model].groupby("adv_mode").log10_linf.median()
    acc = summary[summary.model == model].set_index("adv_mode")
    for mode in [m for m in modes if m != "plain"]:
        rows.append(dict(model=model, mode=mode,
                         median_log10_norm_vs_plain=float(med[mode] - med["plain"]),
                         log10_norm_product_vs_plain=float(acc.log10_linf_norm_product[mode]
                                                           - acc.log10_linf_norm_product["plain"]),
                         robust_gain=float(acc.robust_acc[mode] - acc.robust_acc["plain"]),
                         lip_ratio=float(acc.lip_mean[mode] / acc.lip_mean["plain"])))
verdict = pd.DataFrame(rows)
save_table(verdict, output_dir, "04_verdict")
larger_norms = float((verdict.median_log10_norm_vs_plain >= 0).mean())
comparable_or_larger = float((verdict.median_log10_norm_vs_plain >= -math.log10(2)).mean())  # within 2x or above
more_robust = bool((verdict.robust_gain > 0).all())
smaller_lip = bool((verdict.lip_ratio < 1).all())
metrics = dict(
    models=models, modes=modes, dataset=dataset, eps=eps_255 / 255, attack=attack, attack_budget=attack_budget, n_eval=n_eval, epochs=epochs,
    clean_acc={f"{r.model}/{r.adv_mode}": r.clean_acc for r in summary.itertuples()},
    robust_acc={f"{r.model}/{r.adv_mode}": r.robust_acc for r in summary.itertuples()},
    lip_mean={f"{r.model}/{r.adv_mode}": r.lip_mean for r in summary.itertuples()},
    log10_linf_norm_product={f"{r.model}/{r.adv_mode}": r.log10_linf_norm_product for r in summary.itertuples()},
    share_robust_runs_with_larger_median_norm=larger_norms,
    share_robust_runs_with_comparable_or_larger_median_norm=comparable_or_larger,
    median_log10_norm_vs_plain={f"{r.model}/{r.mode}": r.median_log10_norm_vs_plain for r in verdict.itertuples()},
    every_robust_run_more_robust=more_robust, every_robust_run_smaller_local_lipschitz=smaller_lip,
    n_layers=int(norms.groupby(["model", "adv_mode"]).size().min()),
)
save_metrics(output_dir, "04_adversarial_norms", metrics)
print(f"adversarially trained runs whose median layer norm is at least the plain run's: {100 * larger_norms:.0f}%")
print(f"robust accuracy gain over plain: {', '.join(f'{r.mode} {100 * r.robust_gain:+.0f}' for r in verdict.itertuples())} points")
print(f"local Lipschitz / plain: {', '.join(f'{r.mode} {r.lip_ratio:.2f}' for r in verdict.itertuples())}")
print(f"... whose median layer norm is at least half the plain run's (comparable or larger): {100 * comparable_or_larger:.0f}%")
print(("Robust networks have layer norms comparable to or larger than the plain ones" if comparable_or_larger == 1 else
       "Some robust networks have clearly smaller layer norms than the plain ones")
      + (", while their local Lipschitz estimates are all smaller: robustness shows in local Lipschitzness,"
         " not in the layer norms." if smaller_lip else "; their local Lipschitz estimates are not all smaller."))

# %%
# NBVAL_CHECK_OUTPUT
print("every adversarially trained network is more robust than the plain one:", more_robust)
print("every adversarially trained network has a smaller local Lipschitz estimate:", smaller_lip)
