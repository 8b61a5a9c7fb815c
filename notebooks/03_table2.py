# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (norm-robustness)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Table 2: norm regularization, clean accuracy and robustness
#
# **Claim (Table 2).** Regularizing the norms of the layers (weight decay, singular value clipping, and the
# paper's l1 / l_inf norm decay, Algorithm 1) can improve clean accuracy (generalization), but it does not
# make CNNs more robust: robust accuracy under AutoAttack (l_inf, eps = 1/255 on CIFAR-10) often *drops*
# as the regularization gets stronger.
#
# **Check.** One training run per (model, method, strength), cached and resumable (`nblib.sweep`): SGD
# with momentum 0.9, batch 128, the paper's schedule (lr x0.1 at 75/120, 90/120 and 100/120 of the
# epochs), then clean accuracy on the test set and robust accuracy with standard AutoAttack on a fixed,
# seeded test subset. The table has the paper's layout; in the `paper` profile the published numbers sit
# beside ours. Plots show the exact layer norms (Theorem 1) that each regularizer reaches.
#
# The `smoke` profile runs the same code on the embedded handwritten digits (CPU, minutes): a small CNN,
# a handful of epochs, larger strengths (a few dozen SGD steps must show an effect), a small attacked
# subset, eps = 8/255 (digits have 16 grey levels: at 1/255 almost no point is broken and every point
# goes through all four AutoAttack attacks, the slowest case) and the two APGD attacks of AutoAttack that the
# authors' code ran (on this CPU Square's 5000 queries alone cost about 25 s per run, whatever the subset
# size). The `paper` profile runs standard AutoAttack at 1/255.

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
dataset = "digits"  # digits (embedded, offline) | cifar10
data_root = "../data"  # folder holding cifar-10-batches-py (cifar10 only)
train_subset = 0  # training images used (a fixed, seeded subset); 0: all of them
epochs = 6  # training epochs (the schedule scales with it)
lr = 0.05  # initial learning rate (paper: 0.01)
batch_size = 128  # SGD batch size
wd = [0.01, 0.001]  # weight decay strengths
svc = [0.5, 1.0]  # singular value clipping thresholds c
nd_l1 = [0.1, 0.01]  # l1 norm decay strengths beta
nd_linf = [0.1, 0.01]  # l_inf norm decay strengths beta
nd_gamma = 0.5  # norm decay momentum gamma (Algorithm 1)
svc_every = 10  # optimizer steps between two singular value clippings
eps_255 = 8  # AutoAttack l_inf radius in units of 1/255 (paper: 1)
attack = "authors"  # standard AutoAttack | authors (APGD-CE + APGD-T only, what the authors' code ran)
attack_budget = 1.0  # fraction of AutoAttack's iterations/queries: 1 as published, < 1 rehearses only
n_eval = 100  # attacked test points (fixed, seeded subset)
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

# %% [markdown]
# ## The sweep (cached: finished runs are read back, killed runs resume)

# %%
configs = experiments.table2_run_configs(globals())
results = sweep.run_sweep(configs, runs_dir or f"{output_dir}/runs", executor=executor, gpus=gpus or None,
                            slurm_kwargs=slurm)
print(f"{len(results)} runs in {runs_dir or output_dir + '/runs'}")

# %% [markdown]
# ## Table 2 (clean / robust accuracy, %)

# %%
frame = experiments.table2_frame(results)
with_paper = dataset == "cifar10" and eps_255 == 1
wide = experiments.table2_wide(frame, with_paper=with_paper)
save_table(frame, output_dir, "03_table2_long")
save_table(experiments.flat_columns(wide).reset_index(), output_dir, "03_table2", latex=True)
wide.round(1)

# %% [markdown]
# ## Layer norms against regularization strength

# %%
norms = experiments.layer_norm_frame(results)
summary = (norms.assign(log_linf=np.log10(norms.linf), log_l1=np.log10(norms.l1))
           .groupby(["model", "regularizer", "reg_strength"], as_index=False)[["log_linf", "log_l1"]].mean())
