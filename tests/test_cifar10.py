"""The CIFAR-10 reader on a fixture written in the exact ``cifar-10-batches-py`` format (nothing downloaded)."""
import json
import pickle

import numpy as np
import pytest
import torch

from nblib.data import cifar10
from nblib.data.cifar10 import (CIFAR10_FOLDER, CIFAR10_MD5, FIXTURE_MANIFEST, CIFAR10Arrays, cifar10_checksums,
                                fetch_cifar10, verify_cifar10, write_cifar10_fixture)
from nblib.data import get_dataset


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10_fixture(root, n_train=100, n_test=40, seed=0)
    return root


def test_fixture_has_the_cifar_files_and_pickle_layout(fixture_root):
    folder = fixture_root / CIFAR10_FOLDER
    assert sorted(p.name for p in folder.iterdir()) == sorted([*CIFAR10_MD5, FIXTURE_MANIFEST])
    with open(folder / "data_batch_3", "rb") as f:
        batch = pickle.load(f, encoding="latin1")  # how CIFAR-10's own files are read
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (20, 3072)
    assert len(batch["labels"]) == 20 and all(0 <= v < 10 for v in batch["labels"])
    with open(folder / "batches.meta", "rb") as f:
        assert pickle.load(f, encoding="latin1")["label_names"][0] == "airplane"


def test_reader_returns_whole_split_as_tensors(fixture_root):
    train = CIFAR10Arrays(fixture_root, "train")
    test = get_dataset("cifar10", "test", fixture_root)
    assert train.is_fixture and test.is_fixture
    assert train.images.shape == (100, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (40, 3, 32, 32) and test.targets.dtype == torch.int64
    x, y = test[5]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, test.images[5].float() / 255) and y == int(test.targets[5])
    # channel-major rows, as in CIFAR-10: row = 1024 red, 1024 green, 1024 blue values
    with open(fixture_root / CIFAR10_FOLDER / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"][5]
    assert torch.equal(test.images[5, 1].flatten(), torch.from_numpy(raw[1024:2048]))
    assert "fixture" in repr(test)


def test_fixture_labels_are_learnable(fixture_root):
    """A nearest-class-mean classifier on the fixture beats chance by far: accuracy means something."""
    train, test = CIFAR10Arrays(fixture_root, "train"), CIFAR10Arrays(fixture_root, "test")
    gray = lambda d: d.images.float().mean(1).flatten(1)  # noqa: E731 -- the tint is random, the digit is not
    means = torch.stack([gray(train)[train.targets == c].mean(0) for c in range(10)])
    xs = gray(test)
    xs, means = xs - xs.mean(1, keepdim=True), means - means.mean(1, keepdim=True)
    pred = (torch.nn.functional.normalize(xs, dim=1) @ torch.nn.functional.normalize(means, dim=1).T).argmax(1)
    assert (pred == test.targets).float().mean() > 0.5


def test_fixture_is_deterministic_and_rewrite_is_a_no_op(tmp_path, fixture_root):
    write_cifar10_fixture(tmp_path, n_train=100, n_test=40, seed=0)
    a = json.loads((tmp_path / CIFAR10_FOLDER / FIXTURE_MANIFEST).read_text())
    b = json.loads((fixture_root / CIFAR10_FOLDER / FIXTURE_MANIFEST).read_text())
    assert a["md5"] == b["md5"]
    before = (tmp_path / CIFAR10_FOLDER / "test_batch").stat().st_mtime_ns
    write_cifar10_fixture(tmp_path, n_train=100, n_test=40, seed=0)  # same settings: kept
    assert (tmp_path / CIFAR10_FOLDER / "test_batch").stat().st_mtime_ns == before
    write_cifar10_fixture(tmp_path, n_train=50, n_test=40, seed=0)  # other settings: replaced
    assert len(CIFAR10Arrays(tmp_path, "train")) == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == [CIFAR10_FOLDER]  # no temporary folder left


def test_corrupted_file_is_refused_with_its_name(tmp_path):
    write_cifar10_fixture(tmp_path, n_train=50, n_test=20)
    path = tmp_path / CIFAR10_FOLDER / "data_batch_2"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FileNotFoundError, match="data_batch_2 has MD5"):
        CIFAR10Arrays(tmp_path, "train")
    CIFAR10Arrays(tmp_path, "test")  # the test split does not read data_batch_2


def test_real_cifar_is_checked_against_the_official_sums(tmp_path):
    """Without a fixture manifest the official MD5 sums apply: a file in the CIFAR layout with other
    content (here the fixture's, manifest removed) is refused, so a fixture can never pass for CIFAR-10."""
    write_cifar10_fixture(tmp_path, n_train=50, n_test=20)
    (tmp_path / CIFAR10_FOLDER / FIXTURE_MANIFEST).unlink()
    assert cifar10_checksums(tmp_path) == (CIFAR10_MD5, False)
    with pytest.raises(FileNotFoundError, match="expected " + CIFAR10_MD5["test_batch"]):
        verify_cifar10(tmp_path, ["test_batch"])
    with pytest.raises(FileExistsError, match="not an nblib fixture"):
        write_cifar10_fixture(tmp_path, n_train=50, n_test=20)


def test_official_checksums_match_torchvision():
    from torchvision.datasets import CIFAR10

    theirs = {name: md5 for name, md5 in CIFAR10.train_list + CIFAR10.test_list}
    theirs[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    assert theirs == CIFAR10_MD5
    assert cifar10.CIFAR10_ARCHIVE_MD5 == CIFAR10.tgz_md5 and cifar10.CIFAR10_URL == CIFAR10.url


def test_fetch_offline_gives_the_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(FileNotFoundError, match="download failed") as exc:
        fetch_cifar10(tmp_path)
    assert "tasks.py data" in str(exc.value) and str(tmp_path / CIFAR10_FOLDER) in str(exc.value)


def test_fetch_keeps_verified_files(tmp_path, monkeypatch):
    write_cifar10_fixture(tmp_path, n_train=50, n_test=20)
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", lambda *a, **k: pytest.fail("downloaded"))
    assert fetch_cifar10(tmp_path) == tmp_path / CIFAR10_FOLDER

