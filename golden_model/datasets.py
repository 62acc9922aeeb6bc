"""Data sets, all local: scikit-learn digits (default), a synthetic task, MNIST from a user's file.

Every loader returns a :class:`Dataset` with inputs scaled to [0, 1] (they are firing rates for the
spiking model) and integer labels. Nothing here downloads anything.

The digits split is fixed and documented: scikit-learn's 1,797 8×8 images, pixel/16, split 80/20
*stratified by class* with ``train_test_split(test_size=0.2, stratify=y, random_state=0)`` — 1,437 train
and 360 test samples. The split does not depend on the training seed, so runs with different seeds
are compared on the same test set.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "DatasetError", "load_dataset", "load_digits", "make_synthetic", "load_mnist"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class DatasetError(ValueError):
    """A data set that cannot be loaded (missing file, wrong format); the message says which and why."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (n_train, n_in) float64 in [0, 1]
    y_train: np.ndarray  # (n_train,) int64 class labels
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> str:
        return (f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, "
                f"{self.n_inputs} inputs, {self.n_classes} classes")


def load_digits() -> Dataset:
    """scikit-learn digits with the fixed stratified 80/20 split documented in the module docstring."""
    from sklearn.datasets import load_digits as _load  # the data file ships inside the sklearn wheel
    from sklearn.model_selection import train_test_split

    data = _load()
    x = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def make_synthetic(n_inputs: int = 16, n_classes: int = 4, n_train: int = 800, n_test: int = 200,
                   seed: int = 0) -> Dataset:
    """A small, linearly-non-trivial task: each class is a noisy binary-ish prototype pattern in [0, 1]^n.

    Prototypes are random in [0, 1]; samples are the prototype plus uniform noise of half-width 0.35,
    clipped to [0, 1]. Deterministic for a given seed.
    """
    rng = np.random.default_rng(seed)
    protos = rng.random((n_classes, n_inputs))
    def draw(n):
        y = np.arange(n) % n_classes
        rng.shuffle(y)
        x = np.clip(protos[y] + rng.uniform(-0.35, 0.35, (n, n_inputs)), 0.0, 1.0)
        return x, y.astype(np.int64)
    x_tr, y_tr = draw(n_train)
    x_te, y_te = draw(n_test)
    return Dataset("synthetic", x_tr, y_tr, x_te, y_te, n_classes)


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "y_train": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "x_test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "y_test": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: header says {dims} but the file holds {body.size} bytes")
    return body.reshape(dims)


def load_mnist(path: str | Path | None) -> Dataset:
    """MNIST from a local ``.npz`` (x_train, y_train, x_test, y_test; uint8) or a folder of IDX files."""
    if path is None:
        raise DatasetError("MNIST needs a local file: pass --data PATH (an .npz or a folder of IDX files)")
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"MNIST file {str(path)!r} does not exist")
    arrays = {}
    try:
        if path.is_dir():
            for key, names in _IDX_NAMES.items():
                for name in names:
                    hits = [path / name, path / (name + ".gz")]
                    hit = next((h for h in hits if h.exists()), None)
                    if hit is not None:
                        arrays[key] = _read_idx(hit)
                        break
                else:
                    raise DatasetError(f"{path}: no {names[0]}[.gz] in this folder")
        else:
            with np.load(path, allow_pickle=False) as npz:
                missing = [k for k in _IDX_NAMES if k not in npz.files]
                if missing:
                    raise DatasetError(f"{path}: missing array(s) {', '.join(missing)}")
                arrays = {k: npz[k] for k in _IDX_NAMES}
    except (OSError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"cannot read MNIST from {str(path)!r}: {exc}") from None
    x_tr = arrays["x_train"].reshape(len(arrays["x_train"]), -1).astype(np.float64) / 255.0
    x_te = arrays["x_test"].reshape(len(arrays["x_test"]), -1).astype(np.float64) / 255.0
    y_tr = arrays["y_train"].astype(np.int64).ravel()
    y_te = arrays["y_test"].astype(np.int64).ravel()
    if len(x_tr) != len(y_tr) or len(x_te) != len(y_te):
        raise DatasetError(f"{path}: image and label counts differ")
    return Dataset("mnist", x_tr, y_tr, x_te, y_te, int(max(y_tr.max(), y_te.max())) + 1)


def load_dataset(name: str, path: str | Path | None = None, seed: int = 0) -> Dataset:
    if name == "digits":
        return load_digits()
    if name == "synthetic":
        return make_synthetic(seed=seed)
    if name == "mnist":
        return load_mnist(path)
    raise DatasetError(f"unknown data set {name!r}; choose digits, synthetic or mnist")
