"""Exact norm tables of RobustBench's CIFAR-10 zoo (random weights, offline; needs ``pip install .[robustbench]``).

    python benchmarks/robustbench_norms.py [--threat-models Linf L2] [--entries ...] [--largest NAME] [--threads 2]

Builds every entry one at a time (or ``--entries``), computes its exact l_inf table (BatchNorm included) and
prints which entries build, how many layers of each kind were normed / not reached / not normed, then, for the
largest entry that built (or ``--largest``), the exact l_inf table time against one ``|K|.sum()`` pass over its
weights (goal <= 1.5x).  Writes outputs/benchmarks/robustbench_{models,census,cost}.{csv,md}.  Not a test:
timings depend on the machine and its load.
"""
import argparse
from pathlib import Path

import pandas as pd
import torch

from nblib.perf.zoo_benchmark import linf_table_cost, zoo_census
from nblib.results import save_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threat-models", nargs="+", default=["Linf", "L2"])
    parser.add_argument("--entries", nargs="+", default=None, help="default: every entry of each threat model")
    parser.add_argument("--largest", default=None, help="entry to time (default: the largest that built)")
    parser.add_argument("--runs", type=int, default=5, help="timed calls (median is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models, census = zoo_census(args.threat_models, args.entries)
    save_table(models, args.out, "robustbench_models")
    save_table(census, args.out, "robustbench_census")
    built = models[models.built]
    print(f"{len(built)} of {len(models)} entries build:")
    print(models.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    if len(census):
        print("\nlayers per kind over all built entries:")
        print(census.groupby("kind")[["normed", "not_reached", "not_normed"]].sum().to_string())
    row = built.loc[built.n_params.idxmax()] if args.largest is None else built.set_index("entry").loc[args.largest]
    name = args.largest or row.entry
    cost = pd.DataFrame([linf_table_cost(name, row.threat_model, args.runs)])
    save_table(cost, args.out, "robustbench_cost")
    print(f"\nlargest entry {name}: exact l_inf table vs one pass over its weights (seconds, median)")
    print(cost.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


if __name__ == "__main__":
    main()