save_table(summary, output_dir, "03_mean_log10_norms")
fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
for row, model in zip(axes, models):
    part = summary[summary.model == model]
    plain = part[part.regularizer == "none"]
    for ax, col, label in zip(row, ["log_linf", "log_l1"], ["l_inf", "l1"]):
        for kind in ["wd", "svc", "nd_l1", "nd_linf"]:
            k = part[part.regularizer == kind].sort_values("reg_strength")
            if len(k):
                ax.plot(k.reg_strength, k[col], marker="o", label=experiments.METHOD_LABELS[kind])
        ax.axhline(float(plain[col].iloc[0]), color="k", ls="--", label="plain")
        ax.set_xscale("log")
        ax.set_xlabel("strength (wd, beta; c for SVC)")
        ax.set_ylabel(f"mean log10 {label} layer norm")
        ax.set_title(f"{model}: {label} norms of all Conv2d/Linear layers")
    row[0].legend(fontsize=8)
save_figure(fig, output_dir, "03_norms_vs_strength")

# %%
hist = experiments.history_frame(results)
fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 3.6), squeeze=False)
for ax, model in zip(axes[0], models):
    h = hist[hist.model == model]
    for (kind, s), g in h.groupby(["regularizer", "reg_strength"]):
        ax.plot(g.epoch, g.mean_log10_linf, label=f"{experiments.METHOD_LABELS[kind]} {s:g}" if kind != "none" else "plain",
                lw=2.5 if kind == "none" else 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean log10 l_inf layer norm")
    ax.set_title(f"{model}: norms during training")
axes[0][0].legend(fontsize=7, ncol=2)
save_figure(fig, output_dir, "03_norms_during_training")

# %% [markdown]
# ## Verdict

# %%
merged = summary.merge(frame, left_on=["model", "regularizer", "reg_strength"],
                       right_on=["model", "regularizer", "strength"])
plain_rows = frame[frame.regularizer == "none"].set_index("model")
plain_norm = summary[summary.regularizer == "none"].set_index("model")
checks = {}
for kind, col in [("wd", "log_linf"), ("svc", "log_linf"), ("nd_l1", "log_l1"), ("nd_linf", "log_linf")]:
    rows = merged[merged.regularizer == kind]
    pick = rows.reg_strength.min() if kind == "svc" else rows.reg_strength.max()
    rows = rows[rows.reg_strength == pick].set_index("model")
    checks[kind] = dict(lowers_norm=bool((rows[col] < plain_norm.loc[rows.index, col]).all()),
                        clean_change=float((rows.clean - plain_rows.loc[rows.index, "clean"]).mean()),
                        robust_change=float((rows.robust - plain_rows.loc[rows.index, "robust"]).mean()))
regularized = frame[frame.regularizer != "none"]
best_clean_gain = float((regularized.groupby("model").clean.max() - plain_rows.clean).mean())
robust_drop_share = float((regularized.robust < plain_rows.loc[regularized.model, "robust"].to_numpy()).mean())
metrics = dict(
    models=models, dataset=dataset, eps=eps_255 / 255, attack=attack, attack_budget=attack_budget, n_eval=n_eval, epochs=epochs, n_runs=len(frame),
    plain_clean=plain_rows.clean.to_dict(), plain_robust=plain_rows.robust.to_dict(),
    min_clean=float(frame.clean.min()), max_clean=float(frame.clean.max()),
    min_robust=float(frame.robust.min()), max_robust=float(frame.robust.max()),
    strongest=checks, best_clean_gain_over_plain=best_clean_gain,
    share_of_regularized_runs_less_robust_than_plain=robust_drop_share,
    robust_le_clean=bool((results.robust_acc <= results.aa_clean_acc + 1e-9).all()),
)
if with_paper:
    both = frame.dropna(subset=["paper_clean", "paper_robust"])
    metrics.update(mean_abs_diff_clean_vs_paper=float((both.clean - both.paper_clean).abs().mean()),
                   mean_abs_diff_robust_vs_paper=float((both.robust - both.paper_robust).abs().mean()))
save_metrics(output_dir, "03_table2", metrics)
print(f"best regularized clean accuracy - plain: {best_clean_gain:+.1f} points (mean over models)")
print(f"regularized runs less robust than plain: {100 * robust_drop_share:.0f}%")
for kind, c in checks.items():
    print(f"{experiments.METHOD_LABELS[kind]:>24}, strongest: clean {c['clean_change']:+.1f}, robust {c['robust_change']:+.1f} points")

# %%
# NBVAL_CHECK_OUTPUT
print("every run finished with clean and robust accuracy:", bool(frame[["clean", "robust"]].notna().all().all()))
print("robust accuracy never exceeds clean accuracy on the attacked points:", metrics["robust_le_clean"])
for kind in ["wd", "svc", "nd_l1", "nd_linf"]:
    print(f"strongest {kind} lowers the layer norms it targets:", checks[kind]["lowers_norm"])
