"""nblib.results.save_figure: files always, an inline figure only inside a notebook kernel."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from nblib.results import in_notebook_kernel, save_figure  # noqa: E402


def test_save_figure_outside_a_kernel_writes_png_and_pdf_and_closes(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path, "01_line")
    assert path == tmp_path / "figures" / "01_line.png"
    assert path.read_bytes()[:4] == b"\x89PNG" and (tmp_path / "figures" / "01_line.pdf").read_bytes()[:4] == b"%PDF"
    assert fig.number not in plt.get_fignums()
    assert not in_notebook_kernel()


@pytest.mark.slow
def test_save_figure_in_a_kernel_shows_the_figure_once(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import matplotlib.pyplot as plt\nfrom nblib.results import save_figure, in_notebook_kernel\n"
        "fig, ax = plt.subplots()\nax.plot([0, 1], [1, 0])\nprint(in_notebook_kernel())\n"
        f"save_figure(fig, {str(tmp_path)!r}, '01_line');")])
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = nb.cells[0].outputs
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["True\n"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1, outputs  # shown inline once; closed, so the inline backend does not repeat it
    assert (tmp_path / "figures" / "01_line.png").exists() and (tmp_path / "figures" / "01_line.pdf").exists()
