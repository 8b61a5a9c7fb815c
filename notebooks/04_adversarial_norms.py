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
# `nblib.attacks.lipschitz.local_lipschitz`) beside the product of its layers' l_inf norms (the global bound of the
# composed linear maps; it leaves out BatchNorm and skip connections).
#
# **Verdicts** (`nblib.claims.figure2`). *Comparable or larger*: the layers of one network are not independent
# samples (a conv and the BatchNorm after it move together) and their norms are exact, so each adversarially
# trained network gets one summary, the median over its layers of the ratio r = robust / plain norm (against the
# plain network of the same architecture and seed). A network **holds** when its median ratio is at least
# 1 / `norm_band` and **does not hold** below (a fact about that network, no test); `norm_band` 1.25 reads
# "comparable" as "at most 20% smaller in the median layer" (the paper gives no number, and 25% is about the
# spread between its own curves: a setting, not a finding). The general claim is a one-sided sign test over the
# networks at 0.05: holds or does not hold when significant, otherwise not testable (fewer than 5 networks can
# never reach 0.05). *More robust*: a one-sided exact McNemar test on the attacked points, paired image by image
# (each network its own claim). *Smaller local Lipschitz*: the mean estimate below 0.9x plain's (above 1.1x: does
# not hold; per-point values are not stored, so no interval).
#
# **Two views of the norms.** The paper's text and caption plot the **l_inf** norms of the Conv2d / Linear
# layers; the authors' code plotted **l1** norms and included the BatchNorm layers (in eval mode a
# diagonal map with norm max |gamma| / sqrt(var + eps)). Both are shown and judged; the l_inf view is the
# headline (`04_figure2`), since the paper states it.
#
# `smoke`: the embedded digits, a small CNN, a few epochs, a small attacked subset (standard AutoAttack
# costs about half a minute per network on this CPU even on 20 points). `paper`: CIFAR-10, 120 epochs,
# lr 0.1 with the paper's schedule.
#
# **On `smoke` the *more robust* claim is only exercised, not decided.** With 20 attacked points one image
# moves a robust accuracy by 5 points, McNemar needs at least 5 images that only the robust network resists
# before it can reach 0.05, and another CPU trains other weights; attacking
# more points costs minutes of AutoAttack per network on two cores. The norm and local-Lipschitz verdicts
# are the smoke run's findings; `paper` (1,024 points) decides all of them.

# %% tags=["parameters"]
profile = "smoke"  # name of the params/ profile that ran this notebook
output_dir = "../outputs/smoke"  # folder for figures/, tables/, metrics/
device = "cpu"  # torch device of every training run
precision = "fp32"  # fp32: strict float32, TF32 off (the paper's) | tf32 | bf16 training autocast (both cuda only)
channels_last = False  # model and batches in channels_last memory format (faster convolutions on GPUs)
cudnn_deterministic = False  # cuda only: deterministic cuDNN kernels (slower) instead of autotuned ones
compile = "none"  # training forward passes, PGD included: none (eager) | default (torch.compile) | cudagraphs (cuda)
runs_dir = ""  # sweep cache (a folder per config hash): empty for output_dir/runs, or a folder shared by profiles
executor = "local"  # nblib.runs.sweep executor: local | slurm
gpus = []  # local executor: one worker process per listed GPU; [] runs sequentially in this kernel
slurm_partition = ""  # slurm executor: partition, empty for the cluster default; one GPU per job
slurm_timeout_min = 1440  # slurm executor: time limit of one run (killed runs resume on the next call)
models = ["smallcnn"]  # nblib.models names
adv_modes = ["plain", "pgd", "alp", "trades"]  # training modes (nblib.training.adversarial)
adv_preset = "standard"  # standard (8/255, 2/255, 10 steps, TRADES beta 6) | authors (0.031, 0.007, beta 1)
dataset = "digits"  # digits (embedded, offline) | cifar10
data_root = "../data"  # folder holding cifar-10-batches-py (cifar10 only)
train_subset = 0  # training images used (a fixed, seeded subset); 0: all of them
epochs = 6  # training epochs (the schedule scales with it)
lr = 0.05  # initial learning rate (paper: 0.1)
eval_eps_255 = 8  # evaluation l_inf radius in units of 1/255 (AutoAttack and local Lipschitz)
attack = "standard"  # standard AutoAttack | authors (APGD-CE + APGD-T only)
attack_budget = 1.0  # fraction of AutoAttack's iterations/queries: 1 as published, < 1 rehearses only
n_eval = 20  # attacked test points (fixed, seeded subset)
seeds = [0]  # training seeds: every configuration is trained once per seed (the paper: one)
layer_set = "every"  # layers compared: every conv / Linear | authors (skip grouped convs, inputs < kernel)
norm_band = 1.25  # comparable or larger norms: a network's median layer ratio robust / plain at least 1 / norm_band
kde_min_layers = 10  # draw a KDE of a run's layer norms only with at least this many layers (else a strip plot)

# %% [markdown]
# Parameters are named as the run config's keys (`nblib.training.run_config.DEFAULT_CFG`; `eval_eps_255` is
# `eval_eps` in
# units of 1/255, `nblib.runs.grids`); a setting not listed here (batch size 128, momentum 0.9, ...) is the
# config's default. `nblib.experiments.figure2.run` runs the sweep (cached: finished runs are read back, killed
# runs resume) and computes every table and verdict below. Every (model, mode) is trained once per seed of
# `seeds`; with two or more, each network is compared with the plain network of its seed, each counts as one
# network of the sign test, "more robust" needs every seed, and the figures show the first seed's networks.

