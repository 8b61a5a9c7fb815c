"""What the first session on a GPU must measure, in one script: ``python3 tasks.py gpu-check [--dry-run]``.

    python -m nblib.pipeline.gpu_check [--device cuda] [--out outputs/gpu-check] [--models vgg11 ...]
    python -m nblib.pipeline.gpu_check --dry-run      # the same steps on the CPU at tiny sizes (the full tier)

No download: the data is the CIFAR-format fixture (:func:`nblib.data.cifar10.write_cifar10_fixture`, written
into the report folder) and synthetic CIFAR-shaped batches.  The steps, each recorded with its seconds, its
result or its error (a failed step makes the exit status 1; the later steps still run):

1. ``device``: torch, CUDA and cuDNN versions, the device's name, torch's float32 flags.
2. ``sync_free_steps``: one training step (:func:`nblib.training.step.train_step`) of every regularizer x
   adversarial mode on VGG-11, on CUDA under ``torch.cuda.set_sync_debug_mode("error")`` (a host sync raises).
3. ``kill_resume``: per model a two-epoch run on the fixture with AutoAttack, killed inside its second epoch and
   rerun: it must resume from the checkpoint of the first epoch (``resumed_from_epoch == 1``) and finish.
4. ``svc_clip``: seconds of one singular value clipping (every layer) per model by an SVD and by batched
   Newton-Schulz iterations, and how far the two results differ.
5. ``norm_decay``: one norm-decay step against one plain SGD step per model
   (:func:`nblib.perf.benchmark.norm_decay_cost`).
6. ``throughput``: training images/s per model, precision (``fp32``, ``tf32``, ``bf16``; the CPU: ``fp32``) and
   memory layout (NCHW, channels_last), plain and PGD-10 steps (:func:`nblib.perf.throughput.measure_step`), eager.
7. ``compiled_throughput``: the same with the forward passes compiled (a run's ``compile``: ``cudagraphs`` and
   ``default`` on CUDA in bf16 and channels_last; the dry run: ``default`` in fp32 NCHW), each row with the
   seconds of its measurement, compilation included; the (compile, model) pairs that would start after
   ``compile_budget_s`` seconds of the step are skipped and listed.  A failure here leaves the projection of the
   eager rates.
8. ``evaluation``: per model the test pass, the per-epoch norms and AutoAttack's per-image forward / gradient
   times (:func:`nblib.perf.throughput.measure_eval`).
9. ``shared_gpu``: the throughput gain of two worker processes sharing the device (the sweep's ``gpus=[0, 0]``)
   over one.
10. ``projection`` (:func:`nblib.pipeline.gpu_report.projection`): the paper profile's hours on this device per
    precision, layout and compile setting (those measured for every model) by the one cost model
    (:func:`nblib.perf.cost.project`: steps, norm decay and SVC, per-epoch test pass, norms and checkpoint,
    AutoAttack at every radius with 65 % of the points reaching its later attacks), and with two runs per GPU.

Writes ``report.json`` and ``report.md`` to ``--out`` (``outputs/gpu-check``; ``--dry-run``:
``outputs/gpu-check/dry-run``).  Budget: about 10 minutes on one H200 at the default sizes, of which
``compiled_throughput`` may take ``compile_budget_s`` (240 s) plus one model's compilation (an estimate: no GPU has
compiled these models yet; lower ``compile_budget_s`` or ``compile_modes`` if the check runs long)."""
from __future__ import annotations

import argparse
import contextlib
import shutil
import time
import traceback
from pathlib import Path

import torch

from nblib.pipeline.gpu_report import markdown, projection
from nblib.results import write_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[2]
PAPER_MODELS = ("vgg11", "resnet18", "senet18", "regnetx_200mf")
#: Sizes of a real check (``full``) and of the dry run on the CPU (``dry``).
SIZES = {
    "full": dict(models=PAPER_MODELS, sync_model="vgg11", fixture_train=1024, fixture_test=200, run_batch=128,
                 n_eval=64, attack_budget=0.05, throughput_images=2048, throughput_batch=128, steps=20, warmup=3,
                 eval_images=2000, nd_runs=20, shared_model="resnet18", shared_steps=50,
                 compile_modes=("cudagraphs", "default"), compile_budget_s=240.0),
    "dry": dict(models=("smallcnn",), sync_model="smallcnn", fixture_train=64, fixture_test=20, run_batch=16,
                n_eval=8, attack_budget=0.01, throughput_images=64, throughput_batch=16, steps=2, warmup=1,
                eval_images=32, nd_runs=2, shared_model="smallcnn", shared_steps=5, compile_modes=("default",),
                compile_budget_s=120.0),
}


