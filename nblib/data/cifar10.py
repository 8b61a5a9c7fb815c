"""CIFAR-10 read from its python version (``cifar-10-batches-py``), verified by MD5, fetched when online,
and a small fixture in the exact same format for tests and the ``rehearsal`` profile.

The whole split is one uint8 tensor ``N x 3 x 32 x 32`` (:class:`CIFAR10Arrays`), so training can keep it on
the device.  Real files are always checked against the official checksums; a fixture folder carries its own
manifest and is marked as a fixture wherever it is read (:func:`cifar10_checksums`).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from nblib.data.digits import DigitsCIFARLike, check_split

__all__ = ["CIFAR10_FOLDER", "CIFAR10_MD5", "CIFAR10_CLASSES", "FIXTURE_MANIFEST", "CIFAR10Arrays",
           "cifar10_checksums", "verify_cifar10", "fetch_cifar10", "load_cifar10",
           "write_cifar10_fixture"]

#: The folder inside ``data_root`` that holds the python version of CIFAR-10.
CIFAR10_FOLDER = "cifar-10-batches-py"
#: Official MD5 checksums of the extracted files (those torchvision checks too).
CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
#: A folder in the CIFAR-10 format written by :func:`write_cifar10_fixture` carries this manifest.
FIXTURE_MANIFEST = "NBLIB_FIXTURE.json"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cifar_missing_message(root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found ({reason}). Put the extracted python version of "
        f"CIFAR-10 (data_batch_1..5, test_batch, batches.meta) in "
        f"'{root / CIFAR10_FOLDER}': run `python3 tasks.py data --root {root}` "
        f"on a machine with internet access (downloads and verifies it), extract "
        f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        f"into '{root}', or pass download=True when online.")


def cifar10_checksums(root) -> tuple[dict, bool]:
    """``(expected MD5 per file, is_fixture)`` for ``<root>/cifar-10-batches-py``.

    Real CIFAR-10 is verified against :data:`CIFAR10_MD5`.  A folder written by
    :func:`write_cifar10_fixture` holds a manifest (:data:`FIXTURE_MANIFEST`) with
    the checksums of its own files; those are used instead and the data is
    marked as a fixture (runs record it), so a fixture can never pass for
    CIFAR-10 and real data is always checked against the official sums.
    """
    folder = Path(root).expanduser() / CIFAR10_FOLDER
    manifest = folder / FIXTURE_MANIFEST
    if not manifest.exists():
        return dict(CIFAR10_MD5), False
    try:
        md5 = json.loads(manifest.read_text())["md5"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FileNotFoundError(f"fixture manifest {manifest} is unreadable ({err!r}); delete "
                                f"{folder} and write the fixture again") from err
    if set(md5) != set(CIFAR10_MD5):
        raise FileNotFoundError(f"fixture manifest {manifest} lists {sorted(md5)}, "
                                f"not the CIFAR-10 files {sorted(CIFAR10_MD5)}")
    return md5, True


def verify_cifar10(root, files=tuple(CIFAR10_MD5)) -> bool:
    """Check ``files`` of ``<root>/cifar-10-batches-py`` against their MD5
    (:func:`cifar10_checksums`); returns whether the folder is a fixture.

    Raises:
        FileNotFoundError: a file is missing or its checksum differs; the
            message names the file and how to get CIFAR-10.
    """
    root = Path(root).expanduser()
    md5, is_fixture = cifar10_checksums(root)
    for name in files:
        path = root / CIFAR10_FOLDER / name
        if not path.exists():
            raise FileNotFoundError(_cifar_missing_message(root, f"{path} is missing"))
        got = _md5(path)
        if got != md5[name]:
            raise FileNotFoundError(_cifar_missing_message(
                root, f"{path} has MD5 {got}, expected {md5[name]}: corrupted or not CIFAR-10"))
    return is_fixture


class CIFAR10Arrays(Dataset):
    """CIFAR-10 read from the python version's pickled batches, verified by MD5.

    ``images`` is the whole split as one uint8 tensor ``N x 3 x 32 x 32``
    (``data_batch_1..5``: 50,000 images; ``test_batch``: 10,000) and
    ``targets`` an int64 tensor of labels, so a training loop can move the
    split to the device at once; ``dataset[i]`` is ``(images[i] / 255 as
    float32, int label)``.  A folder
    written by :func:`write_cifar10_fixture` reads through the same code and
    sets ``is_fixture``.
    """

    n_classes = 10
    classes = CIFAR10_CLASSES

    def __init__(self, root, split: str = "train") -> None:
        check_split(split)
        root = Path(root).expanduser()
        files = CIFAR10_TRAIN_FILES if split == "train" else CIFAR10_TEST_FILES
        self.is_fixture = verify_cifar10(root, files)
        data, labels = [], []
        for name in files:
            with open(root / CIFAR10_FOLDER / name, "rb") as f:
                batch = pickle.load(f, encoding="latin1")
            data.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(int(v) for v in batch["labels"])
        self.split, self.root = split, root
        self.images = torch.from_numpy(np.concatenate(data))
        self.targets = torch.tensor(labels, dtype=torch.int64)
        if self.targets.numel() and not (0 <= int(self.targets.min()) and int(self.targets.max()) < 10):
            raise ValueError(f"{root / CIFAR10_FOLDER}: labels outside 0..9")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i].float().div_(255.0), int(self.targets[i])

    def __repr__(self) -> str:
        kind = "CIFAR-format fixture" if self.is_fixture else "CIFAR-10"
        return f"CIFAR10Arrays({kind}, split={self.split!r}, n={len(self)}, root='{self.root}')"


def fetch_cifar10(root) -> Path:
    """Download CIFAR-10 (python version) into ``root`` when it is not there
    and verify every file by MD5; returns ``<root>/cifar-10-batches-py``.

    Raises:
        FileNotFoundError: offline or a failed download/checksum; the message
            says where to put the files by hand.
    """
    root = Path(root).expanduser()
    try:
        verify_cifar10(root)
        return root / CIFAR10_FOLDER
    except FileNotFoundError:
        if (root / CIFAR10_FOLDER / FIXTURE_MANIFEST).exists():
            raise
    from torchvision.datasets.utils import download_and_extract_archive

    root.mkdir(parents=True, exist_ok=True)
    try:
        download_and_extract_archive(CIFAR10_URL, str(root), filename="cifar-10-python.tar.gz",
                                     md5=CIFAR10_ARCHIVE_MD5)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise FileNotFoundError(_cifar_missing_message(root, f"download failed: {err!r}")) from err
    verify_cifar10(root)
    return root / CIFAR10_FOLDER


def load_cifar10(root, train: bool, download: bool = False) -> CIFAR10Arrays:
    """:class:`CIFAR10Arrays` of ``root`` (train or test split); with
    ``download`` the files are fetched first when missing (:func:`fetch_cifar10`).

    Raises:
        FileNotFoundError: files missing or corrupted (and ``download`` is
            False, or the download failed); the message names
            ``<root>/cifar-10-batches-py`` and how to get the files.
    """
    if download:
        fetch_cifar10(root)
    return CIFAR10Arrays(root, "train" if train else "test")


def _kept_fixture(root: Path, spec: dict) -> bool:
    """Whether ``<root>/cifar-10-batches-py`` is a fixture written with the settings ``spec`` (then verified
    and kept); False when there is no such folder or a fixture with other settings; FileExistsError when the
    folder is not a fixture (it is never touched)."""
    folder = root / CIFAR10_FOLDER
    manifest = folder / FIXTURE_MANIFEST
    if manifest.exists():
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            old = {}
        if {k: old.get(k) for k in spec} == spec:
            verify_cifar10(root)
            return True
    elif folder.exists():
        raise FileExistsError(f"{folder} exists and is not an nblib fixture (real CIFAR-10?); "
                              "choose another root")
    return False


def _tinted_digits(split: str, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` digits of ``split`` (a seeded subset, in order) as uint8 ``n x 3 x 32 x 32`` images, each the
    digit in a random colour (``fg`` in [0.5, 1]) on a random dark background (``bg`` in [0, 0.3]), and
    their labels."""
    digits = DigitsCIFARLike(split)
    idx = torch.randperm(len(digits), generator=g)[:n].sort().values
    x = digits.images[idx, :1]  # n x 1 x 32 x 32 in [0, 1]
    fg = 0.5 + 0.5 * torch.rand(n, 3, 1, 1, generator=g)
    bg = 0.3 * torch.rand(n, 3, 1, 1, generator=g)
    rgb = (bg + (fg - bg) * x).clamp(0, 1)
    return (rgb * 255).round().to(torch.uint8), digits.targets[idx]


