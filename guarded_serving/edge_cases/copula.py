"""Mahalanobis distance after a rank transform of each feature (a Gaussian-copula distance).

Each numeric feature is mapped to its normal score ``z = Phi^-1(F(x))``, ``F`` the training
distribution read off the same quantile grid the tail detector keeps (a value tied over
several grid levels, as in a discrete feature, takes the middle one; levels clipped to
``[1/(2(n+1)), 1 - 1/(2(n+1))]``), and the squared Mahalanobis distance is taken in that
space, under a Ledoit-Wolf shrinkage covariance of the transformed fitting rows. Beyond the
training range ``z`` goes on linearly, one unit per robust standard deviation of the feature
(interquartile range / 1.349; a sixth of the range where that is 0; a tenth of the value of a
constant feature, or 1 for a constant 0), so a unit error x1000 still lands far away.

Why: the plain Mahalanobis distance reads a skewed or heavy-tailed feature through its
variance, so a value at the bottom of a long-tailed feature (stuck at the minimum, divided by
1000, a zero sentinel) looks ordinary, and one feature's outliers inflate the covariance
that every other combination is judged by. On normal scores every feature weighs the same
per unit of rarity and the covariance is the rank correlation: it sees both a value rare
for its own feature and values that do not go together (``benchmarks/bench_ood_fpr.py``).
Categorical columns (and columns missing in every training row) are left out; a missing value contributes nothing (imputed with the
mean normal score, as the Mahalanobis detector imputes the mean).

Cost: the transform is a lookup in an equal-width table per feature, then the Mahalanobis
product: O(features^2) per row, like the Mahalanobis detector. The table's ``cells`` cells are
equal in ``asinh((x - median) / scale)``, not in ``x``, so a long-tailed feature's bulk is not
squeezed into a few cells (within a cell the normal score is interpolated linearly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import BaseDetector, NotFittedError, categorical_indices, check_matrix
from .mahalanobis import MahalanobisDetector
from .tail import DEFAULT_LEVELS, quantile_grid

__all__ = ["CopulaDetector"]

_CHUNK = 2048


class CopulaDetector(BaseDetector):
    """Squared Mahalanobis distance on per-feature normal scores (see the module docstring).

    Parameters
    ----------
    categorical : sequence of int, default=()
        Columns to leave out (categorical codes).
    levels : ndarray of shape (n_levels,), optional
        Quantile levels behind each feature's distribution (default: the tail detector's grid).
    cells : int, default=1024
        Cells of each feature's lookup table over its training range.

    Attributes
    ----------
    n_features_in_ : int
    columns_ : ndarray of int
        The numeric columns used.
    min_, max_ : ndarray of shape (n_numeric,)
        Training range of each numeric column.
    median_, scale_ : ndarray of shape (n_numeric,)
        Median and robust standard deviation (the table's warp; ``scale_`` also past the range).
    table_ : ndarray of shape (n_numeric, cells + 1)
        Normal score at each cell edge.
    location_ : ndarray of shape (n_numeric,)
    covariance_ : ndarray of shape (n_numeric, n_numeric)
        Shrunk covariance of the normal scores.
    shrinkage_ : float
    """

    def __init__(self, *, categorical: Sequence[int] = (), levels: np.ndarray | None = None,
                 cells: int = 1024) -> None:
        self.categorical = tuple(categorical)
        self.levels = levels
        self.cells = cells

    def fit(self, X: Any, y: Any = None) -> CopulaDetector:
        """Learn each feature's distribution and the covariance of the normal scores from ``X``."""
        X = check_matrix(X)
        levels = DEFAULT_LEVELS if self.levels is None else np.asarray(self.levels, dtype=np.float64)
        q, mn, mx = quantile_grid(X, levels)
        return self.set_marginals(n_samples=len(X), levels=levels, quantiles=q, minimum=mn, maximum=mx,
                                  missing_rate=np.isnan(X).mean(axis=0) if len(X) else None).fit_covariance(X)

    # -- state ------------------------------------------------------------------------------
    def set_marginals(self, *, n_samples: int, levels: np.ndarray, quantiles: np.ndarray, minimum: np.ndarray,
                      maximum: np.ndarray, missing_rate: np.ndarray | None = None) -> CopulaDetector:
        """Each numeric feature's normal-score table from a quantile grid (``quantiles`` of shape
        (n_features, n_levels) at ``levels``; the tail detector's state). A feature missing in every
        row (``missing_rate`` 1) is left out, like a categorical one. Returns self."""
        from scipy.special import ndtri

        if not isinstance(self.cells, int) or self.cells < 2:
            raise ValueError(f"cells={self.cells!r} is invalid: expected an integer >= 2")
        quantiles = np.asarray(quantiles, dtype=np.float64)
        levels = np.asarray(levels, dtype=np.float64)
        p = quantiles.shape[0]
        self.n_features_in_ = p
        self.columns_ = np.setdiff1d(np.arange(p), categorical_indices(self.categorical, p))
        if missing_rate is not None:
            self.columns_ = self.columns_[np.asarray(missing_rate, dtype=np.float64)[self.columns_] < 1.0]
        cols = self.columns_
        lo = np.asarray(minimum, dtype=np.float64)[cols]
        hi = np.asarray(maximum, dtype=np.float64)[cols]
        edge = 0.5 / (int(n_samples) + 1.0)
        G = self.cells
        q = len(cols)
        table = np.zeros((q, G + 1))
        scale, median = np.ones(q), lo.copy()
        wlo, inv = np.zeros(q), np.ones(q)
        for i, j in enumerate(cols.tolist()):
            qj = quantiles[j]
            ok = ~np.isnan(qj)
            if not ok.any():
                continue
            v, first, counts = np.unique(qj[ok], return_index=True, return_counts=True)
            lv = levels[ok]
            mid = (lv[first] + lv[first + counts - 1]) / 2.0  # a tied value: the middle of its levels
            z = ndtri(np.clip(mid, edge, 1.0 - edge))
            q1, med, q3 = np.interp([0.25, 0.5, 0.75], lv, qj[ok])
            rs = (q3 - q1) / 1.349
            # no spread: a sixth of the range; a constant: a tenth of its size (1 for a constant 0)
            scale[i] = rs if rs > 0 else (hi[i] - lo[i]) / 6.0 if hi[i] > lo[i] else 0.1 * abs(lo[i]) or 1.0
            median[i] = med
            w = np.arcsinh((v - med) / scale[i])  # the knots, warped
            wlo[i] = w[0]
            width = w[-1] - w[0]
            inv[i] = G / width if width > 0 else 1.0
            table[i] = np.interp(w[0] + np.arange(G + 1) / inv[i], w, z)
        self.min_, self.max_, self.median_, self.scale_, self.table_ = lo, hi, median, scale, table
        # table position u = asinh(x a + b) * inv + c
        self._a, self._b, self._inv, self._c = 1.0 / scale, -median / scale, inv, -wlo * inv
        self._flat = table.ravel()
        self._base = np.arange(len(cols)) * (G + 1)
        self._top = G - 1
        self._all = len(cols) == p
        return self

    def fit_covariance(self, X: Any) -> CopulaDetector:
        """The shrunk covariance of the normal scores of rows ``X`` (after :meth:`set_marginals`): the
        Mahalanobis detector fitted on them (a missing score imputed with the mean)."""
        return self._adopt(MahalanobisDetector().fit(self.transform(check_matrix(X, n_features=self.n_features_in_))))

    def set_covariance(self, *, location: np.ndarray, covariance: np.ndarray, shrinkage: float) -> CopulaDetector:
        q = len(self.columns_)
        return self._adopt(MahalanobisDetector()._set_state(n_features=q, columns=np.arange(q), location=location,
                                                            covariance=covariance, shrinkage=shrinkage))

    def _adopt(self, mah: MahalanobisDetector) -> CopulaDetector:
        self._mah = mah
        self.location_ = self._mah.location_
        self.covariance_ = self._mah.covariance_
        self.shrinkage_ = self._mah.shrinkage_
        return self

    # -- scoring --------------------------------------------------------------------------------
    def transform(self, X: np.ndarray) -> np.ndarray:
        """Normal scores of the numeric columns of validated rows ``X`` (NaN stays NaN)."""
        Xn = X if self._all else X[:, self.columns_]
        u = Xn * self._a
        u += self._b
        np.arcsinh(u, out=u)
        u *= self._inv
        u += self._c
        nan = np.isnan(u)
        has_nan = nan.any()
        if has_nan:
            u[nan] = 0.0
        z = self._interpolate(u)
        z += (Xn - Xn.clip(self.min_, self.max_)) * self._a  # past the range: linear in x (NaN where missing)
        if has_nan:
            z[nan] = np.nan
        return z

    def _interpolate(self, u: np.ndarray) -> np.ndarray:
        """Normal scores at table positions ``u`` (cells from each feature's first edge; any shape
        ending in n_numeric; clipped to the table), interpolated linearly within a cell."""
        i = u.clip(0.0, self._top).astype(np.intp)
        f = u - i
        f.clip(0.0, 1.0, out=f)
        i += self._base
        a = self._flat.take(i)
        z = self._flat.take(i + 1)
        z -= a
        z *= f
        z += a
        return z

    def outlyingness(self, X: Any) -> np.ndarray:
        """Squared Mahalanobis distance of each row's normal scores. Higher = stranger."""
        self._check_fitted()
        if type(X) is not np.ndarray or X.dtype != np.float64 or X.ndim != 2 or X.shape[1] != self.n_features_in_:
            X = check_matrix(X, n_features=self.n_features_in_)
        if len(X) <= _CHUNK:
            return self._mah.outlyingness(self.transform(X))
        out = np.empty(len(X))
        for i in range(0, len(X), _CHUNK):  # cache-sized blocks: the temporaries stay in L2
            out[i:i + _CHUNK] = self._mah.outlyingness(self.transform(X[i:i + _CHUNK]))
        return out

    def outlyingness_small(self, X: np.ndarray) -> np.ndarray:
        return self._mah.outlyingness_small(self.transform(X))

    def outlyingness_one(self, X: np.ndarray) -> float:
        """``outlyingness`` of a single validated row (float64, shape (1, n_features)), as a float."""
        x = X[0] if self._all else X[0, self.columns_]
        if x.sum() != x.sum():  # a missing value: the batch path imputes it
            return float(self.outlyingness(X)[0])
        u = np.arcsinh(x * self._a + self._b)
        u *= self._inv
        u += self._c
        z = self._interpolate(u)
        z += (x - x.clip(self.min_, self.max_)) * self._a  # past the range: linear in x
        z -= self.location_
        w = z @ self._mah.precision_factor_
        return float(w @ w)

    def contributions(self, X: Any) -> np.ndarray:
        """Per-column share of the squared distance in normal scores (numeric columns; others 0)."""
        self._check_fitted()
        X = check_matrix(X, n_features=self.n_features_in_)
        out = np.zeros(X.shape)
        out[:, self.columns_] = self._mah.contributions(self.transform(X))
        return out

    def _check_fitted(self) -> None:
        if not hasattr(self, "_mah"):
            super()._check_fitted()
            raise NotFittedError(f"this {type(self).__name__} has no covariance yet: call fit(X) first")
