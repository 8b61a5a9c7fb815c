"""Training images/s of the old data path (PIL transforms + DataLoader) and the new one (nblib.data.loader), and the
projected GPU-hours of the paper profile's notebooks 03 (Table 2) and 04 (Figure 2).

    python benchmarks/train_throughput.py [--device cuda] [--batches 20] [--models vgg11 resnet18 ...]
        [--precision fp32|tf32|bf16] [--channels-last] [--compile none|default|cudagraphs]
        [--adv-modes pgd alp trades] [--aa-survivors 0.65 | --aa-seconds S]

Data: a synthetic uint8 CIFAR-shaped set (nothing is downloaded). Per model it times ``--batches`` plain SGD steps
and ``--batches`` PGD-AT steps (PGD-10) on each path after ``--warmup`` steps; ``--precision``, ``--channels-last``
and ``--compile`` (a run's ``cfg["compile"]``; compilation and CUDA graph recording happen in untimed steps,
``nblib.perf.throughput.COMPILE_WARMUP``) apply to the new path only (the old path is train.py as it was: strict
float32, NCHW, eager). The projection (nblib.perf.throughput.project_hours) adds per epoch a test-set forward pass
and the exact layer norms, per run standard AutoAttack on ``n_eval`` points: modelled from measured per-image
gradient and forward times and ``--aa-survivors`` (the fraction of points APGD-CE leaves to APGD-T, FAB-T and
Square; about the robust accuracy, at most 0.625 in the paper's Table 2), or the seconds given by ``--aa-seconds``
(e.g. ``aa_seconds`` of a finished run's metrics.json). Runs one after the other on one device; several runs per GPU
(``run_sweep(gpus=[0, 0])``) can overlap when one run does not fill it. Writes the table to
outputs/benchmarks/train_throughput.{csv,md}. Not a test: timings depend on the machine and its load.
"""
import argparse
import math
from pathlib import Path

import pandas as pd
import torch

from nblib.pipeline import reproduce
from nblib.perf import throughput as tp
from nblib.pipeline.plan import run_counts
from nblib.results import save_table
from nblib.training.run_config import COMPILE_MODES, PRECISIONS

ROOT = Path(__file__).resolve().parents[1]