def _dump_fixture(folder: Path, spec: dict, train: tuple, test: tuple) -> None:
    """The CIFAR-10 files of the fixture in ``folder``: ``train`` (images, labels) split over
    ``data_batch_1..5``, ``test`` in ``test_batch``, ``batches.meta``, and the manifest with ``spec`` and the
    files' MD5 sums."""
    def dump(name, obj):
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    (x_train, y_train), (x_test, y_test) = train, test
    n_train, n_test = spec["n_train"], spec["n_test"]
    for i, part in enumerate(torch.arange(n_train).chunk(5), 1):
        dump(f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                 "labels": y_train[part].tolist(),
                                 "data": x_train[part].reshape(len(part), -1).numpy(),
                                 "filenames": [f"fixture_train_{j}.png" for j in part.tolist()]})
    dump("test_batch", {"batch_label": "testing batch 1 of 1", "labels": y_test.tolist(),
                        "data": x_test.reshape(n_test, -1).numpy(),
                        "filenames": [f"fixture_test_{j}.png" for j in range(n_test)]})
    dump("batches.meta", {"num_cases_per_batch": -(-n_train // 5), "label_names": list(CIFAR10_CLASSES),
                          "num_vis": 3072})
    md5 = {name: _md5(folder / name) for name in CIFAR10_MD5}
    (folder / FIXTURE_MANIFEST).write_text(json.dumps({**spec, "md5": md5}, indent=1, sort_keys=True) + "\n")


def _move_into_place(tmp: Path, root: Path) -> None:
    """The written folder ``tmp`` renamed to ``<root>/cifar-10-batches-py``; a fixture with other settings
    there is moved aside and deleted first; if another process renamed its (identical) fixture into place
    meanwhile, that one is kept."""
    folder = root / CIFAR10_FOLDER
    manifest = folder / FIXTURE_MANIFEST
    os.chmod(tmp, 0o755)
    if manifest.exists():  # a fixture with other settings: ours to replace
        old = Path(tempfile.mkdtemp(prefix=f".old-{CIFAR10_FOLDER}.", dir=root))
        os.replace(folder, old / CIFAR10_FOLDER)
        shutil.rmtree(old)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process won the race: keep its (identical) fixture
        if not manifest.exists():
            raise


def write_cifar10_fixture(root, n_train: int = 256, n_test: int = 100, seed: int = 0) -> Path:
    """Write a small data set in the exact ``cifar-10-batches-py`` format to
    ``<root>/cifar-10-batches-py`` and return that folder.

    The images are real handwritten digits (:class:`DigitsCIFARLike`, class =
    digit), each tinted with a random colour on a random dark background and
    quantised to uint8, so the labels are learnable and accuracy means
    something; ``n_train`` images are split over ``data_batch_1..5`` (as in
    CIFAR-10), ``n_test`` go to ``test_batch``, ``batches.meta`` holds the
    CIFAR-10 label names.  The manifest :data:`FIXTURE_MANIFEST` records the
    files' MD5 sums (:func:`cifar10_checksums`).  Deterministic in ``seed``;
    an existing fixture with the same settings is kept, one with other
    settings is replaced, a folder that is not a fixture is never touched;
    the folder is written under a temporary name and renamed into place.
    """
    root = Path(root).expanduser()
    spec = {"kind": "nblib CIFAR-format fixture (digits)", "n_train": int(n_train), "n_test": int(n_test),
            "seed": int(seed)}
    if _kept_fixture(root, spec):
        return root / CIFAR10_FOLDER
    if not (10 <= n_train <= 1437 and 10 <= n_test <= 360):
        raise ValueError(f"n_train must be in [10, 1437] and n_test in [10, 360], got {n_train}, {n_test}")
    g = torch.Generator().manual_seed(int(seed))
    train = _tinted_digits("train", n_train, g)
    test = _tinted_digits("test", n_test, g)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR10_FOLDER}.", dir=root))
    try:
        _dump_fixture(tmp, spec, train, test)
        _move_into_place(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    verify_cifar10(root)
    return root / CIFAR10_FOLDER


def main(argv=None) -> int:
    """``python -m nblib.data.cifar10 [--root data] [--fixture]``: fetch and verify CIFAR-10 into ``<root>``
    (online), or write the CIFAR-format fixture of the rehearsal profile into ``<root>/cifar10-fixture``."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "data",
                        help="folder that holds cifar-10-batches-py (default: data/ of this repository, where "
                             "params/paper.yaml reads it)")
    parser.add_argument("--fixture", action="store_true",
                        help="write the small CIFAR-format fixture to <root>/cifar10-fixture (no download)")
    args = parser.parse_args(argv)
    try:
        if args.fixture:
            folder = write_cifar10_fixture(args.root / "cifar10-fixture")
            print(f"CIFAR-format fixture (digits, not CIFAR-10) in {folder}")
        else:
            folder = fetch_cifar10(args.root)
            print(f"CIFAR-10 verified (MD5 of every file) in {folder}")
    except (FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
