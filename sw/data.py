"""The built-in data set: scikit-learn's bundled handwritten digits (8x8, 10 classes).

A fixed, seeded, stratified 70/30 split: 1257 training and 540 test samples.
Pixels are scaled from 0..16 to 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Dataset", "load", "DATASETS", "loader"]

DATASETS = ("digits",)


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray   # float32 [n, features]
    y_train: np.ndarray   # int64 [n]
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    @property
    def classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def load(name: str = "digits", seed: int = 0) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; built in: {', '.join(DATASETS)}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=seed)
    return Dataset(name, xtr, ytr, xte, yte)


def loader(x: np.ndarray, y: np.ndarray, batch: int, *, shuffle: bool, seed: int = 0):
    """Batches of (float tensor, long tensor); a fresh shuffle each call when asked."""
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(xt), generator=gen) if shuffle else torch.arange(len(xt))
    for k in range(0, len(xt), batch):
        idx = order[k:k + batch]
        yield xt[idx], yt[idx]
