"""nblib.pipeline.nbclean.strip_outputs keeps only nbval's reference verdicts."""
import nbformat
import pytest

from nblib.pipeline.nbclean import main, strip_outputs


def executed_notebook():
    out = nbformat.v4.new_output
    cells = [nbformat.v4.new_markdown_cell("# t"),
             nbformat.v4.new_code_cell("x = 1\nx", execution_count=3, outputs=[
                 out("execute_result", data={"text/plain": "1"}, execution_count=3)]),
             nbformat.v4.new_code_cell("plot()", execution_count=4, outputs=[
                 out("display_data", data={"image/png": "iVBOR"}),
                 out("stream", name="stderr", text="/work/x.py: warn")]),
             nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(True)", execution_count=9, outputs=[
                 out("stream", name="stdout", text="True\n"), out("display_data", data={"image/png": "iVBOR"})])]
    return nbformat.v4.new_notebook(cells=cells)


def test_strip_outputs_keeps_only_the_checked_verdict():
    nb = strip_outputs(executed_notebook())
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [None, None, 3]  # the verdict: third code cell
    assert [c.outputs for c in code[:2]] == [[], []]
    assert [(o.output_type, o.text) for o in code[2].outputs] == [("stream", "True\n")]
    assert nbformat.writes(strip_outputs(nb)) == nbformat.writes(nb)  # idempotent


def test_main_rewrites_only_notebooks_with_outputs(tmp_path, capsys):
    nbformat.write(executed_notebook(), tmp_path / "a.ipynb")
    main([str(tmp_path / "a.ipynb")])
    assert "stripped" in capsys.readouterr().out
    before = (tmp_path / "a.ipynb").read_text()
    main([str(tmp_path / "a.ipynb")])
    assert capsys.readouterr().out == "" and (tmp_path / "a.ipynb").read_text() == before
    assert "/work/" not in before and "iVBOR" not in before


def test_main_from_an_executed_copy_adopts_its_verdict(tmp_path):
    """``--from outputs/<profile>/executed``: the committed notebook's reference verdict becomes the latest
    run's; its other cells stay stripped."""
    committed, executed = tmp_path / "nb", tmp_path / "executed"
    committed.mkdir(), executed.mkdir()
    nbformat.write(strip_outputs(executed_notebook()), committed / "a.ipynb")
    ran = executed_notebook()
    ran.cells[3].outputs[0].text = "False\n"
    nbformat.write(ran, executed / "a.ipynb")
    main(["--from", str(executed), str(committed / "a.ipynb")])
    code = [c for c in nbformat.read(committed / "a.ipynb", as_version=4).cells if c.cell_type == "code"]
    assert [(o.output_type, o.text) for o in code[2].outputs] == [("stream", "False\n")]
    assert [c.outputs for c in code[:2]] == [[], []]
    ran.cells[3].source += "\nprint(1)"  # the checked cell changed since that run: refuse
    nbformat.write(ran, executed / "a.ipynb")
    with pytest.raises(ValueError, match="rerun"):
        main(["--from", str(executed), str(committed / "a.ipynb")])
