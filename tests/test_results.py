"""nblib.results: save_figure (files always, an inline figure only inside a notebook kernel), the atomic
writer shared by train, sweep and attacks, and JSON that keeps NaN apart from "not measured"."""
import json
import math
import threading

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import pytest  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from nblib.results import (in_notebook_kernel, jsonable, load_metrics, read_json, save_figure, save_metrics,  # noqa: E402
                           write_atomic,
                           write_json_atomic)


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


def test_concurrent_writers_never_leave_a_partial_file(tmp_path):
    """Eight threads rewrite one file with different large contents: every write succeeds (the temporary
    names are unique), the file always holds one whole content, and no temporary file is left."""
    path = tmp_path / "shared.json"
    contents = [json.dumps({"writer": i, "pad": str(i) * 200_000}) for i in range(8)]
    errors, seen = [], set()

    def writer(i):
        try:
            for _ in range(5):
                write_atomic(path, contents[i])
                seen.add(path.read_text())
        except Exception as err:  # noqa: BLE001 -- collected for the assertion
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert seen <= set(contents) and path.read_text() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["shared.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.bin"
    write_atomic(path, b"old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_nan_and_not_measured_stay_apart(tmp_path):
    obj = {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "none": None, "x": [1.5, math.nan], "s": "ok"}
    write_json_atomic(tmp_path / "m.json", obj)
    raw = json.loads((tmp_path / "m.json").read_text())  # strict JSON: no NaN literal
    assert raw["nan"] == "NaN" and raw["inf"] == "Infinity" and raw["ninf"] == "-Infinity" and raw["none"] is None
    back = read_json(tmp_path / "m.json")
    assert math.isnan(back["nan"]) and back["inf"] == math.inf and back["ninf"] == -math.inf
    assert back["none"] is None and back["x"][0] == 1.5 and math.isnan(back["x"][1]) and back["s"] == "ok"
    assert jsonable({"a": math.nan}) == {"a": "NaN"}  # one convention for every JSON file
    save_metrics(tmp_path, "nb", {"nan": math.nan, "none": None})  # notebook metrics too
    back = load_metrics(tmp_path, "nb")
    assert math.isnan(back["nan"]) and back["none"] is None
    with pytest.raises(ValueError, match="nonfinite"):
        jsonable(1.0, nonfinite="drop")


def test_read_json_names_the_file(tmp_path):
    (tmp_path / "torn.json").write_text('{"a": 1')
    with pytest.raises(ValueError, match="torn.json is not valid JSON"):
        read_json(tmp_path / "torn.json")
