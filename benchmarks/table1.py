"""Table 1 benchmark: seconds per 100 norm computations and the ratios the targets are stated in.

    python benchmarks/table1.py [--device cpu] [--runs 100] [--entry-budget 10] [--method-budget 120]

Targets: our exact l1 and l_inf within 3x of the memory floor (one K.abs().sum() pass) on every Table 1
kernel, and at least 1000x faster than power iteration to a 1e-6 relative tolerance.  Prints the table and
writes it to outputs/benchmarks/table1.{csv,md}.  Not a test: timings depend on the machine and its load.
"""
import argparse
import math
from pathlib import Path

import torch

from nblib.perf import benchmark
from nblib.results import save_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per entry after a warm-up")
    parser.add_argument("--entry-budget", type=float, default=10.0, help="seconds of timed runs per entry")
    parser.add_argument("--method-budget", type=float, default=math.inf, help="seconds per method over all kernels")
    parser.add_argument("--tol", type=float, default=1e-6, help="power iteration's relative tolerance")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = benchmark.run_table1(device=args.device, runs=args.runs, budget_s=args.entry_budget,
                                 method_budget_s=args.method_budget, tol=args.tol)
    wide = benchmark.speedups(table)
    save_table(table, args.out, "table1_long")
    save_table(wide.reset_index(), args.out, "table1")
    print(f"seconds per 100 runs on {args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    print(wide.to_string(float_format=lambda v: f"{v:.4g}"))
    print(table[["kernel", "method", "n_runs"]].pivot(index="kernel", columns="method", values="n_runs").to_string())
    ours_floor = wide[["l1/floor", "linf/floor"]].max().max()
    power_ours = wide[["power/l1", "power/linf"]].min().min()
    print(f"\nworst ours/floor = {ours_floor:.2f}x (target <= 3); "
          f"worst power/ours = {power_ours:.0f}x (target >= 1000)")


if __name__ == "__main__":
    main()
