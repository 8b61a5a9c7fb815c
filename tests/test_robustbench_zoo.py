"""RobustBench's zoo architectures with random weights, offline: complete layer tables (every conv, Linear and
BatchNorm normed, or listed with the reason), the missing-weights message; the whole CIFAR-10 l_inf and l2 zoo
in the slow tier.  Skipped when the optional extra is not installed (``pip install -e '.[robustbench]'``)."""
import math

import pytest
import torch
import torch.nn as nn

from nblib.norms import NOT_REACHED, SUPPORTED, layer_census, layer_norms

zoo = pytest.importorskip("nblib.models.robustbench_zoo")
try:
    zoo.robustbench_zoo()
except ImportError as e:  # the optional extra is absent
    pytest.skip(str(e), allow_module_level=True)

NORMED_KINDS = (*SUPPORTED, nn.modules.batchnorm._BatchNorm)


def check_complete(model: nn.Module, table) -> None:
    """Every module holding parameters is a row; a row has a finite norm or a note, never both."""
    with_params = [n for n, m in model.named_modules()
                   if next(m.parameters(recurse=False), None) is not None or isinstance(m, NORMED_KINDS)]
    assert sorted(table.name) == sorted(with_params)
    normed = table.note == ""
    assert table.norm[normed].map(math.isfinite).all() and (table.norm[normed] >= 0).all()
    assert table.norm[~normed].isna().all() and (table.note[~normed].str.len() > 0).all()


def test_wong2020fast_table_is_complete():
    model = zoo.build_entry("Wong2020Fast", "Linf")
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) > 10_000_000  # PreAct ResNet-18
    with torch.no_grad():
        table = layer_norms(model, (3, 32, 32), math.inf, include_batchnorm=True)
    check_complete(model, table)
    census = layer_census(table)
    assert set(census.index) >= {"Conv2d", "Linear", "BatchNorm2d"}
    assert census.loc["Conv2d", "normed"] == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert (table.note == NOT_REACHED).sum() == census.not_reached.sum()


def test_standard_l2_and_linf_entries_share_the_architecture():
    a, b = zoo.build_entry("Standard", "Linf"), zoo.build_entry("Standard", "L2")
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    assert "Wong2020Fast" in zoo.zoo_entries("Linf") and "Standard" in zoo.zoo_entries("L2")


def test_offline_without_weights_names_the_file_and_the_command(tmp_path):
    with pytest.raises(zoo.MissingWeightsError) as err:
        zoo.load_entry("Wong2020Fast", "Linf", model_dir=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar10" / "Linf" / "Wong2020Fast.pt") in message
    assert "load_model('Wong2020Fast'" in message and "random_weights" in message
    with pytest.raises(KeyError, match="not a CIFAR-10 L2 entry"):
        zoo.build_entry("Wong2020Fast", "L2")
    with pytest.raises(ValueError, match="threat_model"):
        zoo.zoo_entries("Linf3")


@pytest.mark.slow
@pytest.mark.parametrize("threat_model", ["Linf", "L2"])
def test_every_buildable_zoo_entry_gets_a_complete_table(threat_model):
    built = 0
    for name in zoo.zoo_entries(threat_model):
        try:
            model = zoo.build_entry(name, threat_model)
        except Exception:  # noqa: BLE001 -- an entry whose architecture the zoo itself cannot build
            continue
        with torch.no_grad():
            table = layer_norms(model, (3, 32, 32), math.inf, include_batchnorm=True)
        check_complete(model, table)
        built += 1
        del model, table
    assert built >= 10