class Killed(RuntimeError):
    """The simulated kill of :func:`kill_resume`."""


def device_info(device: torch.device) -> dict:
    """Versions, the device's name and torch's float32 flags."""
    from nblib.training.run_config import float32_flags

    cuda = device.type == "cuda"
    return {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "name": torch.cuda.get_device_name(device) if cuda else "cpu",
            "memory_gib": torch.cuda.get_device_properties(device).total_memory / 2**30 if cuda else None,
            "float32_flags_default": float32_flags()}


def sync_free_steps(device: torch.device, model_name: str) -> dict:
    """One :func:`~nblib.training.step.train_step` of every regularizer x adversarial mode on ``model_name``
    (SVC clipping at that step); on CUDA any host sync inside raises."""
    from nblib.models import build
    from nblib.training.regularizers import build_regularizer, make_optimizer
    from nblib.training.run_config import fill_cfg
    from nblib.training.step import train_step
    from nblib.vocabulary import ADV_MODES, REGULARIZERS

    cases = 0
    for regularizer in REGULARIZERS:
        strength = {"none": 0.0, "svc": 1.0}.get(regularizer, 1e-2)
        for mode in ADV_MODES:
            torch.manual_seed(0)
            model = build(model_name, num_classes=10).to(device)
            reg = build_regularizer(regularizer, model, (3, 32, 32), strength, clip_every=1)
            cfg = fill_cfg({"adv_mode": mode, "regularizer": regularizer, "reg_strength": strength})
            x = torch.rand(8, 3, 32, 32, device=device)
            y = torch.randint(0, 10, (8,), device=device)
            opt = make_optimizer(model, 0.01)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.set_sync_debug_mode("error")
            try:
                train_step(model, opt, reg, cfg, x, y, global_step=1)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
            cases += 1
    return {"model": model_name, "cases": cases, "host_syncs_checked": device.type == "cuda"}


def kill_resume(device: torch.device, sizes: dict, folder: Path) -> dict:
    """Per model: a two-epoch run on the fixture killed inside epoch 2, then rerun; it must resume after epoch 1."""
    from nblib.data.cifar10 import write_cifar10_fixture
    from nblib.training.train import run_one

    data_root = folder / "fixture"
    write_cifar10_fixture(data_root, n_train=sizes["fixture_train"], n_test=sizes["fixture_test"])
    out = {}
    for name in sizes["models"]:
        cfg = dict(model=name, dataset="cifar10", data_root=str(data_root), epochs=2, lr=0.01,
                   batch_size=sizes["run_batch"], attack="standard", attack_budget=sizes["attack_budget"],
                   n_eval=sizes["n_eval"], device=str(device))
        run_dir = folder / "runs" / name
        shutil.rmtree(run_dir, ignore_errors=True)  # a run of an earlier check would not train again

        def kill(epoch, batch):
            if epoch == 1 and batch == 1:
                raise Killed(f"killed in epoch 2 of {name}")

        t0 = time.perf_counter()
        with contextlib.suppress(Killed):
            run_one(cfg, run_dir, step_callback=kill)
            raise RuntimeError(f"{name}: the simulated kill did not happen")
        metrics = run_one(cfg, run_dir)
        if metrics["resumed_from_epoch"] != 1:
            raise RuntimeError(f"{name}: resumed from epoch {metrics['resumed_from_epoch']}, expected 1")
        out[name] = {"seconds": time.perf_counter() - t0, "resumed_from_epoch": metrics["resumed_from_epoch"],
                     "clean_acc": metrics["clean_acc"], "robust_acc": metrics["robust_acc"],
                     "aa_seconds": metrics["aa_seconds"], "seconds_per_epoch": metrics["seconds_per_epoch"],
                     "precision": metrics["precision"]}
    return out


def svc_clip(device: torch.device, models) -> dict:
    """Per model: seconds of one clipping of every layer (:meth:`SingularValueClipping.clip_now`, after one
    untimed clipping) by each method (``svd``: on CUDA a loop of cuSOLVER calls; ``newton_schulz``: batched
    matmuls), ``clip_s`` the method ``auto`` picks on this device, and the largest difference between the two
    methods' clipped weights relative to the largest weight (one clip of the same weights)."""
    import copy

    from nblib.models import build
    from nblib.perf.timing import time_calls
    from nblib.training.regularizers import SingularValueClipping

    out = {}
    for name in models:
        torch.manual_seed(0)
        model = build(name, num_classes=10).to(device)
        row, clipped = {}, {}
        for method in ("svd", "newton_schulz"):
            clipped[method] = copy.deepcopy(model)
            SingularValueClipping(clipped[method], (3, 32, 32), c=1.0, method=method).clip_now()
            svc = SingularValueClipping(copy.deepcopy(model), (3, 32, 32), c=1.0, method=method)
            row[f"{method}_s"], _ = time_calls(svc.clip_now, runs=1, device=device)
        row["clip_s"] = row["svd_s" if device.type == "cpu" else "newton_schulz_s"]
        a, b = (dict(clipped[m].named_parameters()) for m in ("svd", "newton_schulz"))
        row["max_rel_difference"] = max(float((a[k] - b[k]).detach().abs().max() / a[k].detach().abs().max())
                                        for k in a)
        out[name] = row
    return out


