"""nblib.pipeline.readme: the README's results section is regenerated from a made-up outputs folder."""
import json

import pytest

from nblib.pipeline import readme

README = ("# project\n\nintro\n\n## Results\n\n<!-- results:start -->\nold text\n<!-- results:end -->\n"
          "\n## After\nkept\n")
VERDICTS = [dict(claim="eq. 1 is exact | under Assumption 1", outcome="holds", reason="max error 0"),
            dict(claim="closed forms outside Assumption 1", outcome="does not hold", reason="wrong for 60%")]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "README.md").write_text(README)
    smoke = tmp_path / "outputs" / "smoke"
    (smoke / "metrics").mkdir(parents=True)
    (smoke / "figures").mkdir()
    (smoke / "metrics" / "01_theorem1.json").write_text(json.dumps({"verdicts": VERDICTS, "x": 1}))
    (smoke / "metrics" / "02_table1.json").write_text(json.dumps({"n_measured": 18}))  # no verdicts key
    (smoke / "figures" / "04_figure2.png").write_bytes(b"\x89PNG")
    return tmp_path


def test_results_section_from_outputs(project):
    assert readme.update_readme(project / "README.md", project / "outputs") is True
    text = (project / "README.md").read_text()
    assert text.startswith("# project\n\nintro\n\n## Results\n\n<!-- results:start -->\n")
    assert text.endswith("<!-- results:end -->\n\n## After\nkept\n") and "old text" not in text
    assert "profile `smoke` (digits, not CIFAR-10" in text and "has not been run on CIFAR-10 yet" in text
    assert "| `01_theorem1` | eq. 1 is exact \\| under Assumption 1 | **holds** | max error 0 |" in text
    assert "| `01_theorem1` | closed forms outside Assumption 1 | **does not hold** | wrong for 60% |" in text
    assert "02_table1" not in text  # no verdicts: nothing listed
    assert "[![Figure 2: layer norms of plain and adversarially trained networks]" \
           "(outputs/smoke/figures/04_figure2.png)](outputs/smoke/figures/04_figure2.png)" in text
    assert "01_closed_form_errors" not in text  # not produced: not linked
    assert "docs/jupyterlab.png" not in text
    assert readme.update_readme(project / "README.md", project / "outputs") is False  # idempotent


def test_screenshot_and_paper_run(project):
    (project / "docs").mkdir()
    (project / "docs" / "jupyterlab.png").write_bytes(b"\x89PNG")
    paper = project / "outputs" / "paper"
    (paper / "metrics").mkdir(parents=True)
    (paper / "metrics" / "03_table2.json").write_text(json.dumps({"verdicts": [
        dict(claim="norm decay does not make CNNs more robust", outcome="not testable", reason="one model")]}))
    readme.update_readme(project / "README.md", project / "outputs")
    text = (project / "README.md").read_text()
    assert "profile `paper` (CIFAR-10" in text and "digits" not in text and "01_theorem1" not in text
    assert "| `03_table2` | norm decay does not make CNNs more robust | **not testable** | one model |" in text
    assert "![JupyterLab](docs/jupyterlab.png)" in text


def test_no_verdicts_says_how_to_get_them(project):
    for f in (project / "outputs" / "smoke" / "metrics").iterdir():
        f.unlink()
    readme.update_readme(project / "README.md", project / "outputs")
    assert "No verdicts recorded in `outputs/smoke/metrics/` yet" in (project / "README.md").read_text()


def test_bad_verdict_and_missing_markers_are_refused(project):
    (project / "outputs" / "smoke" / "metrics" / "05_propositions.json").write_text(
        json.dumps({"verdicts": [dict(claim="c", outcome="true")]}))
    with pytest.raises(ValueError, match="05_propositions.json.*outcome"):
        readme.update_readme(project / "README.md", project / "outputs")
    (project / "README.md").write_text("# no markers\n")
    with pytest.raises(SystemExit, match="results:start"):
        readme.update_readme(project / "README.md", project / "outputs")


def test_committed_readme_has_the_markers():
    text = (readme.ROOT / "README.md").read_text()
    assert text.count(readme.START) == 1 and text.count(readme.END) == 1


PAPER_T2 = [dict(claim="the strongest SVC does not improve robust accuracy", outcome="holds", reason="0 of 3 more"),
            dict(claim="SVC does not improve robust accuracy at any strength", outcome="does not hold",
                 reason="1 of 12 runs more robust"),
            dict(claim="vgg11: higher clean accuracy goes with lower robust accuracy", outcome="does not hold",
                 reason="rho = 0.45")]


def test_paper_table2_verdicts_beside_ours(project):
    ours = [dict(claim=PAPER_T2[0]["claim"], outcome="not testable", reason="few points"),
            dict(claim=PAPER_T2[1]["claim"], outcome="holds", reason="no run more robust")]
    (project / "outputs" / "smoke" / "metrics" / "03_table2.json").write_text(
        json.dumps({"verdicts": ours, "paper_table2_verdicts": PAPER_T2}))
    readme.update_readme(project / "README.md", project / "outputs")
    text = (project / "README.md").read_text()
    assert "verdicts on the paper's own Table 2" in text
    assert "| claim | on the paper's Table 2 | reason | ours (`smoke`) |" in text
    assert "| the strongest SVC does not improve robust accuracy | **holds** | 0 of 3 more | not testable |" in text
    assert ("| SVC does not improve robust accuracy at any strength | **does not hold** | 1 of 12 runs more robust "
            "| holds |") in text
    assert "| vgg11: higher clean accuracy goes with lower robust accuracy | **does not hold** | rho = 0.45 " \
           "| not judged here |" in text


def test_paper_table2_section_absent_without_its_verdicts(project):
    readme.update_readme(project / "README.md", project / "outputs")
    assert "paper's own Table 2" not in (project / "README.md").read_text()
    (project / "outputs" / "smoke" / "metrics" / "03_table2.json").write_text(
        json.dumps({"paper_table2_verdicts": [dict(claim="c", outcome="maybe")]}))
    with pytest.raises(ValueError, match="03_table2.json.*outcome"):
        readme.update_readme(project / "README.md", project / "outputs")
