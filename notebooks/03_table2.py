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
# **Check.** One training run per (model, method, strength), cached and resumable (`nblib.runs.sweep`): SGD
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
# size). The `paper` profile runs standard AutoAttack at 1/255. On `smoke` the accuracy verdicts (clean and
# robust halves) are exercised, not decided: 360 test images and 100 attacked points leave the regularized
# runs within a few intervals of plain, and another CPU trains other weights (README, *Tests*); the
# norm and 4/255 / 8/255 verdicts lie far from their boundaries.
#
# **Verdicts** (`nblib.claims.table2`): every accuracy is a binomial proportion (clean: the test set; robust: the
# attacked subset) with its 95% Wilson interval, and two accuracies differ only when their intervals are
# disjoint. *Clean half*: regularization "may improve" clean accuracy holds when some run is above plain
# beyond the intervals. *Robust half*, at each method's strongest setting: a run more robust than plain
# beyond the intervals means the claim does **not** hold; a run less robust supports it; overlapping
# intervals leave it *not testable* at this many attacked points. The same verdicts are also applied to the
# paper's own Table 2 (10,000 test images, 1,024 attacked points) as a reference.
#
# **Readings where the paper's text and the authors' code differ** (each a parameter; the tables record it):
# * `reg_beta_scaling`: eq. 5 and Algorithm 1 add `beta/N` times the norm gradient (`per_layer`, the
#   default); the authors' code adds `beta` (`total`), so their `beta = 1e-2` is our `1e-2 N` (N = 9 to 45
#   layers for the four CIFAR models). We default to the text: it is the method the paper defines and
#   that a reader reimplements; `total` reproduces the authors' runs.
# * `reg_svc_linear`: our singular value clipping also clips the Linear layers (`True`, the default: the paper
#   regularizes "the norms of layers", and the norm decay it compares with acts on Linear layers too);
#   Sedghi et al. and the authors' code clip convolutions only (`False`).
# * `extra_eval_eps_255`: the paper reports that every regularized model has about 0% robust accuracy at 4/255
#   and 8/255; these radii are attacked on the same points (a verdict for each radius that was measured).

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
dataset = "digits"  # digits (embedded, offline) | cifar10
data_root = "../data"  # folder holding cifar-10-batches-py (cifar10 only)
train_subset = 0  # training images used (a fixed, seeded subset); 0: all of them
epochs = 6  # training epochs (the schedule scales with it)
lr = 0.05  # initial learning rate (paper: 0.01)
plain_lr = 0.0  # initial learning rate of the plain runs; 0: lr (the paper's text); the authors' code: 0.1
wd = [0.01, 0.001]  # weight decay strengths
svc = [0.5, 1.0]  # singular value clipping thresholds c
nd_l1 = [0.1, 0.01]  # l1 norm decay strengths beta
nd_linf = [0.1, 0.01]  # l_inf norm decay strengths beta
reg_gamma = 0.5  # norm decay momentum gamma (Algorithm 1)
reg_beta_scaling = "per_layer"  # norm decay: per_layer (beta/N, paper eq. 5) | total (beta, authors' code)
reg_nd_update = "algorithm1"  # norm decay: algorithm1 (h <- gamma h + (1-gamma) p) | authors (sign(w) assigned)
reg_nd_layers = "every"  # norm decay: every conv / Linear layer | authors (skip grouped convs, inputs < kernel)
reg_svc_linear = True  # singular value clipping also clips Linear layers (False: convs only, as the authors)
reg_clip_every = 10  # optimizer steps between two singular value clippings
eval_eps_255 = 8  # AutoAttack l_inf radius in units of 1/255 (paper: 1)
extra_eval_eps_255 = [4]  # more AutoAttack radii in units of 1/255 on the same points (paper: 4 and 8)
attack = "authors"  # standard AutoAttack | authors (APGD-CE + APGD-T only, what the authors' code ran)
attack_budget = 1.0  # fraction of AutoAttack's iterations/queries: 1 as published, < 1 rehearses only
n_eval = 100  # attacked test points (fixed, seeded subset)
seeds = [0]  # training seeds: every configuration is trained once per seed (the paper: one)

# %% [markdown]
# Parameters are named as the run config's keys (`nblib.training.run_config.DEFAULT_CFG`; `eval_eps_255` is
# `eval_eps` in
# units of 1/255, `nblib.runs.grids`); a setting not listed here (batch size 128, momentum 0.9, ...) is the
# config's default. `nblib.experiments.table2.run` runs the sweep (cached: finished runs are read back, killed
# runs resume) and computes every table and verdict below. Every configuration is trained once per seed of
# `seeds`; with two or more, Table 2 shows the mean and the spread over the seeds, each run is compared with the
# plain run of its seed, and a direction is concluded only where every seed shows it (`nblib.claims.comparisons`).

# %%
import matplotlib.pyplot as plt
import seaborn as sns
import torch

from nblib.claims.verdict import OUTCOMES
from nblib.experiments import table2
from nblib.results import save_figure
from nblib.runs.grids import runs_root
from nblib.vocabulary import REGULARIZER_LABELS, strongest_strength

torch.manual_seed(seeds[0])
result = table2.run(globals())
result.save(output_dir)
print(f"{len(result.runs)} runs in {runs_root(globals())}")

# %% [markdown]
# ## Table 2 (clean / robust accuracy, %; columns strongest first, as in the paper)
#
# The long table (`tables/03_table2_long`) also holds the 95% Wilson interval of every accuracy and the
# readings that produced it.

# %%
result.wide.round(1)

# %%
result.robust_ci  # robust accuracy (%) [95% Wilson interval over the attacked points]

# %% [markdown]
# ## Layer norms against regularization strength

