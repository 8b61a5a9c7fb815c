"""Notebook 02 end to end (Table 1): how fast the exact l1 and l_inf norms (eq. 1-2) are.

``run(settings) -> Table1Result``: seconds per 100 norm computations of Table 1's six kernels (32x32 input,
stride 1, padding 0) by eq. 1, eq. 2, power iteration, the Sedghi FFT, Gram iteration and the memory floor
(:func:`nblib.perf.benchmark.run_table1`), the ratios between them, our numbers beside the paper's, and the
claims decided by :mod:`nblib.claims.table1`.  Every table and verdict is computed from the timing table alone
(:func:`table1_result`, unit-tested on made-up timings).  ``settings`` is the notebook's parameters
(``globals()``) or the same names in a dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from nblib.claims import table1 as judge
from nblib.claims.verdict import records
from nblib.perf import benchmark
from nblib.results import save_metrics, save_table
from nblib.training.run_config import autocast_factory, backend_flags

#: The parameters of notebook 02 that :func:`run` reads.
SETTINGS = ("device", "precision", "runs", "entry_budget_s", "method_budget_s", "power_tol", "floor_factor")


@dataclass
class Table1Result:
    """Notebook 02's tables and verdicts (seconds per 100 runs)."""

    table: pd.DataFrame          # long: one row per (kernel, method) (nblib.perf.benchmark.run_table1)
    wide: pd.DataFrame           # kernel x method, with the ratios ours / floor and slow / ours (speedups)
    vs_paper: pd.DataFrame       # our l1, linf, power, fft next to the paper's (GTX 1080 Ti)
    paper_power: pd.Series       # per kernel of the paper: power iteration / the slower of eq. 1-2
    paper_fft: pd.Series         # per kernel of the paper: Sedghi FFT / the slower of eq. 1-2
    power_le_gram: bool          # power iteration never exceeds the Gram upper bound (where both ran)
    verdicts: list = field(default_factory=list)  # Table 1's claims (nblib.claims.table1)
    metrics: dict = field(default_factory=dict)   # outputs/<profile>/metrics/02_table1.json

    def save(self, output_dir) -> None:
        """Write the tables (``tables/02_table1_long``, ``02_table1``, ``02_table1_vs_paper``) and the metrics
        JSON."""
        save_table(self.table, output_dir, "02_table1_long")
        save_table(self.wide.reset_index(), output_dir, "02_table1")
        save_table(self.vs_paper.reset_index(names="kernel"), output_dir, "02_table1_vs_paper")
        save_metrics(output_dir, "02_table1", self.metrics)


def paper_side_by_side(wide: pd.DataFrame, device: str) -> pd.DataFrame:
    """Our seconds per 100 runs of eq. 1, eq. 2, power iteration and the Sedghi FFT beside Table 1 of the
    paper (:data:`nblib.perf.benchmark.PAPER_TABLE1`); two column groups, ``"ours (<device>)"`` and
    ``"paper (GPU)"``."""
    paper = pd.DataFrame(benchmark.PAPER_TABLE1).T
    paper.index = [str(k) for k in paper.index]
    return pd.concat({"ours (" + device + ")": wide[["l1", "linf", "power", "fft"]], "paper (GPU)": paper}, axis=1)


def power_below_gram(table: pd.DataFrame, rtol: float = 1e-4) -> bool:
    """Power iteration (a lower bound of sigma_max, stopped at a relative tolerance) never exceeds Gram
    iteration (an upper bound) by more than ``rtol``, on every kernel where both were measured."""
    values = table.pivot(index="kernel", columns="method", values="value")
    return bool(((values.power <= values.gram * (1 + rtol)) | values.power.isna() | values.gram.isna()).all())


def table1_metrics(table: pd.DataFrame, wide: pd.DataFrame, device: str, paper_power: pd.Series,
                   paper_fft: pd.Series, power_le_gram: bool, claims) -> dict:
    """The metrics JSON of notebook 02: our worst ratios against the floor, power iteration and the FFT, the
    paper's range of the same ratios, which entries were not measured, and the verdicts."""
    values = table.pivot(index="kernel", columns="method", values="value")
    fft_over_power = (values.fft / values.power).dropna()
    return dict(
        device=device,
        max_ours_over_floor=float(wide[["l1/floor", "linf/floor"]].max().max()),
        min_power_over_ours=float(wide[["power/l1", "power/linf"]].min().min()),
        min_fft_over_ours=float(wide[["fft/l1", "fft/linf"]].min().min()),
        paper_power_over_ours=[float(paper_power.min()), float(paper_power.max())],
        paper_fft_over_ours=[float(paper_fft.min()), float(paper_fft.max())],
        n_entries=len(table), n_measured=int(table.measured.sum()),
        not_measured=[f"{r.method} {r.kernel}" for r in table[~table.measured].itertuples()],
        power_le_gram=power_le_gram,
        fft_over_power_median=float(fft_over_power.median()) if len(fft_over_power) else None,
        verdicts=records(claims),
    )


def table1_result(table: pd.DataFrame, device: str, floor_factor: float) -> Table1Result:
    """Every table and verdict of Table 1 from the timing table ``table`` (columns of
    :func:`nblib.perf.benchmark.run_table1`).  The speed claims are held to the *smallest* ratio of the paper's
    own Table 1 (:func:`nblib.claims.table1.paper_speedup`); the floor claim to ``floor_factor``."""
    wide = benchmark.speedups(table)
    paper_power = judge.paper_speedup(benchmark.PAPER_TABLE1, "power")
    paper_fft = judge.paper_speedup(benchmark.PAPER_TABLE1, "fft")
    claims = [judge.table1_speed(wide, "power", float(paper_power.min()), "power iteration"),
              judge.table1_speed(wide, "fft", float(paper_fft.min()), "the Sedghi FFT"),
              judge.table1_floor(wide, floor_factor)]
    power_le_gram = power_below_gram(table)
    return Table1Result(table=table, wide=wide, vs_paper=paper_side_by_side(wide, device), paper_power=paper_power,
                        paper_fft=paper_fft, power_le_gram=power_le_gram, verdicts=claims,
                        metrics=table1_metrics(table, wide, device, paper_power, paper_fft, power_le_gram, claims))


def run(settings: dict) -> Table1Result:
    """Notebook 02 end to end: :func:`nblib.perf.benchmark.run_table1` with the notebook's budgets, its float32
    convolutions on CUDA as ``precision`` says (:func:`nblib.training.run_config.backend_flags`: ``"fp32"`` strict,
    as the paper's GTX 1080 Ti; ``"tf32"``), then :func:`table1_result`; the metrics record the precision."""
    missing = [k for k in SETTINGS if k not in settings]
    if missing:
        raise KeyError(f"table1.run needs the notebook parameters {missing}")
    precision = settings["precision"]
    if precision not in ("fp32", "tf32"):
        raise ValueError(f"notebook 02's precision = {precision!r}: the timed norms run in float32, "
                         "choose fp32 or tf32")
    device = torch.device(settings["device"])
    autocast_factory(precision, device)  # tf32 on the CPU: ValueError naming the fix
    with backend_flags(device, precision, deterministic=False):
        table = benchmark.run_table1(device=settings["device"], runs=settings["runs"],
                                     budget_s=settings["entry_budget_s"], method_budget_s=settings["method_budget_s"],
                                     tol=settings["power_tol"], progress=False)
    result = table1_result(table, settings["device"], settings["floor_factor"])
    result.metrics["precision"] = precision
    return result
