"""Shared data for the edge-case tests: real data sets that ship inside packages."""

from __future__ import annotations

import gzip
import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def shuttle() -> tuple[np.ndarray, np.ndarray]:
    """river's Shuttle (49,097 x 9, label 1 = anomaly), read offline from the packaged CSV."""
    from river.datasets import Shuttle

    with gzip.open(Shuttle().path, "rt") as fh:
        header = fh.readline().strip().split(",")
        data = np.loadtxt(fh, delimiter=",")
    y = data[:, header.index("anomaly")].astype(int)
    return np.delete(data, header.index("anomaly"), axis=1), y


def corrupt(X: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One realistic corruption per row, on a random feature (or pair)."""
    X = X.copy()
    n, p = X.shape
    rows = np.arange(n)
    j = rng.integers(0, p, n)
    if kind == "unit_x1000":
        X[rows, j] *= 1000.0
    elif kind == "stuck":  # a dead sensor stuck at zero
        X[rows, j] = 0.0
    elif kind == "sign_flip":
        X[rows, j] = -X[rows, j]
    elif kind == "swap":
        k = (j + 1 + rng.integers(0, p - 1, n)) % p
        X[rows, j], X[rows, k] = X[rows, k], X[rows, j].copy()
    elif kind == "missing":
        X[rows, j] = np.nan
    else:  # pragma: no cover
        raise ValueError(kind)
    return X
