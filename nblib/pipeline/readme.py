"""Regenerate the results section of README.md from ``outputs/`` (so the README cannot drift from what the
notebooks wrote).

    python -m nblib.pipeline.readme [--outputs outputs] [--readme README.md]     # or: python3 tasks.py readme

Between ``<!-- results:start -->`` and ``<!-- results:end -->`` it writes: which run is shown (the paper
profile when ``outputs/paper/metrics`` holds results, else smoke, labelled "digits, not CIFAR-10"), the
verdicts of each notebook (the ``verdicts`` list of ``metrics/<notebook>.json``: ``claim``, ``outcome`` in
holds / does not hold / not testable, ``reason``), the same verdicts on the paper's own published Table 2 beside
ours (``paper_table2_verdicts`` of ``metrics/03_table2.json``, written by notebook 03 in every profile), the key
figures as linked PNGs, and the JupyterLab screenshot ``docs/jupyterlab.png``. Text outside the markers is left
as it is.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from nblib.claims.verdict import OUTCOMES
from nblib.results import load_metrics

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- results:start -->", "<!-- results:end -->"
SCREENSHOT = "docs/jupyterlab.png"
KEY_FIGURES = (  # (figure name, caption)
    ("01_figure1", "Figure 1 (a)-(d) on a small layer: kernel, operator matrix M and its norms"),
    ("01_closed_form_errors", "Theorem 1: error of the closed forms inside / outside Assumption 1; looseness of eq. 3"),
    ("02_table1", "Table 1: time of each l1 / l_inf / l2 method"),
    ("03_tradeoff", "Table 2 trade-off: clean vs robust accuracy per regularizer and strength (95% intervals)"),
    ("03_norms_vs_strength", "Table 2: layer norms reached by each regularizer and strength"),
    ("04_figure2", "Figure 2: layer norms of plain and adversarially trained networks"),
    ("04_local_lipschitz", "Local Lipschitz estimate vs the product of layer norms"),
    ("05_propositions", "Propositions 1-2: large norms, small Lipschitz constant"),
)
PAPER_TABLE2_NOTEBOOK = "03_table2"  # the notebook whose metrics carry ``paper_table2_verdicts``
PROFILES = {"paper": "CIFAR-10, the paper's settings", "smoke": "digits, not CIFAR-10: the CPU smoke profile"}


def shown_profile(outputs: Path) -> str:
    """``paper`` once a paper run has written metrics, else ``smoke``."""
    return "paper" if any((Path(outputs) / "paper" / "metrics").glob("*.json")) else "smoke"


def read_verdicts(metrics_file: Path, key: str = "verdicts") -> list[dict]:
    """The list ``key`` (default ``verdicts``) of one notebook's metrics JSON ([] when it has none); each entry
    is checked."""
    metrics_file = Path(metrics_file)
    data = load_metrics(metrics_file.parent.parent, metrics_file.stem)
    verdicts = data.get(key) or []
    for v in verdicts:
        if not isinstance(v, dict) or not {"claim", "outcome"} <= set(v) or v["outcome"] not in OUTCOMES:
            raise ValueError(f"{metrics_file}: verdict {v!r} needs a claim and an outcome in {OUTCOMES}")
    return verdicts


def cell(text) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def paper_table2_section(metrics_file: Path, profile: str) -> list[str]:
    """Markdown lines: each claim of notebook 03 judged on the paper's own published Table 2 (its accuracies,
    unpaired: no per-point outcomes are published) beside our verdict on the same claim; [] before notebook 03
    has written ``paper_table2_verdicts``."""
    if not Path(metrics_file).exists():
        return []
    paper = read_verdicts(metrics_file, "paper_table2_verdicts")
    if not paper:
        return []
    ours = {v["claim"]: v["outcome"] for v in read_verdicts(metrics_file)}
    rows = [f"| {cell(v['claim'])} | **{v['outcome']}** | {cell(v.get('reason'))} | "
            f"{ours.get(v['claim'], 'not judged here')} |" for v in paper]
    return ["", f"**Notebook 03's verdicts on the paper's own Table 2** (the published CIFAR-10 accuracies: 10,000 "
                f"test images, 1,024 attacked points; compared unpaired, as no per-point outcomes are published), "
                f"beside ours on profile `{profile}`:", "",
            f"| claim | on the paper's Table 2 | reason | ours (`{profile}`) |", "| --- | --- | --- | --- |", *rows]


def results_section(outputs: Path, base: Path) -> str:
    """The markdown between the markers; links are relative to ``base`` (the README's folder)."""
    outputs = Path(outputs)
    profile = shown_profile(outputs)
    folder = outputs / profile
    link = lambda p: Path(os.path.relpath(p, base)).as_posix()  # noqa: E731
    lines = [f"Results of the latest committed run: profile `{profile}` ({PROFILES[profile]}), read from "
             f"`{link(folder)}/` by `python3 tasks.py readme`."]
    if profile == "smoke":
        lines.append("The paper profile has not been run on CIFAR-10 yet: these numbers check the code on the "
                     "embedded digits; they are not the paper's results.")
    rows = []
    for path in sorted((folder / "metrics").glob("[0-9][0-9]_*.json")):
        rows += [f"| `{path.stem}` | {cell(v['claim'])} | **{v['outcome']}** | {cell(v.get('reason'))} |"
                 for v in read_verdicts(path)]
    lines.append("")
    if rows:
        lines += ["| notebook | claim | outcome | reason |", "| --- | --- | --- | --- |", *rows]
    else:
        lines.append(f"No verdicts recorded in `{link(folder / 'metrics')}/` yet: run `python3 tasks.py reproduce`.")
    lines += paper_table2_section(folder / "metrics" / f"{PAPER_TABLE2_NOTEBOOK}.json", profile)
    figures = [(name, caption) for name, caption in KEY_FIGURES if (folder / "figures" / f"{name}.png").exists()]
    for name, caption in figures:
        png = link(folder / "figures" / f"{name}.png")
        lines += ["", f"**{caption}** ({PROFILES[profile].split(':')[0]})", "", f"[![{caption}]({png})]({png})"]
    if (base / SCREENSHOT).exists():
        lines += ["", "**Notebook 01 in JupyterLab** after Run All (`python3 tasks.py lab`; checked by "
                  "`tests/test_browser.py` in headless Chromium)", "", f"![JupyterLab]({SCREENSHOT})"]
    return "\n".join(lines)


def update_readme(readme: Path = ROOT / "README.md", outputs: Path = ROOT / "outputs") -> bool:
    """Replace the text between the markers of ``readme``; True when the file changed."""
    readme = Path(readme)
    text = readme.read_text()
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(f"{readme} needs one line {START} followed by one line {END}: add them where the "
                         "results should go")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    new = f"{head}{START}\n{results_section(outputs, readme.parent)}\n{END}{tail}"
    if new == text:
        return False
    tmp = readme.with_name(f".{readme.name}.{os.getpid()}.tmp")
    tmp.write_text(new)
    os.replace(tmp, readme)
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, default=ROOT / "outputs", help="default: outputs/")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="default: README.md")
    args = parser.parse_args(argv)
    changed = update_readme(args.readme, args.outputs)
    print(f"{args.readme}: {'updated' if changed else 'unchanged'}")


if __name__ == "__main__":
    main()
