"""Training images/s of the old data path (PIL transforms + DataLoader) and the new one (nblib.data.loader), and the
projected hours of a profile's notebooks 03 (Table 2) and 04 (Figure 2) by the one cost model (nblib.perf.cost).

    python benchmarks/train_throughput.py [--device cuda] [--batches 20] [--models vgg11 resnet18 ...]
        [--precision fp32|tf32|bf16] [--channels-last] [--compile none|default|cudagraphs]
        [--adv-modes pgd alp trades]
        [--aa-survivors 0.65 | --aa-seconds S] [--profile paper] [--gpus 0 0] [--shared-gain G] [--no-svc]

Data: a synthetic uint8 CIFAR-shaped set (nothing is downloaded).  Per model it times ``--batches`` plain SGD
steps and ``--batches`` PGD-AT steps (PGD-10) on each path after ``--warmup`` steps; ``--precision``,
``--channels-last`` and ``--compile`` (a run's ``cfg["compile"]``; compilation and CUDA graph recording happen in
untimed steps, ``nblib.perf.throughput.COMPILE_WARMUP``) apply to the new path only (the old path is train.py as it
was: strict float32, NCHW, eager).
Per model it also measures the per-epoch test pass, norms and checkpoint, a norm-decay step and one SVC clip
(nblib.perf.throughput).  The projection prices every run of the profile (nblib.pipeline.plan.profile_configs, the
runs the notebooks build) with nblib.perf.cost.run_seconds, the model --plan uses: steps, the regulariser's own
cost, per epoch a test pass, norms and a checkpoint, and per run standard AutoAttack at each radius on ``n_eval``
points: modelled from measured per-image gradient and forward times and ``--aa-survivors`` (the fraction of
points APGD-CE leaves to APGD-T, FAB-T and Square; about the robust accuracy, at most 0.625 in the paper's
Table 2), or the seconds given by ``--aa-seconds`` (e.g. ``aa_seconds`` of a finished run's metrics.json).  The
bill is also given for the sweep's workers ``--gpus`` (several runs per GPU: ``0 0``) at ``--shared-gain``.
Writes the table to outputs/benchmarks/train_throughput.{csv,md}.  Not a test: timings depend on the machine and
its load.
"""
import argparse
import math
from pathlib import Path

import pandas as pd
import torch

from nblib.pipeline import plan, reproduce
from nblib.perf import cost, throughput as tp
from nblib.results import save_table
from nblib.training.run_config import COMPILE_MODES, PRECISIONS

ROOT = Path(__file__).resolve().parents[1]


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
    parser.add_argument("--gpus", type=int, nargs="*", default=None,
                        help="the sweep's workers for the bill (default: the profile's), e.g. 0 0: two runs on GPU 0")
    parser.add_argument("--shared-gain", type=float, default=None,
                        help="throughput gain of the runs sharing one GPU (gpu-check's shared_gpu; default: none)")
    parser.add_argument("--no-svc", dest="svc", action="store_false", help="skip timing one SVC clip per model")
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
    params = reproduce.training_parameters(args.profile)
    configs = plan.profile_configs(params)
    gpus = args.gpus if args.gpus is not None else params["03_table2"]["gpus"]
    skipped = sorted({c["model"] for cfgs in configs.values() for c in cfgs} - set(args.models))

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
    extra, regs = {}, {}
    for name in args.models:
        for mode in ["plain", *args.adv_modes]:
            for path, make in paths.items():
                if path == "old" and mode not in ("plain", "pgd"):
                    continue
                ips = tp.measure_step(name, make(), mode, args.batches, dev, warmup=args.warmup, **opts[path])
                rows.append(dict(model=name, path=path, mode=mode, images_per_s=ips))
                print(f"  {name:14s} {path} {mode:6s} {ips:10.1f} images/s", flush=True)
        extra[name] = tp.measure_eval(name, dev, n_images=args.eval_images, channels_last=args.channels_last)
        regs[name] = {**tp.measure_regularizer(name, "nd_linf", dev, args.batch_size, runs=args.batches),
                      "clip_s": tp.measure_regularizer(name, "svc", dev)["clip_s"] if args.svc else 0.0}
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

    aa_note = (f"AutoAttack {args.aa_seconds:.0f} s per run and radius (given)" if args.aa_seconds is not None
               else f"AutoAttack modelled: measured per-image gradient/forward times, {args.aa_survivors:.0%} of the "
               "points reach APGD-T/FAB-T/Square (not measured)")
    print("\nper run besides training (the same for both paths):")
    for name, e in extra.items():
        print(f"  {name:14s} per epoch: test pass {tp.CIFAR_TEST / e['eval_ips']:.3g} s, norms {e['norms_s']:.3g} s, "
              f"checkpoint {e['ckpt_s']:.3g} s; norm-decay step {regs[name]['nd_s']:.3g} s, SVC clip "
              f"{regs[name]['clip_s']:.3g} s")
    print(f"\nprojected hours of {args.profile} on this device ({dev}; GPU-hours on a GPU), {aa_note}:")
    for path in paths:
        def rates_of(cfg, path=path):
            sub = table[(table.model == cfg["model"]) & (table.path == path)]
            ips = dict(zip(sub["mode"], sub.images_per_s))
            e, r = extra[cfg["model"]], regs[cfg["model"]]
            aa = (args.aa_seconds if args.aa_seconds is not None else cfg["attack_budget"] *
                  tp.autoattack_seconds(cfg["n_eval"], e["aa_grad_s"], e["aa_forward_s"], args.aa_survivors))
            return dict(step_s=cfg["batch_size"] / ips.get(cfg["adv_mode"], ips["pgd"]), nd_s=r["nd_s"],
                        clip_s=r["clip_s"], eval_ips=e["eval_ips"], norms_s=e["norms_s"], ckpt_s=e["ckpt_s"], aa_s=aa)
        sel = {nb: [c for c in cfgs if c["model"] in extra] for nb, cfgs in configs.items()}
        bill = cost.project(sel, rates_of, gpus=gpus, shared_gain=args.shared_gain)
        print(f"  {path} path: " + ", ".join(f"{nb} {bill[nb]['total']:.4g} h" for nb in sel)
              + "; terms: " + ", ".join(f"{t} {bill['all'][t]:.3g} h" for t in cost.TERMS)
              + f"; {bill['basis']}: {bill['gpu_hours']:.4g} device-hours, {bill['wall_hours']:.4g} h wall"
              + (f" (models not measured, left out: {skipped})" if skipped else ""))
    if not math.isfinite(table.images_per_s.sum()):
        raise SystemExit("a measurement failed (non-finite images/s)")


if __name__ == "__main__":
    main()