def profile_run_counts(profile: str) -> dict:
    """The runs of notebooks 03 and 04 of ``params/<profile>.yaml`` (:func:`nblib.pipeline.plan.run_counts`)."""
    return run_counts(reproduce.training_parameters(profile))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18", "senet18", "regnetx_200mf"])
    parser.add_argument("--batches", type=int, default=20, help="timed steps per (model, path, mode)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (cudnn.benchmark autotuning)")
    parser.add_argument("--batch-size", type=int, default=128, help="the paper's: 128")
    parser.add_argument("--workers", type=int, default=0, help="old path DataLoader workers (train.py had 0)")
    parser.add_argument("--n-images", type=int, default=tp.CIFAR_TRAIN, help="synthetic training images")
    parser.add_argument("--eval-images", type=int, default=2000, help="images of the timed test pass")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="new path: a run's cfg['precision'] (tf32 / bf16: cuda only); the old path is strict fp32")
    parser.add_argument("--channels-last", action="store_true", help="new path: channels_last model and batches")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="none",
                        help="new path: a run's cfg['compile'] (torch.compile; cudagraphs: cuda only)")
    parser.add_argument("--adv-modes", nargs="+", default=["pgd"], choices=["pgd", "alp", "trades"],
                        help="adversarial modes timed; unmeasured ones of notebook 04 are costed as PGD-AT")
    parser.add_argument("--aa-survivors", type=float, default=0.65, help="AutoAttack model: see above")
    parser.add_argument("--aa-seconds", type=float, default=None, help="measured AutoAttack seconds per run")
    parser.add_argument("--profile", default="paper", help="params/<profile>.yaml whose runs are projected")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if args.precision != "fp32" and dev.type != "cuda":
        parser.error(f"--precision {args.precision} is for CUDA devices")
    if args.compile == "cudagraphs" and dev.type != "cuda":
        parser.error("--compile cudagraphs is for CUDA devices; --compile default runs inductor on the CPU")
    if "pgd" not in args.adv_modes:
        args.adv_modes = ["pgd", *args.adv_modes]
    runs = profile_run_counts(args.profile)

    images, targets = tp.synthetic_cifar(args.n_images)
    paths = {
        "old": lambda: tp.old_loader(images, targets, args.batch_size, dev, num_workers=args.workers),
        "new": lambda: tp.new_batches(images, targets, args.batch_size, dev, channels_last=args.channels_last),
    }
    opts = {"old": dict(precision="fp32", channels_last=False),
            "new": dict(precision=args.precision, channels_last=args.channels_last, compile=args.compile)}
    rows = []
    for path, make in paths.items():  # the data path alone
        ips = tp.measure_step(None, make(), "plain", max(args.batches, 10), dev, warmup=1)
        rows.append(dict(model="(data only)", path=path, mode="-", images_per_s=ips))
    extra = {}
    for name in args.models:
        for mode in ["plain", *args.adv_modes]:
            for path, make in paths.items():
                if path == "old" and mode not in ("plain", "pgd"):
                    continue
                ips = tp.measure_step(name, make(), mode, args.batches, dev, warmup=args.warmup, **opts[path])
                rows.append(dict(model=name, path=path, mode=mode, images_per_s=ips))
                print(f"  {name:14s} {path} {mode:6s} {ips:10.1f} images/s", flush=True)
        extra[name] = tp.measure_eval(name, dev, n_images=args.eval_images, channels_last=args.channels_last)
    table = pd.DataFrame(rows)
    table["epoch_s"] = tp.CIFAR_TRAIN / table.images_per_s
    save_table(table, args.out, "train_throughput")

    print(f"\n{dev} (torch {torch.__version__}, {torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"{args.batches} timed steps after {args.warmup}; new path: precision={args.precision}, "
          f"channels_last={args.channels_last}, compile={args.compile}; old path: {args.workers} DataLoader workers")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    wide = table[table.model != "(data only)"].pivot_table(index="model", columns=["mode", "path"],
                                                           values="images_per_s", sort=False)
    for mode in ("plain", "pgd"):
        wide[(mode, "new/old")] = wide[(mode, "new")] / wide[(mode, "old")]
    print("\nimages/s (speed-up new/old):")
    print(wide.to_string(float_format=lambda v: f"{v:.4g}"))

    aa_note = (f"AutoAttack {args.aa_seconds:.0f} s per run (given)" if args.aa_seconds is not None else
               f"AutoAttack modelled: measured per-image gradient/forward times, {args.aa_survivors:.0%} of the "
               "points reach APGD-T/FAB-T/Square (not measured)")
    aa = {name: {nb: (args.aa_seconds if args.aa_seconds is not None else
                      tp.autoattack_seconds(spec["n_eval"], e["aa_grad_s"], e["aa_forward_s"], args.aa_survivors))
                 for nb, spec in runs.items()} for name, e in extra.items()}
    print("\nper run besides training (the same for both paths):")
    for name, e in extra.items():
        print(f"  {name:14s} per epoch: test pass {tp.CIFAR_TEST / e['eval_ips']:.3g} s, norms {e['norms_s']:.3g} s; "
              "AutoAttack per run: " + ", ".join(f"{nb} {s:.4g} s" for nb, s in aa[name].items()))
    print(f"\nprojected hours of {args.profile} on this device ({dev}; GPU-hours on a GPU), runs one after "
          f"the other; {aa_note}:")
    for path in paths:
        rates = {}
        for name in args.models:
            sub = table[(table.model == name) & (table.path == path)]
            ips = dict(zip(sub["mode"], sub.images_per_s))
            for mode in ("alp", "trades"):
                ips.setdefault(mode, ips["pgd"])
            e = extra[name]
            rates[name] = dict(ips=ips, eval_ips=e["eval_ips"], norms_s=e["norms_s"], aa_s=aa[name])
        sel = {nb: dict(spec, models=[m for m in spec["models"] if m in rates]) for nb, spec in runs.items()}
        skipped = sorted({m for spec in runs.values() for m in spec["models"]} - set(rates))
        hours = tp.project_hours(sel, rates)
        print(f"  {path} path: " + ", ".join(f"{k} {v:.4g} h" for k, v in hours.items())
              + (f" (models not measured, left out: {skipped})" if skipped else ""))
    if not math.isfinite(table.images_per_s.sum()):
        raise SystemExit("a measurement failed (non-finite images/s)")


if __name__ == "__main__":
    main()
