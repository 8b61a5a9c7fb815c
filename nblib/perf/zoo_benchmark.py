"""Exact norm tables of RobustBench's CIFAR-10 zoo architectures (random weights, offline): which entries
build, how many layers of each kind are normed, not reached or not normed, and the cost of the exact l_inf
table against one pass over the same weights (``benchmarks/robustbench_norms.py``)."""
from __future__ import annotations

import gc
import math
import time

import pandas as pd
import torch
import torch.nn as nn

from nblib.models.robustbench_zoo import build_entry, zoo_entries
from nblib.norms import CONV_TYPES, layer_census, layer_norms
from nblib.norms.layer_shapes import overrides_forward
from nblib.perf.timing import time_calls

INPUT_SHAPE = (3, 32, 32)  # CIFAR-10


def zoo_census(threat_models=("Linf", "L2"), entries=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build every entry (or ``entries``) of each threat model, one at a time, and compute its exact l_inf
    table.  Returns ``(models, census)``: one row per entry (threat_model, entry, built, error, n_params,
    build_s, table_s, n_rows, n_normed) and one row per entry and layer kind (the counts of
    :func:`nblib.norms.layer_census`).  An entry that does not build is a row with its error, never dropped."""
    models, census = [], []
    for threat in threat_models:
        for name in entries or zoo_entries(threat):
            row = dict(threat_model=threat, entry=name, built=False, error="")
            try:
                start = time.perf_counter()
                model = build_entry(name, threat)
                row.update(build_s=time.perf_counter() - start, built=True,
                           n_params=sum(p.numel() for p in model.parameters()))
            except Exception as e:  # noqa: BLE001 -- recorded: the zoo's own error for this entry
                models.append({**row, "error": f"{type(e).__name__}: {e}"[:300]})
                continue
            start = time.perf_counter()
            try:
                with torch.no_grad():
                    table = layer_norms(model, INPUT_SHAPE, math.inf, include_batchnorm=True)
            except Exception as e:  # noqa: BLE001 -- recorded (a table that aborts is a bug to report)
                models.append({**row, "error": f"table: {type(e).__name__}: {e}"[:300]})
                continue
            row.update(table_s=time.perf_counter() - start, n_rows=len(table), n_normed=int(table.norm.notna().sum()))
            models.append(row)
            census += [dict(threat_model=threat, entry=name, kind=kind, **counts)
                       for kind, counts in layer_census(table).iterrows()]
            del model, table
            gc.collect()
    return pd.DataFrame(models), pd.DataFrame(census)


def linf_table_cost(name: str, threat_model: str = "Linf", runs: int = 5) -> dict:
    """For one entry: median seconds of the exact l_inf table (``layer_norms``, shapes cached as on every call
    after the first) and of one ``|K|.sum()`` pass over the weights of the conv and Linear layers it norms (the
    least any exact method that reads every weight costs), and their ratio (goal: at most 1.5)."""
    model = build_entry(name, threat_model)
    weights = [m.weight for m in model.modules()  # the layers the table norms
               if isinstance(m, (*CONV_TYPES, nn.Linear)) and not overrides_forward(m)]
    with torch.no_grad():
        start = time.perf_counter()
        layer_norms(model, INPUT_SHAPE, math.inf)
        first_s = time.perf_counter() - start
        linf_s, _ = time_calls(lambda: layer_norms(model, INPUT_SHAPE, math.inf), runs, 120.0)
        floor_s, _ = time_calls(lambda: sum(w.abs().sum() for w in weights), runs, 120.0)
    return dict(entry=name, threat_model=threat_model, n_params=sum(p.numel() for p in model.parameters()),
                n_layers=len(weights), first_table_s=first_s, linf_s=linf_s, floor_s=floor_s,
                linf_over_floor=linf_s / floor_s, threads=torch.get_num_threads())