# %%
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from nblib.claims.verdict import OUTCOMES
from nblib.experiments import figure2
from nblib.results import save_figure
from nblib.vocabulary import ADV_LABELS as LABELS

torch.manual_seed(seeds[0])
result = figure2.run(globals())
result.save(output_dir)
summary, norms, authors = result.summary, result.norms, result.norms_with_batchnorm
shown = [t[t.seed == seeds[0]] for t in (summary, norms, authors)]  # the figures: the networks of the first seed
summary.round(4)

# %% [markdown]
# ## Figure 2: distribution of the layers' norms, both views
#
# A KDE where every run has at least `kde_min_layers` layers (with a rug of the layers' values), else a
# strip plot that shows every layer. Legend: clean accuracy, robust accuracy [95% Wilson interval].

# %%
def figure2(table, column, xlabel, name):
    fig, axes = plt.subplots(1, len(models), figsize=(7.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = table[table.model == model].assign(log10=np.log10(table[table.model == model][column]))
        acc = shown[0][shown[0].model == model].set_index("adv_mode")
        labels = {m: (f"{LABELS[m]} (clean {100 * acc.clean_acc[m]:.1f}%, robust {100 * acc.robust_acc[m]:.0f}% "
                      f"[{100 * acc.robust_acc_lo[m]:.0f}, {100 * acc.robust_acc_hi[m]:.0f}])") for m in adv_modes}
        kde = part.groupby("adv_mode").size().min() >= kde_min_layers
        for i, mode in enumerate(adv_modes):
            vals = part[part.adv_mode == mode].log10
            if kde:
                sns.kdeplot(x=vals, ax=ax, color=sns.color_palette()[i], label=labels[mode], warn_singular=False)
                sns.rugplot(x=vals, ax=ax, color=sns.color_palette()[i], height=0.06)
        if kde:
            ax.set_ylabel("density (Gaussian KDE)")
        else:
            sns.stripplot(data=part.assign(run=part.adv_mode.map(labels)), x="log10", y="run", hue="run",
                          order=[labels[m] for m in adv_modes], ax=ax, size=6, jitter=0.15, legend=False)
            ax.set_ylabel("training: clean, robust [95% interval]")
        ax.set_xlabel(xlabel)
        ax.set_title(f"{model}: {'KDE' if kde else 'every layer'}; robust: AutoAttack {attack}, eps {eval_eps_255}/255",
                     fontsize=9)
        if kde:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, output_dir, name)


figure2(shown[1], "linf", "log10 l_inf norm of a Conv2d / Linear layer (paper's text)", "04_figure2")
figure2(shown[2], "norm", "log10 l1 norm of a Conv2d / Linear / BatchNorm layer (authors' code)",
        "04_figure2_l1_with_batchnorm")

# %%
fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 3.8), squeeze=False)
for ax, model in zip(axes[0], models):
    part = shown[1][shown[1].model == model]
    for mode in adv_modes:
        g = part[part.adv_mode == mode]
        ax.plot(g.depth, g.linf, marker="o", ms=3, label=LABELS[mode])
    ax.set_yscale("log")
    ax.set_xlabel("layer (Conv2d / Linear, in module order)")
    ax.set_ylabel("l_inf norm")
    ax.set_title(f"{model}: norm of each layer")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
save_figure(fig, output_dir, "04_norms_per_layer")

# %% [markdown]
# ## Local Lipschitz estimate against the product of layer norms

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
lab = shown[0].assign(run=shown[0].model + " " + shown[0].adv_mode.map(LABELS))
axes[0].bar(lab.run, lab.lip_mean)
axes[0].set_ylabel("mean local Lipschitz estimate (l_inf -> l1)")
axes[1].bar(lab.run, lab.log10_linf_norm_product)
axes[1].set_ylabel("log10 product of layer l_inf norms")
for ax in axes:
    ax.tick_params(axis="x", rotation=45)
    ax.set_xlabel("network (model, training)")
axes[0].set_title(f"around {n_eval} test points, eps {eval_eps_255}/255")
axes[1].set_title("global bound of the composed linear maps")
save_figure(fig, output_dir, "04_local_lipschitz")

# %% [markdown]
# ## Verdict

# %%
for v in result.verdicts:
    print(v.explained())

# %% [markdown]
# nbval checks the cell below against its stored output: what no machine may change, the runs, the claims judged
# and that each verdict is one of the three outcomes. The outcomes above depend on the trained weights, and
# another CPU (or `ATEN_CPU_CAPABILITY`) or torch build trains other weights: `tests/test_notebooks.py`
# compares them, and every accuracy, with the committed `outputs/smoke/metrics/04_adversarial_norms.json` within stated
# tolerances.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(result.runs)} runs finished, {result.metrics['n_layers']} layers per network "
      f"({result.metrics['n_layers_with_batchnorm']} with BatchNorm), {n_eval} attacked points each")
for v in result.verdicts:
    print(f"{v.claim}: " + (" | ".join(OUTCOMES) if v.outcome in OUTCOMES else f"unknown outcome {v.outcome!r}"))