# %%
summary = table2.over_seeds(result.norm_summary)  # one row per configuration: the mean over its seeds
COEF = ["wd", "nd_l1", "nd_linf"]  # coefficient-type strengths (larger = stronger); SVC's c gets its own axis
fig, axes = plt.subplots(len(models), 3, figsize=(15, 3.6 * len(models)), squeeze=False)
for row, model in zip(axes, models):
    part = summary[summary.model == model]
    plain = part[part.regularizer == "none"]
    for ax, col, label in zip(row[:2], ["log_linf", "log_l1"], ["l_inf", "l1"]):
        for kind in COEF:
            k = part[part.regularizer == kind].sort_values("reg_strength")
            if len(k):
                ax.plot(k.reg_strength, k[col], marker="o", label=REGULARIZER_LABELS[kind])
        ax.axhline(float(plain[col].iloc[0]), color="k", ls="--", label="plain")
        ax.set_xscale("log")
        ax.set_xlabel("strength: weight decay or beta (log; larger = stronger)")
        ax.set_ylabel(f"mean log10 {label} layer norm")
        ax.set_title(f"{model}: {label} norms")
    ax = row[2]
    k = part[part.regularizer == "svc"].sort_values("reg_strength")
    for col, label in [("log_linf", "l_inf"), ("log_l1", "l1")]:
        line, = ax.plot(k.reg_strength, k[col], marker="s", label=f"SVC, {label}")
        ax.axhline(float(plain[col].iloc[0]), color=line.get_color(), ls="--", label=f"plain, {label}")
    ax.set_xlabel("SVC clip value c (smaller = stronger)")
    ax.set_ylabel("mean log10 layer norm")
    ax.set_title(f"{model}: singular value clipping" + ("" if reg_svc_linear else " (convs only)"))
    for a in row:
        a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
save_figure(fig, output_dir, "03_norms_vs_strength");

# %% [markdown]
# ## Norms of every layer during training (the appendix's curves), plain and each method at its strongest (first seed)

# %%
layer_hist = result.layer_history
kinds_present = [k for k in REGULARIZER_LABELS if k in set(result.table.regularizer)]
fig, axes = plt.subplots(len(models), len(kinds_present), figsize=(3.6 * len(kinds_present), 3.3 * len(models)),
                         squeeze=False, sharey="row")
for row, model in zip(axes, models):
    part = layer_hist[layer_hist.model == model]
    depth_max = max(int(part.depth.max()), 1)
    for ax, kind in zip(row, kinds_present):
        k = part[part.regularizer == kind]
        s = strongest_strength(kind, k.reg_strength) if kind != "none" else 0.0
        k = k[(k.reg_strength == s) & (k.seed == seeds[0])]  # the run of the first seed
        for depth, g in k.groupby("depth"):
            ax.plot(g.epoch, g.linf, color=plt.cm.viridis(depth / depth_max), lw=1, marker="o", ms=2)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(f"{REGULARIZER_LABELS[kind]}" + (f" {s:g}" if kind != "none" else ""), fontsize=9)
    row[0].set_ylabel(f"{model}: l_inf norm of a layer")
    fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, depth_max)), ax=list(row),
                 label="layer depth (0 = input side)")
save_figure(fig, output_dir, "03_norms_during_training");

# %% [markdown]
# ## Trade-off: clean against robust accuracy per method and strength (bars: 95% Wilson intervals)

# %%
long = result.long
fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 4.5), squeeze=False)
markers = {"none": "*", "wd": "o", "svc": "s", "nd_l1": "^", "nd_linf": "v"}
for ax, model in zip(axes[0], models):
    part = long[long.model == model]
    for i, kind in enumerate(kinds_present):
        k = part[part.regularizer == kind]
        ax.errorbar(k.clean, k.robust, xerr=[k.clean - k.clean_lo, k.clean_hi - k.clean],
                    yerr=[k.robust - k.robust_lo, k.robust_hi - k.robust], fmt=markers[kind],
                    ms=9 if kind == "none" else 6, color="k" if kind == "none" else sns.color_palette()[i],
                    capsize=2, lw=0.8, label=REGULARIZER_LABELS[kind])
        for r in k[k.regularizer != "none"].itertuples():
            ax.annotate(f"{r.strength:g}", (r.clean, r.robust), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel(f"robust accuracy (%), AutoAttack {attack}, eps {eval_eps_255}/255")
    ax.set_title(f"{model}: labels = strength (wd, beta; c for SVC)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
save_figure(fig, output_dir, "03_tradeoff");

# %% [markdown]
# ## Robust accuracy of the regularized models at larger radii (the paper: about 0% at 4/255 and 8/255)

# %%
result.radii.pivot_table(index=["model", "regularizer", "strength"], columns="eps_255", values="robust").round(1)

# %% [markdown]
# ## Verdict

# %%
for v in result.verdicts:
    print(v.explained())
print()
print("the same verdicts on the paper's own Table 2 (n = 10,000 clean, 1,024 attacked):")
for v in result.paper_verdicts:
    print("  " + v.explained())

# %% [markdown]
# nbval checks the cell below against its stored output: what no machine may change, the runs, the claims judged
# and that each verdict is one of the three outcomes. The outcomes above depend on the trained weights, and
# another CPU (or `ATEN_CPU_CAPABILITY`) or torch build trains other weights: `tests/test_notebooks.py`
# compares them, and every accuracy, with the committed `outputs/smoke/metrics/03_table2.json` within stated
# tolerances.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{len(result.runs)} runs finished, {n_eval} attacked points each")
for v in result.verdicts:
    print(f"{v.claim}: " + (" | ".join(OUTCOMES) if v.outcome in OUTCOMES else f"unknown outcome {v.outcome!r}"))