def throughput(device: torch.device, sizes: dict) -> list[dict]:
    """Training images/s per model, precision, layout and mode (plain, PGD-10)."""
    from nblib.perf import throughput as tp

    precisions = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32",)
    images, targets = tp.synthetic_cifar(sizes["throughput_images"])
    rows = []
    for name in sizes["models"]:
        for precision in precisions:
            for channels_last in (False, True):
                for mode in ("plain", "pgd"):
                    batches = tp.new_batches(images, targets, sizes["throughput_batch"], device,
                                             channels_last=channels_last)
                    ips = tp.measure_step(name, batches, mode, sizes["steps"], device, warmup=sizes["warmup"],
                                          precision=precision, channels_last=channels_last)
                    rows.append(dict(model=name, precision=precision, channels_last=channels_last, compile="none",
                                     mode=mode, images_per_s=ips))
    return rows


def compiled_throughput(device: torch.device, sizes: dict) -> dict:
    """Training images/s per compile mode of ``sizes["compile_modes"]``, model and mode (plain, PGD-10) with the
    forward passes compiled (bf16 and channels_last on CUDA, fp32 NCHW on the CPU), as the rows of
    :func:`throughput` plus ``seconds`` (the measurement, compilation included); ``skipped``: the (compile, model)
    pairs not started because the step had run ``compile_budget_s`` seconds."""
    from nblib.perf import throughput as tp

    cuda = device.type == "cuda"
    precision, channels_last = ("bf16", True) if cuda else ("fp32", False)
    images, targets = tp.synthetic_cifar(sizes["throughput_images"])
    rows, skipped, t0 = [], [], time.perf_counter()
    for compile_mode in sizes["compile_modes"]:
        for name in sizes["models"]:
            if time.perf_counter() - t0 > sizes["compile_budget_s"]:
                skipped.append(dict(compile=compile_mode, model=name))
                continue
            for mode in ("plain", "pgd"):
                batches = tp.new_batches(images, targets, sizes["throughput_batch"], device,
                                         channels_last=channels_last)
                t1 = time.perf_counter()
                ips = tp.measure_step(name, batches, mode, sizes["steps"], device, warmup=sizes["warmup"],
                                      precision=precision, channels_last=channels_last, compile=compile_mode)
                rows.append(dict(model=name, precision=precision, channels_last=channels_last, compile=compile_mode,
                                 mode=mode, images_per_s=ips, seconds=time.perf_counter() - t1))
    return {"rows": rows, "skipped": skipped}


def evaluation(device: torch.device, sizes: dict) -> dict:
    """Per model: test-pass images/s, per-epoch norm seconds, AutoAttack's per-image forward / gradient time."""
    from nblib.perf import throughput as tp

    return {name: tp.measure_eval(name, device, n_images=sizes["eval_images"]) for name in sizes["models"]}


