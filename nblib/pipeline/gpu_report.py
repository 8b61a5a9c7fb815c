"""The report of ``python3 tasks.py gpu-check`` (:mod:`nblib.pipeline.gpu_check`): the paper profile's projected
hours from the rates the check measured, by the one cost model (:mod:`nblib.perf.cost`), and the markdown report."""
from __future__ import annotations

from nblib.training.compiled import COMPILE_MODES

__all__ = ["AA_SURVIVORS", "projection", "markdown"]

AA_SURVIVORS = 0.65  # fraction of points reaching APGD-T / FAB-T / Square in the projection (not measured)


def projection(rows: list[dict], evals: dict, norm_decay: list[dict], clips: dict, shared: dict | None = None,
               stand_in: str | None = None) -> list[dict]:
    """The paper profile's hours on this device per precision, layout and compile setting (each combination
    measured for every model, plain and PGD; one not measured for every model gets no row) from the measured
    rates, by the one cost model (:func:`nblib.perf.cost.project` over the profile's runs): steps at the measured
    images/s (ALP and TRADES at PGD-AT's rate), norm decay's step (``nd_s``) on every step of an ``nd_*`` run, one
    SVC clip every ``reg_clip_every`` steps of an ``svc`` run, the per-epoch test pass, norms and checkpoint, and
    AutoAttack at every radius with :data:`AA_SURVIVORS` of the points reaching its later attacks.  The
    device-hours are also given for two runs at a time per GPU at the gain ``shared["gain"]`` measured by
    :func:`nblib.pipeline.gpu_check.shared_gpu` (None: not measured).  ``stand_in`` (the dry run): a measured
    model whose rates stand in for every paper model."""
    from nblib.perf import cost
    from nblib.perf import throughput as tp
    from nblib.pipeline import plan
    from nblib.pipeline.reproduce import training_parameters

    configs = plan.profile_configs(training_parameters("paper"))
    measured = sorted({r["model"] for r in rows})
    models = {c["model"] for cfgs in configs.values() for c in cfgs}
    source = {m: stand_in or m for m in models if stand_in or m in measured}
    configs = {nb: [c for c in cfgs if c["model"] in source] for nb, cfgs in configs.items()}
    nd = {r["model"]: r["nd_s"] for r in norm_decay}
    out = []
    for precision, channels_last, compile_mode in sorted({(r["precision"], r["channels_last"], r["compile"])
                                                          for r in rows},
                                                         key=lambda s: (s[0], s[1], COMPILE_MODES.index(s[2]))):
        ips = {m: {r["mode"]: r["images_per_s"] for r in rows if r["model"] == src and r["precision"] == precision
                   and r["channels_last"] == channels_last and r["compile"] == compile_mode}
               for m, src in source.items()}
        if not all({"plain", "pgd"} <= set(v) for v in ips.values()):
            continue  # not measured for every model (a compiled row skipped): no projection of this setting

        def rates_of(cfg):
            src, step_ips = source[cfg["model"]], ips[cfg["model"]]
            e = evals[src]
            return dict(step_s=cfg["batch_size"] / step_ips.get(cfg["adv_mode"], step_ips["pgd"]), nd_s=nd[src],
                        clip_s=clips[src]["clip_s"], eval_ips=e["eval_ips"], norms_s=e["norms_s"],
                        ckpt_s=e["ckpt_s"], aa_s=cfg["attack_budget"] * tp.autoattack_seconds(
                            cfg["n_eval"], e["aa_grad_s"], e["aa_forward_s"], AA_SURVIVORS))

        bill = cost.project(configs, rates_of)
        pair = cost.project_hours(bill["all"]["total"], [0, 0], shared["gain"] if shared else None)
        out.append(dict(precision=precision, channels_last=channels_last, compile=compile_mode,
                        **{nb: bill[nb]["total"] for nb in configs}, terms=bill["all"],
                        total=bill["all"]["total"], two_per_gpu=pair["gpu_hours"],
                        two_per_gpu_basis=pair["basis"], rates_of=source))
    return out


def markdown(report: dict) -> str:
    """The report as markdown: one line per step, then the tables."""
    kind = "dry run, tiny sizes" if report["dry_run"] else "full sizes"
    from nblib.perf.cost import TERMS

    lines = [f"# gpu-check on {report['device'].get('name', '?')} ({kind})",
             "", "| step | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {s} | {v['status']} | {v['seconds']:.1f} |" for s, v in report["steps"].items()]
    for step, v in report["steps"].items():
        if v["status"] != "ok":
            lines += ["", f"**{step} failed**: `{v['error']}`"]
    proj = report["steps"].get("projection", {}).get("result")
    if proj:
        lines += ["", "Projected hours of the paper profile on this device (runs one after the other; each paper "
                  f"model at the rates of {proj[0]['rates_of']}):", "",
                  "| precision | channels_last | compile | Table 2 | Figure 2 | " + " | ".join(TERMS) + " | total | "
                  "two runs per GPU |", "| --- " * (len(TERMS) + 7) + "|"]
        lines += [f"| {p['precision']} | {p['channels_last']} | {p['compile']} | {p['03_table2']:.2f} | "
                  f"{p['04_adversarial_norms']:.2f} | " + " | ".join(f"{p['terms'][t]:.2f}" for t in TERMS)
                  + f" | {p['total']:.2f} | {p['two_per_gpu']:.2f} |" for p in proj]
        lines += ["", f"Two runs per GPU: {proj[0]['two_per_gpu_basis']}."]
    thr = list(report["steps"].get("throughput", {}).get("result") or [])
    thr += (report["steps"].get("compiled_throughput", {}).get("result") or {}).get("rows", [])
    if thr:
        lines += ["", "Training images/s (compiled rows: seconds of the measurement, compilation included):", "",
                  "| model | precision | channels_last | compile | mode | images/s | seconds |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['model']} | {r['precision']} | {r['channels_last']} | {r['compile']} | {r['mode']} | "
                  f"{r['images_per_s']:.1f} | {r['seconds']:.1f} |" if "seconds" in r else
                  f"| {r['model']} | {r['precision']} | {r['channels_last']} | {r['compile']} | {r['mode']} | "
                  f"{r['images_per_s']:.1f} | |" for r in thr]
    return "\n".join(lines) + "\n"
