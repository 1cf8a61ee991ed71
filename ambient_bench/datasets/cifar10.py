"""CIFAR-10 from its python pickle batches (the paper's CIFAR-10 experiments)."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ambient_bench.components import Dataset, ImageSet
from ambient_bench.datasets._paths import limit_param, root_or_default, standin_fingerprint
from ambient_bench.errors import UserError
from ambient_bench.params import Param
from ambient_bench.registry import register_dataset

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
# What torchvision's download gives, for counting before it has run.
OFFICIAL_SIZES = {"train": 50_000, "test": 10_000}


# What the official batches (and numpy's own array pickles) ask for; anything else, e.g. os.system
# planted in a crafted file, is refused before it can run.
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _BatchUnpickler(pickle.Unpickler):
    """Admits only the arrays, lists, numbers and strings a CIFAR-10 batch contains."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never contains")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise UserError(f"cifar10: {path} is not a CIFAR-10 python batch ({err}); nothing in it was run; "
                        f"re-download {URL}") from None
    if not isinstance(batch, dict):
        raise UserError(f"cifar10: {path} is not a CIFAR-10 python batch (a {type(batch).__name__}, not a dict); "
                        f"re-download {URL}")
    return batch


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file → (uint8 N×3×32×32, int64 N).

    The batches are pickled dicts with byte-string keys: b"data" holds N rows of 3072 bytes,
    the red, green and blue 32×32 planes one after the other (so a reshape gives C×H×W).
    """
    batch = _unpickle(path)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"cifar10: {path} is not a CIFAR-10 python batch (no usable b'data' / b'labels': {err}); "
                        f"re-download {URL}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"cifar10: {path} is not a CIFAR-10 python batch (data {data.shape}, "
                        f"{len(labels)} labels); re-download {URL}")
    return data.reshape(-1, 3, 32, 32), labels


_CHECKED: dict[tuple[str, int, int], int] = {}  # (path, size, mtime_ns) → images of a batch read whole once


def checked_size(path: Path) -> int:
    """Images in one batch file, after reading it whole (read_batch's checks): a planted or cut-short batch is a
    UserError wherever a stage or ``check()`` asks first, so ``plan`` and ``run`` refuse it before any work."""
    stat = path.stat()
    ident = (str(path), stat.st_size, stat.st_mtime_ns)
    if ident not in _CHECKED:
        _CHECKED[ident] = len(read_batch(path)[1])
    return _CHECKED[ident]


@register_dataset("cifar10")
class Cifar10(Dataset):
    """CIFAR-10, 32×32 RGB, labels 0..9: 50 000 train or 10 000 test images, in file order.

    Expects ``<root>/cifar-10-batches-py/`` (the python version, from
    https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extracted into ``root``).
    Images are stored at their native 32×32, so there is no resizing. With ``download: true``
    torchvision fetches and extracts the archive into ``root`` first (that needs internet).
    `limit: N` keeps the first N images (batch files in order, rows in file order).
    """

    native_resolution = 32  # no resolution parameter: the files are 32×32

    version = 1
    needs_files = True
    params = {
        # Where the files are, not what they are: moving the data does not change results.
        "root": Param(None, "folder holding cifar-10-batches-py/; null = $AMBIENT_BENCH_DATA or "
                      "~/.cache/ambient_bench/datasets", kind=str, nullable=True, semantic=False),
        "split": Param("train", "which images", kind=str, choices=("train", "test")),
        "download": Param(False, "fetch the archive with torchvision if missing (needs internet)",
                          kind=bool, semantic=False),
        "limit": limit_param(),
    }
    test_params = {"root": "cifar10-test-root"}

    def _root(self) -> Path:
        return root_or_default(self.p.root)

    def _missing(self) -> Path | None:
        folder = self._root() / FOLDER
        for name in BATCHES[self.p.split]:
            if not (folder / name).is_file():
                return folder / name
        return None

    def check(self) -> None:
        missing = self._missing()
        if missing is None:  # every batch is read whole (once per process): a bad one is refused before any work
            for name in BATCHES[self.p.split]:
                checked_size(self._root() / FOLDER / name)
            return
        if self.p.download:
            if importlib.util.find_spec("torchvision") is None:
                raise UserError(f"cifar10: download: true needs torchvision (pip install torchvision); "
                                f"or download {URL} yourself and extract it into {self._root()}")
            return
        raise self._missing_error(missing)

    def _missing_error(self, missing: Path) -> UserError:
        return UserError(f"cifar10: expected {missing} (the python version of CIFAR-10); download {URL} "
                         f"and extract it into {self._root()}, or set root: to where it is, "
                         f"or set download: true")

    def count(self) -> int | None:
        self.check()
        if self._missing() is not None:  # download: true, not run yet; it fetches the official files
            total = OFFICIAL_SIZES[self.p.split]
        else:
            total = sum(checked_size(self._root() / FOLDER / name) for name in BATCHES[self.p.split])
        return total if self.p.limit is None else min(total, self.p.limit)

    def nominal_count(self) -> int | None:
        total = OFFICIAL_SIZES[self.p.split]
        return total if self.p.limit is None else min(total, self.p.limit)

    def fingerprint(self) -> dict[str, Any]:
        return standin_fingerprint(self._root())

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10

        from ambient_bench.weights import offline

        root = self._root()
        if offline():  # --offline / AMBIENT_BENCH_OFFLINE / HF_HUB_OFFLINE: never touch the network
            raise UserError(f"cifar10: {self._missing()} is missing and this run is offline ({offline()}); "
                            f"download {URL} elsewhere and extract it into {root}")
        root.mkdir(parents=True, exist_ok=True)
        try:
            CIFAR10(root=str(root), train=self.p.split == "train", download=True)
        except Exception as err:  # a network failure: say what to do instead of a traceback
            detail = " ".join(str(err).split())[:200]
            raise UserError(f"cifar10: could not download {URL} into {root} ({type(err).__name__}: "
                            f"{detail}); download it yourself and extract it there") from None

    def load(self) -> ImageSet:
        self.check()
        if self._missing() is not None:
            self._download()
            missing = self._missing()
            if missing is not None:  # the archive did not hold what we expect
                raise self._missing_error(missing)
        folder = self._root() / FOLDER
        parts = [read_batch(folder / name) for name in BATCHES[self.p.split]]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if self.p.limit is not None:  # copies, so that the full arrays can be freed
            images, labels = images[:self.p.limit].copy(), labels[:self.p.limit].copy()
        return ImageSet(images=torch.from_numpy(images), labels=torch.from_numpy(labels))
