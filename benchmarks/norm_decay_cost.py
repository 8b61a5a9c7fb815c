"""Cost of norm decay (Algorithm 1) next to a plain SGD step, and seconds per epoch, for the four models.

    python benchmarks/norm_decay_cost.py [--device cpu] [--batch-size 128] [--p inf] [--sgd-runs 3]

Goal: norm decay adds at most 5% to a training step (ratio nd_s / sgd_s).  Prints the table and writes it
to outputs/benchmarks/norm_decay_cost.{csv,md}.  Not a test: timings depend on the machine and its load.
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
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18", "senet18", "regnetx_200mf"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--p", choices=["1", "inf"], default="inf", help="norm decay's norm")
    parser.add_argument("--sgd-runs", type=int, default=3, help="timed SGD steps per model (median is kept)")
    parser.add_argument("--nd-runs", type=int, default=20, help="timed norm-decay steps per model (median is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = benchmark.norm_decay_cost(args.models, device=args.device, batch_size=args.batch_size,
                                      p=math.inf if args.p == "inf" else 1, sgd_runs=args.sgd_runs,
                                      nd_runs=args.nd_runs)
    save_table(table, args.out, "norm_decay_cost")
    print(f"{args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"l_{args.p} norm decay")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\nworst norm-decay overhead = {100 * table.overhead.max():.2f}% of an SGD step (goal <= 5%)")


if __name__ == "__main__":
    main()
