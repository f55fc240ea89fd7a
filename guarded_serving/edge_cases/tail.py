"""Per-feature tail score: empirical-CDF tail probabilities combined across features (ECOD-like).

For each numeric feature the detector keeps quantiles of the training values
on a grid of levels (dense in both tails). A value's two-sided tail
probability is ``min(P(X <= x), P(X >= x))`` read off that grid; its
contribution is ``-log`` of it, floored at ``1 / (n + 1)``. A value outside
the training range gets the floor plus ``excess_weight * log1p(excess)``, the excess being how
far outside it is in units of that tail's width (so a unit error x1000 scores far above a value just past the
maximum). A categorical feature contributes ``-log`` of its category's
training frequency (unseen: the floor); a missing value (NaN) ``-log`` of the
feature's training missing rate (infinite where training never had a
missing value there). The outlyingness of a row is the sum.

Lookup table (the score as computed): each numeric feature's range is cut into
``G`` equal-width cells, ``G`` the smallest power of two at which a cell is no wider
than the smallest gap between the feature's distinct grid quantiles (at least 64, at
most ``max_cells``), and each cell holds the exact grid score at its upper edge. A
cell without a grid quantile strictly inside it scores exactly like the grid, and so
does every value of a discrete feature whose distinct values are at least a cell
apart; only a value lying in a cell that a quantile splits, below that quantile,
gets the neighbouring step of the grid score (where ``max_cells`` caps ``G``, as for
heavy-tailed features, more cells are split). Out-of-range and missing values are
computed exactly as described above.

Cost: a value costs a multiply-add, a clip and one table read (no search), done
in cache-sized blocks of rows: a batch runs at millions of rows per second and a
single row costs a handful of small numpy operations.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .base import BaseDetector, categorical_indices, check_matrix

__all__ = ["TailDetector", "DEFAULT_LEVELS"]

_SUM = np.add.reduce


def _default_levels() -> np.ndarray:
    tails = np.array([1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 7.5e-3])
    return np.unique(np.concatenate([np.linspace(0.0, 1.0, 1001), tails, 1.0 - tails]))


DEFAULT_LEVELS = _default_levels()


class TailDetector(BaseDetector):
    """ECOD-like per-feature tail score.

    Parameters
    ----------
    categorical : sequence of int, default=()
        Indices of categorical columns (numeric codes); scored by category frequency.
    levels : ndarray of shape (n_levels,), optional
        Quantile levels kept per feature (default: 1001 uniform plus dense tails).
    excess_weight : float, default=10.0
        Beyond the training range a value adds ``excess_weight * log1p(d)``, ``d``
        the distance in units of that tail's width (min to 10th percentile,
        90th percentile to max; at least 10% of the range).
    max_cells : int, default=65536
        Most cells of a feature's lookup table (see "Lookup table" above).
    threshold : float, default=0.0
        Each feature contributes ``max(c - threshold, 0)``: with ``threshold=log(100)`` only
        values rarer than 1 in 100 (in either tail, or out of range, or rarely missing) count,
        so many mildly unusual features do not add up to noise (the default detector's tail
        part). ``tail_probability`` needs ``threshold=0``.

    Attributes
    ----------
    n_features_in_ : int
    n_samples_fit_ : int
        Rows behind the frequencies (sets the floor ``1 / (n + 1)``).
    min_, max_ : ndarray of shape (n_features,)
        Training range of each feature (NaN-free).
    quantiles_ : ndarray of shape (n_features, n_levels)
        Training quantiles at ``levels_`` (rows of categorical features unused).
    missing_rate_ : ndarray of shape (n_features,)
    categories_ : dict of int -> (values, frequencies)
        For each categorical column, its sorted codes and their training frequencies.
    cells_ : ndarray of shape (n_numeric,)
        Cells of each numeric feature's lookup table.
    """

    def __init__(self, *, categorical: Sequence[int] = (), levels: np.ndarray | None = None,
                 excess_weight: float = 10.0, max_cells: int = 65536, threshold: float = 0.0) -> None:
        self.categorical = tuple(categorical)
        self.threshold = threshold
        self.levels = levels
        self.excess_weight = excess_weight
        self.max_cells = max_cells

    # -- fitting ------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "TailDetector":
        """Learn quantiles, ranges, missing rates and category frequencies from ``X``."""
        X = check_matrix(X)
        n, p = X.shape
        cat = categorical_indices(self.categorical, p)
        levels = DEFAULT_LEVELS if self.levels is None else np.asarray(self.levels, dtype=np.float64)
        missing = np.isnan(X).mean(axis=0) if n else np.zeros(p)
        q, mn, mx = quantile_grid(X, levels)
        cats = {int(j): category_frequencies(X[:, j]) for j in cat}
        return self._set_state(n_samples=n, levels=levels, quantiles=q, minimum=mn, maximum=mx,
                               missing_rate=missing, categories=cats)

    def _set_state(self, *, n_samples: int, levels: np.ndarray, quantiles: np.ndarray, minimum: np.ndarray,
                   maximum: np.ndarray, missing_rate: np.ndarray,
                   categories: dict[int, tuple[np.ndarray, np.ndarray]]) -> "TailDetector":
        p = quantiles.shape[0]
        self.n_features_in_ = p
        self.n_samples_fit_ = int(n_samples)
        self.levels_ = np.asarray(levels, dtype=np.float64)
        self.quantiles_ = np.asarray(quantiles, dtype=np.float64)
        self.min_ = np.asarray(minimum, dtype=np.float64)
        self.max_ = np.asarray(maximum, dtype=np.float64)
        self.missing_rate_ = np.asarray(missing_rate, dtype=np.float64)
        self.categories_ = {int(k): (np.asarray(v, dtype=np.float64), np.asarray(f, dtype=np.float64))
                            for k, (v, f) in categories.items()}
        self._prepare()
        return self

    def _prepare(self) -> None:
        p = self.n_features_in_
        cat = np.array(sorted(self.categories_), dtype=np.intp)
        num = np.setdiff1d(np.arange(p), cat)
        self._cat, self._num = cat, num
        self._all_numeric = cat.size == 0
        self.floor_score_ = float(np.log(self.n_samples_fit_ + 1.0))
        lo, hi = self.min_[num], self.max_[num]
        width = hi - lo
        const = ~(width > 0)
        self.scale_ = np.where(const, np.maximum(np.abs(lo), 1.0), width)
        # beyond the range, distance counts in units of the tail's own width (min..10% / 90%..max)
        i10, i90 = np.searchsorted(self.levels_, [0.1, 0.9])
        qn = self.quantiles_[num]
        floor_w = np.maximum(self.scale_ * 0.1, 1e-12)
        self.lower_width_ = np.maximum(qn[:, i10] - lo, floor_w) if num.size else np.zeros(0)
        self.upper_width_ = np.maximum(hi - qn[:, i90], floor_w) if num.size else np.zeros(0)
        self._t = float(self.threshold)
        floor = 1.0 / (self.n_samples_fit_ + 1.0)
        # a value missing where training never had one is as strange as it gets
        self.missing_score_ = np.where(self.missing_rate_ > 0, -np.log(np.maximum(self.missing_rate_, floor)), np.inf)
        self._build_table(num, lo, hi, const)
        self._cat_scores = {j: -np.log(np.maximum(f, floor)) for j, (_, f) in self.categories_.items()}

    def _build_table(self, num: np.ndarray, lo: np.ndarray, hi: np.ndarray, const: np.ndarray) -> None:
        """The lookup table: per numeric feature ``G`` equal-width cells over its range, NaN sentinels around.

        Feature ``k`` owns table entries ``offset[k] .. offset[k] + G_k``: cell ``c`` covers
        ``u in [c, c + 1)``, ``u = (x - min) * G_k / (max - min)``, and holds the exact grid score at the
        cell's upper edge (cell ``G_k`` is ``x == max``). The entries just below and above hold NaN, so a
        value out of range (or missing) makes its row's sum NaN and sends the row to the full computation.
        """
        levels, floor = self.levels_, 1.0 / (self.n_samples_fit_ + 1.0)
        parts: list[np.ndarray] = [np.array([np.nan])]
        offset = np.zeros(num.size)
        cells = np.zeros(num.size)
        pos = 1
        for k, j in enumerate(num):
            qj = np.clip(self.quantiles_[j], self.min_[j], self.max_[j])
            vals, first = np.unique(qj, return_index=True)
            last = np.searchsorted(qj, vals, side="right") - 1
            lmin, lmax = levels[first], levels[np.clip(last, 0, len(levels) - 1)]
            sc = np.maximum(-np.log(np.maximum(np.minimum(lmax, 1.0 - lmin), floor)) - self._t, 0.0)
            width = hi[k] - lo[k]
            if const[k] or vals.size < 2:
                g = 1
                table = np.full(2, sc[-1])
            else:
                gap = float(np.diff(vals).min())
                g = int(np.clip(2 ** np.ceil(np.log2(width / gap)), 64, self.max_cells))
                edges = lo[k] + width * (np.arange(1, g + 1) / g)
                table = np.append(sc[np.clip(np.searchsorted(vals, edges, side="left") - 1, 0, None)], sc[-1])
            parts += [table, [np.nan]]
            offset[k], cells[k] = pos, g
            pos += g + 2
        self._table = np.concatenate(parts)
        self.cells_ = cells.astype(np.intp)
        # u = x * scale + shift puts feature k's range on [offset, offset + G]; out of range or NaN -> sentinel
        self._scale = np.where(const, 1e9 / self.scale_, cells / np.where(const, 1.0, hi - lo))
        self._shift = offset - lo * self._scale
        self._low = offset - 1.0
        self._high = offset + cells + 1.0
        # per-feature constants as Python floats, for exact scores of single cells (see _exact_cell)
        self._cell_consts = list(zip(lo.tolist(), hi.tolist(), self.lower_width_.tolist(),
                                     self.upper_width_.tolist(), self._scale.tolist(), self._shift.tolist(),
                                     self._low.tolist(), self._high.tolist(),
                                     self.missing_score_[num].tolist()))

    # -- scoring --------------------------------------------------------------------
    _CHUNK = 4096

    def _lookup(self, Xn: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Table scores of numeric values, like ``Xn`` (NaN where out of range or missing)."""
        u = Xn * self._scale
        u += self._shift
        np.fmax(u, self._low, out=u)  # fmax also turns NaN into the low sentinel
        np.minimum(u, self._high, out=u)
        return self._table.take(u.astype(np.intp), out=out)

    def outlyingness(self, X: Any) -> np.ndarray:
        """Sum over features of ``-log`` tail probability (+ range excess). Higher = stranger."""
        self._check_fitted()
        if type(X) is not np.ndarray or X.dtype != np.float64 or X.ndim != 2:
            X = check_matrix(X, n_features=self.n_features_in_)
        elif X.shape[1] != self.n_features_in_:
            check_matrix(X, n_features=self.n_features_in_)
        if not self._all_numeric:
            return self.contributions(X).sum(axis=1)
        n = len(X)
        out = np.empty(n)
        step = self._CHUNK
        for i in range(0, n, step):  # cache-sized blocks: the temporaries stay in L2
            out[i:i + step] = self._lookup(X[i:i + step]).sum(axis=1)
        bad = np.isnan(out)
        if bad.any():  # rows with a value out of range or missing: the full computation
            if np.isinf(X[bad]).any():
                check_matrix(X[bad])
            out[bad] = self.contributions(X[bad]).sum(axis=1)
        return out

    def outlyingness_small(self, X: np.ndarray) -> np.ndarray:
        """``outlyingness`` of a small validated batch: one table pass, then exact scores for
        the cells the table has none for (out of range, missing): one by one in up to 4 rows,
        else through :meth:`contributions` for those rows."""
        if not self._all_numeric:
            return self.outlyingness(X)
        v = self._lookup(X)
        s = v.sum(axis=1)
        total = s.sum()
        if total != total:
            bad = np.flatnonzero(np.isnan(s))
            if len(bad) > 4:  # many rows to fix: vectorised, as the batch path does
                if np.isinf(X[bad]).any():
                    check_matrix(X[bad])
                s[bad] = self.contributions(X[bad]).sum(axis=1)
                return s
            for r in bad.tolist():
                s[r] = self._exact_row(X[r], v[r])
        return s

    def outlyingness_one(self, X: np.ndarray) -> float:
        """``outlyingness`` of a single validated row (float64 array of shape (1, n_features)), as a float."""
        if self._all_numeric:
            v = self._lookup(X[0])
            s = float(_SUM(v))  # v.sum() without numpy's Python-level wrapper: the same reduction
            if s == s:
                return s
            return self._exact_row(X[0], v)
        return float(self.contributions(X).sum())

    def _exact_row(self, x: np.ndarray, v: np.ndarray) -> float:
        """A row's outlyingness from its table scores ``v`` (all-numeric; NaN where the table has
        none), filling those cells exactly as :meth:`contributions` computes them."""
        for j in np.flatnonzero(np.isnan(v)).tolist():
            v[j] = self._exact_cell(j, float(x[j]))
        return float(v.sum())

    def _exact_cell(self, j: int, x: float) -> float:
        """The contribution of value ``x`` of numeric feature ``j`` (see :meth:`contributions`)."""
        lo, hi, lw, uw, scale, shift, low, high, missing = self._cell_consts[j]
        t = self._t
        if x != x:
            return max(missing - t, 0.0)
        if x < lo or x > hi:
            if math.isinf(x):
                raise ValueError("X contains inf")
            excess = (lo - x) / lw if x < lo else (x - hi) / uw
            return max(self.floor_score_ + self.excess_weight * math.log1p(excess) - t, 0.0)
        # in range, rounded onto a sentinel at the very ends of the range: clip onto the table
        return float(self._table[int(min(max(x * scale + shift, low + 1.0), high - 1.0))])

    def contributions(self, X: Any) -> np.ndarray:
        """Per-feature contributions, ndarray of shape (n_samples, n_features)."""
        self._check_fitted()
        X = check_matrix(X, n_features=self.n_features_in_)
        out = np.empty(X.shape, dtype=np.float64)
        num = self._num
        Xn = X if self._all_numeric else X[:, num]
        c = self._lookup(Xn)
        nan = np.isnan(Xn)
        lo, hi = self.min_[num], self.max_[num]
        below = Xn < lo
        above = Xn > hi
        inside = ~(nan | below | above) & np.isnan(c)
        if inside.any():  # in range but rounded onto a sentinel (at the very ends of the range): clip
            u = np.clip(Xn * self._scale + self._shift, self._low + 1.0, self._high - 1.0)
            c = np.where(inside, self._table.take(np.where(nan, self._low + 1.0, u).astype(np.intp)), c)
        excess = np.where(below, (lo - Xn) / self.lower_width_, np.where(above, (Xn - hi) / self.upper_width_, 0.0))
        t = self._t
        c = np.where(below | above, np.maximum(self.floor_score_ + self.excess_weight * np.log1p(excess) - t, 0.0), c)
        c = np.where(nan, np.maximum(self.missing_score_[num] - t, 0.0), c)
        out[:, num] = c
        for j in self._cat:
            vals, _ = self.categories_[int(j)]
            col = X[:, j]
            pos = np.clip(np.searchsorted(vals, col), 0, max(len(vals) - 1, 0))
            seen = (vals[pos] == col) if len(vals) else np.zeros(len(col), bool)
            sc = np.where(seen, self._cat_scores[int(j)][pos] if len(vals) else 0.0, self.floor_score_)
            out[:, j] = np.maximum(np.where(np.isnan(col), self.missing_score_[j], sc) - self._t, 0.0)
        return out

    def tail_probability(self, X: Any) -> np.ndarray:
        """Two-sided tail probability of each value (ndarray like ``X``), for explanations."""
        if self._t:
            raise ValueError(f"tail_probability needs threshold=0 (this detector has threshold={self.threshold!r})")
        c = self.contributions(X)
        return np.exp(-np.minimum(c, self.floor_score_))


def quantile_grid(X: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature quantiles at ``levels`` (NaN ignored) and min/max; all-NaN features get zeros."""
    n, p = X.shape
    q = np.zeros((p, len(levels)))
    mn, mx = np.zeros(p), np.zeros(p)
    for j in range(p):
        col = X[:, j]
        col = col[~np.isnan(col)]
        if col.size:
            col = np.sort(col)
            q[j] = np.quantile(col, levels, method="inverted_cdf")
            mn[j], mx[j] = col[0], col[-1]
    return q, mn, mx


def category_frequencies(col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct codes of ``col`` (NaN ignored) and their frequencies among all rows."""
    ok = col[~np.isnan(col)]
    vals, counts = np.unique(ok, return_counts=True)
    return vals, counts / max(len(col), 1)
