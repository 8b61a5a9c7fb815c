"""Seconds of one singular value clipping of every layer of each CIFAR model, per method.

    python benchmarks/svc_clip.py [--device cpu] [--models vgg11 resnet18 senet18 regnetx_200mf]
        [--methods svd newton_schulz] [--threads 1] [--runs 1]

Per model (random initial weights, CIFAR input 3 x 32 x 32, c = 1, Linear layers included as in training) it
times ``SingularValueClipping.clip_now`` after one untimed clip, by each method of
``nblib.training.clipping.SVC_METHODS`` (``svd``: torch.linalg.svd, on CUDA a loop of cuSOLVER calls;
``newton_schulz``: batched matmuls), and counts the frequency matrices a clip hands to the method.  A training run
clips every ``reg_clip_every`` (100) steps: 469 clips in the paper's 120 epochs of 391 steps, so the clip's
share of a run is ``469 t_clip / t_run``.  Not a test: timings depend on the machine and its load.
"""
import argparse
import math

import torch

from nblib.models import build
from nblib.perf.timing import time_calls
from nblib.training.regularizers import SingularValueClipping


def frequency_matrices(svc: SingularValueClipping) -> int:
    """Matrices one clip hands to the SVD / Newton-Schulz: per conv ``groups x h x (w // 2 + 1)`` (one per group
    for a 1x1 kernel, clipped once), per Linear one."""
    n = 0
    for m, hw in svc.layers.values():
        if isinstance(m, torch.nn.Conv2d):
            one = m.kernel_size == (1, 1) and m.dilation == (1, 1)
            n += m.groups * (1 if one else hw[0] * (hw[1] // 2 + 1))
        else:
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["vgg11", "resnet18", "senet18", "regnetx_200mf"])
    parser.add_argument("--methods", nargs="+", default=["svd", "newton_schulz"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--runs", type=int, default=1, help="timed clips per model and method (median)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    print(f"{dev} (torch {torch.__version__}, {torch.get_num_threads()} threads); one clip of every layer, c = 1")
    for name in args.models:
        torch.manual_seed(0)
        model = build(name, num_classes=10).to(dev)
        for method in args.methods:
            svc = SingularValueClipping(model, (3, 32, 32), c=1.0, method=method)
            seconds, _ = time_calls(svc.clip_now, runs=args.runs, device=dev)
            share = 469 * seconds
            print(f"  {name:14s} {method:14s} {seconds:9.3f} s per clip ({frequency_matrices(svc):,} matrices; "
                  f"x 469 clips = {share / 3600:.3g} h per 120-epoch run)", flush=True)
    if not math.isfinite(seconds):
        raise SystemExit("a clip failed")


if __name__ == "__main__":
    main()
