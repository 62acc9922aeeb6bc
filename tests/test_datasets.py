import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from loco_fpga.golden_model.datasets import DatasetError, load_digits, load_mnist, make_synthetic

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(), load_digits()
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of each class (174..183 per class)


def test_synthetic_is_deterministic_and_seeded():
    a, b, c = make_synthetic(seed=1), make_synthetic(seed=1), make_synthetic(seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1


def _fake_mnist_arrays(rng):
    return {"x_train": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
            "y_train": rng.integers(0, 10, 20).astype(np.uint8),
            "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
            "y_test": rng.integers(0, 10, 5).astype(np.uint8)}


def test_mnist_from_npz_and_idx_folder_agree(tmp_path):
    arrays = _fake_mnist_arrays(np.random.default_rng(0))
    np.savez(tmp_path / "m.npz", **arrays)
    folder = tmp_path / "idx"
    folder.mkdir()
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte"}
    for key, name in names.items():
        a = arrays[key]
        blob = bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
        (folder / name).write_bytes(gzip.compress(blob) if name.endswith(".gz") else blob)
    d1, d2 = load_mnist(tmp_path / "m.npz"), load_mnist(folder)
    np.testing.assert_array_equal(d1.x_train, d2.x_train)
    np.testing.assert_array_equal(d1.y_test, d2.y_test)
    assert d1.x_train.shape == (20, 784)
    np.testing.assert_allclose(d1.x_train * 255, arrays["x_train"].reshape(20, -1))


def test_mnist_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_mnist(tmp_path / "nope.npz")
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 4), np.uint8))
    with pytest.raises(DatasetError, match="missing array"):
        load_mnist(tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot read MNIST"):
        load_mnist(tmp_path / "junk.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path / "empty")
    with pytest.raises(DatasetError, match="needs a local file"):
        load_mnist(None)


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="MNIST file ../shared/data/mnist.npz not present")
def test_real_mnist_file():
    d = load_mnist(SHARED_MNIST)
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784) and d.n_classes == 10
