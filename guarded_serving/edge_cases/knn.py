"""k-nearest-neighbour distance to a reference subsample (scipy's cKDTree).

Features are standardised by the training standard deviation; categorical
columns are left out; a missing value is imputed with the training mean.
The outlyingness of a row is its mean Euclidean distance to its ``k``
nearest reference rows. A KD-tree query is O(log n) per row in low
dimensions but degrades with many features: this detector is optional,
not part of the default combination (see ``benchmarks/README.md``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import BaseDetector, categorical_indices, check_matrix

__all__ = ["KNNDetector"]


class KNNDetector(BaseDetector):
    """Mean distance to the ``n_neighbors`` nearest reference rows.

    Parameters
    ----------
    n_neighbors : int, default=5
    categorical : sequence of int, default=()
        Columns to leave out.
    max_reference : int, default=10000
        ``fit`` keeps at most this many rows (a uniform subsample) as the reference.
    random_state : int, default=0

    Attributes
    ----------
    reference_ : ndarray of shape (n_reference, n_features)
    location_, scale_ : ndarray of shape (n_numeric,)
    columns_ : ndarray of int
    tree_ : scipy.spatial.cKDTree
    """

    def __init__(self, *, n_neighbors: int = 5, categorical: Sequence[int] = (), max_reference: int = 10_000,
                 random_state: int = 0) -> None:
        self.n_neighbors = n_neighbors
        self.categorical = tuple(categorical)
        self.max_reference = max_reference
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> "KNNDetector":
        """Keep a subsample of ``X`` as the reference and build the tree."""
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors={self.n_neighbors!r} is invalid: expected an integer >= 1")
        X = check_matrix(X)
        p = X.shape[1]
        cols = np.setdiff1d(np.arange(p), categorical_indices(self.categorical, p))
        if len(X) > self.max_reference:
            rng = np.random.default_rng(self.random_state)
            X = X[np.sort(rng.choice(len(X), self.max_reference, replace=False))]
        loc = np.nanmean(X[:, cols], axis=0) if len(X) else np.zeros(len(cols))
        loc = np.where(np.isnan(loc), 0.0, loc)
        sd = np.nanstd(X[:, cols], axis=0) if len(X) else np.ones(len(cols))
        return self._set_state(reference=X, columns=cols, location=loc, scale=sd)

    def _set_state(self, *, reference: np.ndarray, columns: np.ndarray, location: np.ndarray,
                   scale: np.ndarray) -> "KNNDetector":
        from scipy.spatial import cKDTree

        self.n_features_in_ = int(reference.shape[1])
        self.reference_ = np.asarray(reference, dtype=np.float64)
        self.columns_ = np.asarray(columns, dtype=np.intp)
        self.location_ = np.asarray(location, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        self.scale_ = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
        self._k = int(min(self.n_neighbors, max(len(self.reference_) - 1, 1)))
        self.tree_ = cKDTree(self._standardise(self.reference_))
        return self

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        Z = (X[:, self.columns_] - self.location_) / self.scale_
        if np.isnan(Z).any():
            Z = np.where(np.isnan(Z), 0.0, Z)
        return Z

    def outlyingness(self, X: Any) -> np.ndarray:
        """Mean distance to the k nearest reference rows. Higher = stranger."""
        self._check_fitted()
        X = check_matrix(X, n_features=self.n_features_in_)
        d, _ = self.tree_.query(self._standardise(X), k=self._k)
        return d.reshape(len(X), -1).mean(axis=1)

    def outlyingness_one(self, X: np.ndarray) -> float:
        """``outlyingness`` of a single row, as a float."""
        return float(self.outlyingness(X)[0])

    def train_outlyingness(self, max_rows: int | None = None) -> np.ndarray:
        """Leave-one-out outlyingness of the reference rows (each row's own distance dropped;
        the first ``max_rows`` of them if given)."""
        self._check_fitted()
        data = self.tree_.data if max_rows is None else self.tree_.data[:max_rows]
        d, _ = self.tree_.query(data, k=self._k + 1)
        return d.reshape(len(d), -1)[:, 1:].mean(axis=1)
