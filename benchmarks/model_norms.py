"""Exact norm tables and norm decay on torchvision models at 224x224 (random weights, nothing downloaded).

    python benchmarks/model_norms.py [--device cpu] [--batch-size 2] [--runs 20] [--threads 1]

Per model: the uncached shape pass, a full exact l_inf and l1 table (``layer_norms``), one pass over |K| (the
floor), one norm-decay step and one SGD step, in milliseconds, and the ratios linf/floor and nd/sgd.  Goals
(issue 12): l_inf table of ResNet-50 under 20 ms, norm decay under 5% of an SGD step.  Prints the table and
writes it to outputs/benchmarks/model_norms.{csv,md}.  Not a test: timings depend on the machine and its load.
"""
import argparse
from pathlib import Path

import torch

from nblib.perf import benchmark
from nblib.results import save_table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=list(benchmark.TORCHVISION_MODELS))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=2, help="images per SGD step (small for a CPU)")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per entry (median is kept)")
    parser.add_argument("--sgd-runs", type=int, default=2, help="timed SGD steps per model (median is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = benchmark.model_norm_cost(args.models, device=args.device, image_size=args.image_size,
                                      batch_size=args.batch_size, runs=args.runs, sgd_runs=args.sgd_runs)
    save_table(table, args.out, "model_norms")
    print(f"{args.device} (torch {torch.__version__}, {torch.get_num_threads()} threads), {args.image_size}x"
          f"{args.image_size}, SGD batch {args.batch_size}; milliseconds (median)")
    print(table.drop(columns=["device", "batch_size"]).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nworst norm-decay overhead = {100 * table.nd_over_sgd.max():.2f}% of an SGD step (goal <= 5%)")


if __name__ == "__main__":
    main()
