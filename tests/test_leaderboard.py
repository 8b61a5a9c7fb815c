"""RobustBench's leaderboard figures shipped with the package, and read from model_info files (no robustbench
import needed)."""
import json

import pytest

from nblib.models.robustbench_zoo import leaderboard


def test_shipped_leaderboard_names_its_source_and_holds_the_published_figures():
    table = leaderboard()
    assert {"Linf", "L2"} == set(table.threat_model)
    assert "RobustBench/robustbench at commit" in table.source[0]
    row = table.set_index(["threat_model", "entry"]).loc[("Linf", "Wong2020Fast")]
    assert (row.architecture, row.clean_acc, row.autoattack_acc) == ("PreActResNet-18", 83.34, 43.21)
    assert table.set_index(["threat_model", "entry"]).loc[("L2", "Standard"), "autoattack_acc"] == 0.0
    assert not table.duplicated(["threat_model", "entry"]).any()


def test_leaderboard_reads_model_info_files(tmp_path):
    folder = tmp_path / "cifar10" / "L2"
    folder.mkdir(parents=True)
    (folder / "Toy2026.json").write_text(json.dumps({"architecture": "ResNet-18", "eps": "0.5",
                                                     "clean_acc": "90.5", "autoattack_acc": "70.25"}))
    table = leaderboard(tmp_path)
    assert list(table.entry) == ["Toy2026"] and table.autoattack_acc[0] == 70.25
    with pytest.raises(FileNotFoundError, match="model_info"):
        leaderboard(tmp_path / "nothing")