def shared_gpu(device: torch.device, sizes: dict, folder: Path) -> dict:
    """Throughput gain of two runs sharing one device (the sweep's ``gpus=[0, 0]``): ``alone`` (images/s of one
    worker process timing plain steps of ``sizes["shared_model"]`` in bf16 on CUDA, fp32 on the CPU) and ``pair``
    (the images/s of two such processes timed together: each waits after its warm-up until both are ready);
    ``gain = sum(pair) / alone`` (2: no contention; 1: no gain over one at a time)."""
    import subprocess
    import sys

    code = (
        "import sys, time, torch\n"
        "from pathlib import Path\n"
        "from nblib.perf import throughput as tp\n"
        "dev, model, batch, steps, threads, ready, others = sys.argv[1], sys.argv[2], int(sys.argv[3]), "
        "int(sys.argv[4]), int(sys.argv[5]), Path(sys.argv[6]), [Path(p) for p in sys.argv[7:]]\n"
        "torch.set_num_threads(threads)\n"
        "x, y = tp.synthetic_cifar(batch * 4)\n"
        "prec = 'bf16' if torch.device(dev).type == 'cuda' else 'fp32'\n"
        "tp.measure_step(model, tp.new_batches(x, y, batch, dev), 'plain', 1, dev, warmup=2, precision=prec)\n"
        "ready.touch()\n"
        "while not all(p.exists() for p in others): time.sleep(0.01)\n"
        "print(tp.measure_step(model, tp.new_batches(x, y, batch, dev), 'plain', steps, dev, warmup=0, "
        "precision=prec))\n")
    threads = 1 if device.type == "cpu" else torch.get_num_threads()
    folder.mkdir(parents=True, exist_ok=True)

    def together(n: int) -> list[float]:
        flags = [folder / f"ready-{n}-{i}" for i in range(n)]
        for f in flags:
            f.unlink(missing_ok=True)
        args = [str(device), sizes["shared_model"], str(sizes["throughput_batch"]), str(sizes["shared_steps"]),
                str(threads)]
        procs = [subprocess.Popen([sys.executable, "-c", code, *args, str(f), *map(str, flags)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                 for f in flags]
        out = []
        for p in procs:
            stdout, stderr = p.communicate()
            if p.returncode:
                raise RuntimeError(f"a shared_gpu worker failed: {stderr.strip().splitlines()[-1:]}")
            out.append(float(stdout.strip().splitlines()[-1]))
        return out

    alone, pair = together(1)[0], together(2)
    return {"model": sizes["shared_model"], "alone": alone, "pair": pair, "gain": sum(pair) / alone}


def check(device: str = "cuda", dry_run: bool = False, out: Path | None = None, models=None) -> dict:
    """Run every step (see the module docstring) and write the report; returns it."""
    sizes = dict(SIZES["dry" if dry_run else "full"])
    if models:
        sizes["models"] = tuple(models)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: torch.cuda.is_available() is False on this machine; run it on a GPU, or "
                         "--dry-run for the CPU rehearsal")
    out = Path(out or ROOT / "outputs" / "gpu-check" / ("dry-run" if dry_run else ""))
    out.mkdir(parents=True, exist_ok=True)
    from nblib.perf import benchmark

    report = {"dry_run": dry_run, "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
              "device": {}, "steps": {}}
    results = {}

    def step(name, fn):
        t0 = time.perf_counter()
        try:
            results[name] = fn()
            report["steps"][name] = {"status": "ok", "seconds": time.perf_counter() - t0, "result": results[name]}
        except Exception as err:  # recorded, the later steps still run
            report["steps"][name] = {"status": "failed", "seconds": time.perf_counter() - t0,
                                     "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
        print(f"gpu-check {name}: {report['steps'][name]['status']} "
              f"({report['steps'][name]['seconds']:.1f} s)", flush=True)

    report["device"] = device_info(dev)
    step("sync_free_steps", lambda: sync_free_steps(dev, sizes["sync_model"]))
    step("kill_resume", lambda: kill_resume(dev, sizes, out))
    step("svc_clip", lambda: svc_clip(dev, sizes["models"]))
    step("norm_decay", lambda: benchmark.norm_decay_cost(sizes["models"], dev, batch_size=sizes["throughput_batch"],
                                                         sgd_runs=sizes["warmup"], nd_runs=sizes["nd_runs"])
         .to_dict("records"))
    step("throughput", lambda: throughput(dev, sizes))
    step("compiled_throughput", lambda: compiled_throughput(dev, sizes))
    step("evaluation", lambda: evaluation(dev, sizes))
    step("shared_gpu", lambda: shared_gpu(dev, sizes, out / "shared-gpu"))
    needed = ("throughput", "evaluation", "norm_decay", "svc_clip")
    if all(n in results for n in needed):
        rows = results["throughput"] + results.get("compiled_throughput", {}).get("rows", [])  # compiled: optional
        step("projection", lambda: projection(rows, results["evaluation"], results["norm_decay"],
                                              results["svc_clip"], results.get("shared_gpu"),
                                              sizes["models"][0] if dry_run else None))
    else:
        report["steps"]["projection"] = {"status": "failed", "seconds": 0.0,
                                         "error": f"needs the steps {[n for n in needed if n not in results]}"}
    write_json_atomic(out / "report.json", report)
    write_atomic(out / "report.md", markdown(report))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same steps on the CPU at tiny sizes")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --dry-run")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default outputs/gpu-check)")
    parser.add_argument("--models", nargs="+", default=None, help="default: the paper's four (dry run: smallcnn)")
    args = parser.parse_args(argv)
    report = check(args.device or ("cpu" if args.dry_run else "cuda"), args.dry_run, args.out, args.models)
    failed = [s for s, v in report["steps"].items() if v["status"] != "ok"]
    print(f"gpu-check: {len(report['steps']) - len(failed)} of {len(report['steps'])} steps ok"
          + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
