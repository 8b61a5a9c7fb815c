"""The training runs of the paper's two experiments, built from a notebook's parameters.

Table 2 (notebook 03): one run per model for plain training and per (regularizer, strength) of weight decay,
singular value clipping and l1 / l_inf norm decay.  Figure 2 (notebook 04): one run per (model, training mode)
of plain, PGD-AT, ALP and TRADES training.

**One name per setting.**  A notebook parameter (and its profile key) that sets a run is named as the run
config's key (:data:`nblib.training.run_config.DEFAULT_CFG`), with one mapping where the paper's notation shows: a
parameter ``<key>_255`` is the config's ``<key>`` in units of 1/255 (``eval_eps_255 = 8`` is
``eval_eps = 8 / 255``; the paper writes eps = 1/255 and 8/255).  The grids are ``models`` (config key
``model``), ``adv_modes`` (``adv_mode``) and one list of strengths per regularizer, named as the
regularizer (``wd``, ``svc``, ``nd_l1``, ``nd_linf``: ``reg_strength`` of that ``regularizer``).  A setting a
notebook does not have comes from ``DEFAULT_CFG``.
"""
from __future__ import annotations

from nblib import vocabulary
from nblib.runs.sweep import expand_grid, run_sweep, slurm_kwargs

#: Run-config keys that notebooks give in units of 1/255, as ``<key>_255``.
UNITS_255 = ("eval_eps", "extra_eval_eps")
#: The run-config keys each training notebook sets from its parameters.
TABLE2_KEYS = ("dataset", "data_root", "train_subset", "epochs", "lr", "reg_gamma", "reg_clip_every",
               "reg_beta_scaling", "reg_nd_update", "reg_nd_layers", "reg_svc_linear", "eval_eps", "extra_eval_eps",
               "attack", "attack_budget", "n_eval", "device", "precision", "channels_last",
               "cudnn_deterministic", "compile")
FIGURE2_KEYS = ("dataset", "data_root", "train_subset", "epochs", "lr", "adv_preset", "eval_eps", "attack",
                "attack_budget", "n_eval", "device", "precision", "channels_last", "cudnn_deterministic",
                "compile")
#: The regularizers of Table 2, each with its list of strengths as a parameter of the same name.
REGULARIZERS = tuple(k for k in vocabulary.REGULARIZERS if k != "none")


def config_values(settings: dict, keys) -> dict:
    """The run-config entries ``keys`` from a notebook's parameters ``settings``: ``settings[key]``, or
    ``settings[key + "_255"] / 255`` (element-wise for a list) for the keys of :data:`UNITS_255`."""
    out = {}
    for key in keys:
        if key not in UNITS_255:
            out[key] = settings[key]
            continue
        value = settings[f"{key}_255"]
        out[key] = [v / 255 for v in value] if isinstance(value, (list, tuple)) else value / 255
    return out


def settings_seeds(settings: dict) -> list[int]:
    """The ``seeds`` of a notebook's parameters (:func:`seed_list`); an error naming the fix for the former
    single ``seed``."""
    if "seeds" not in settings:
        hint = (f": the parameter seed = {settings['seed']!r} became seeds = [{settings['seed']!r}] (a list, one run "
                "per seed)") if "seed" in settings else ""
        raise KeyError(f"the parameters have no 'seeds'{hint}")
    return seed_list(settings["seeds"])


def seed_list(seeds) -> list[int]:
    """``seeds`` as a list of distinct ints (at least one): an error naming the fix otherwise."""
    if isinstance(seeds, (int, str)) or not len(seeds):
        raise ValueError(f"seeds must be a non-empty list of ints such as [0] or [0, 1], got {seeds!r}")
    seeds = list(seeds)
    if len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seeds must be distinct ints, got {seeds!r}")
    return seeds


def table2_configs(models, base: dict, wd=(), svc=(), nd_l1=(), nd_linf=(), plain_lr: float = 0.0,
                   seeds=None) -> list[dict]:
    """One training config per (model, regularizer, strength), plain runs included, on top of ``base``; the
    plain runs at ``plain_lr`` when it is not 0 (the authors' code trained its plain baseline at 0.1, the
    regularized runs at 0.01).  ``seeds``: one config per seed of each (varying fastest); None keeps
    ``base``'s seed."""
    cfgs = []
    plain = {"lr": plain_lr} if plain_lr else {}
    per_seed = {} if seeds is None else {"seed": seed_list(seeds)}
    for model in models:
        cfgs += expand_grid({**base, "model": model, **plain}, regularizer=["none"], reg_strength=[0.0], **per_seed)
        for kind, values in zip(REGULARIZERS, (wd, svc, nd_l1, nd_linf)):
            if len(values):
                cfgs += expand_grid({**base, "model": model}, regularizer=[kind], reg_strength=list(values),
                                    **per_seed)
    return cfgs


def table2_run_configs(settings: dict) -> list[dict]:
    """The run configs of notebook 03 from its parameters (:data:`TABLE2_KEYS`, ``models``, the strength
    lists of :data:`REGULARIZERS`, ``plain_lr``: the plain runs' learning rate, 0 for ``lr``, and ``seeds``: one
    run per seed); without an attack no extra radius is attacked."""
    base = config_values(settings, TABLE2_KEYS)
    if base["attack"] == "none":
        base["extra_eval_eps"] = []
    return table2_configs(settings["models"], base, **{k: settings[k] for k in REGULARIZERS},
                          plain_lr=settings["plain_lr"], seeds=settings_seeds(settings))


def figure2_configs(models, base: dict, adv_modes=("plain", "pgd", "alp", "trades"), seeds=None) -> list[dict]:
    """One training config per (model, adversarial training mode) on top of ``base``; ``seeds``: one per seed
    of each (varying fastest), None keeps ``base``'s seed."""
    per_seed = {} if seeds is None else {"seed": seed_list(seeds)}
    return [cfg for model in models
            for cfg in expand_grid({**base, "model": model}, adv_mode=list(adv_modes), **per_seed)]


def figure2_run_configs(settings: dict) -> list[dict]:
    """The run configs of notebook 04 from its parameters (:data:`FIGURE2_KEYS`, ``models``, ``adv_modes``,
    ``seeds``): one per (model, training mode, seed), all with local Lipschitz estimates."""
    base = {**config_values(settings, FIGURE2_KEYS), "local_lipschitz": True}
    return figure2_configs(settings["models"], base, adv_modes=settings["adv_modes"], seeds=settings_seeds(settings))


def runs_root(settings: dict) -> str:
    """The sweep cache of a training notebook: ``runs_dir``, or ``<output_dir>/runs`` when it is empty (the
    notebooks' default: each profile its own cache); relative to the notebooks' folder."""
    return settings["runs_dir"] or f"{settings['output_dir']}/runs"


def train_runs(settings: dict, configs: list[dict]):
    """Train (or read back from the cache :func:`runs_root`) the runs ``configs`` with the notebook's executor
    settings (``executor``, ``gpus``, ``slurm_partition``, ``slurm_timeout_min``); the sweep's result table."""
    slurm = slurm_kwargs(settings["executor"], settings["slurm_partition"], settings["slurm_timeout_min"])
    return run_sweep(configs, runs_root(settings), executor=settings["executor"], gpus=settings["gpus"] or None,
                     slurm_kwargs=slurm)


#: The run configs of each notebook that trains, from its parameters.
RUN_CONFIGS = {"03_table2": table2_run_configs, "04_adversarial_norms": figure2_run_configs}
