"""A reader's path in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright for
Python; no browser download) opens ``python3 tasks.py lab``'s JupyterLab, opens notebook 01, runs all cells,
reads the verdict and an inline figure, saves, and the jupytext pair stays in sync.

Works on a copy of ``notebooks/`` in the test's folder (its outputs land there too). The screenshot is
``<tmp_path>/jupyterlab.png``; set ``NBLIB_SCREENSHOT=docs/jupyterlab.png`` to also copy it there (the
README shows that file)."""
import json
import os
import re
import shutil
import time

import jupytext
import nbformat
import pytest

from labserver import ROOT, running_lab

pytestmark = pytest.mark.slow
NOTEBOOK = "01_theorem1"
CHECKED = "# NBVAL_CHECK_OUTPUT"
RUN_ALL_TIMEOUT_S = 1800  # about 3.5 min on an idle 2-core machine


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    pytest.importorskip("playwright.sync_api", reason="playwright (pip, test extras) is not installed")
    return path


def committed_verdict() -> str:
    """The verdict the committed notebook stores for nbval (the output of its ``# NBVAL_CHECK_OUTPUT`` cell)."""
    book = nbformat.read(ROOT / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    cell = next(c for c in book.cells if c.cell_type == "code" and CHECKED in c.source)
    return "".join(o.text for o in cell.outputs if o.output_type == "stream")


def settings(folder):
    """JupyterLab user settings for a clean, quiet test: every cell rendered (no windowing), no news."""
    for plugin, values in {"notebook-extension/tracker": {"windowingMode": "none"},
                           "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}.items():
        path = folder / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    return folder


def test_run_all_in_jupyterlab_shows_verdict_and_figure(chromium, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    twin = (repo / "notebooks" / f"{NOTEBOOK}.py").read_text()
    extra = [f"--LabApp.user_settings_dir={settings(tmp_path / 'settings')}",
             f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with running_lab(repo, tmp_path / "lab.log", extra_args=extra) as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.goto(f"{lab.url}/lab/tree/notebooks/{NOTEBOOK}.ipynb?reset&token={lab.token}")
            kernel = page.locator("[data-jp-item-name='kernelName']")
            expect(kernel).to_have_text("Python 3 (norm-robustness)", timeout=120_000)
            status = page.locator("#jp-main-statusbar")
            expect(status).to_contain_text("Idle", timeout=120_000)
            tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-current")
            expect(tab).to_contain_text(f"{NOTEBOOK}.ipynb")
            dirty = re.compile(r"\bjp-mod-dirty\b")
            time.sleep(2)
            assert "jp-mod-dirty" not in (tab.get_attribute("class") or "")  # opening marks nothing modified

            page.locator(".lm-MenuBar-item", has_text="Run").first.click()
            page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
            prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
            n_code = prompts.count()
            deadline = time.monotonic() + RUN_ALL_TIMEOUT_S
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            while True:  # done: every code cell numbered, none queued or running, kernel idle
                assert errors.count() == 0, errors.all_inner_texts()  # no error, no warning the reader cannot act on
                texts = prompts.all_inner_texts()
                if all(t.strip("[]: \n").isdigit() for t in texts) and "Idle" in status.inner_text():
                    break
                assert time.monotonic() < deadline, f"Run All did not finish in {RUN_ALL_TIMEOUT_S} s: {texts}"
                time.sleep(5)
            assert len(texts) == n_code > 5
            assert errors.count() == 0, errors.all_inner_texts()

            verdict = page.locator(".jp-CodeCell", has_text=CHECKED).first
            verdict.scroll_into_view_if_needed()
            shown = verdict.locator(".jp-OutputArea-output").all_inner_texts()
            assert " ".join(" ".join(shown).split()) == " ".join(committed_verdict().split()) != ""
            images = page.locator(".jp-RenderedImage img")
            assert images.count() >= 2  # both figures of the notebook, inline
            images.first.scroll_into_view_if_needed()
            assert images.first.evaluate("img => img.complete && img.naturalWidth > 100")
            verdict.evaluate("el => el.scrollIntoView({block: 'start'})")
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))

            page.locator(".jp-Notebook").first.click()
            expect(tab).to_have_class(dirty)  # the run changed it
            page.keyboard.press("Control+s")
            expect(tab).not_to_have_class(dirty, timeout=60_000)
        finally:
            browser.close()
    if os.environ.get("NBLIB_SCREENSHOT"):
        shutil.copy(tmp_path / "jupyterlab.png", ROOT / os.environ["NBLIB_SCREENSHOT"])
    saved = nbformat.read(repo / "notebooks" / f"{NOTEBOOK}.ipynb", as_version=4)
    assert (repo / "notebooks" / f"{NOTEBOOK}.py").read_text() == twin  # the twin is untouched by the save
    strip = lambda book: [(c.cell_type, c.source.strip()) for c in book.cells]  # noqa: E731
    assert strip(saved) == strip(jupytext.read(repo / "notebooks" / f"{NOTEBOOK}.py"))  # pair in sync
    assert any("image/png" in o.get("data", {}) for c in saved.cells for o in c.get("outputs", []))
    assert (repo / "outputs" / "smoke" / "figures" / "01_operator_matrix.png").exists()  # papermill's folder
