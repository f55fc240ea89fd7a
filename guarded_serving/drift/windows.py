"""Windowed two-sample tests of a window of serving rows against a reference.

Per feature:

- numeric: the two-sample Kolmogorov-Smirnov test (exact statistic, asymptotic
  p-value with Stephens' small-sample correction), with the Wasserstein-1
  distance divided by the reference standard deviation as effect size;
- categorical: the chi-squared test of homogeneity on the 2 x k table of
  reference and window counts. Categories never seen in the reference are
  pooled in one "unseen" column (a count of 0 on the reference side is fine
  for a homogeneity test; columns empty on both sides are dropped), so an
  unseen value is evidence, never a crash. Effect size: total variation distance;

and the population stability index (PSI, reference deciles for numeric
features) beside each p-value. The p-values are adjusted across features with
Benjamini-Hochberg (false discovery rate ``alpha``). A feature *drifts* only
when all three hold: BH-adjusted p-value <= ``alpha``, effect size >=
``min_effect``, and window size >= ``min_samples``. So a huge window does not
alarm on a negligible shift, and a tiny window never alarms.

Cost: one sort of the window per feature and four binary searches, done for
all features at once on a flattened, offset copy; about 30-50 ms for
100 features x 10,000 rows (see ``benchmarks/bench_drift.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import special, stats

__all__ = ["FeatureResult", "WindowReport", "WindowTest", "benjamini_hochberg"]

_PSI_EPS = 1e-4
_N_QUANTILES = 256


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


@dataclass(frozen=True)
class FeatureResult:
    """One feature's test in one window."""

    feature: str
    kind: str  # "numeric" | "categorical"
    n: int
    statistic: float
    p_value: float
    q_value: float
    psi: float
    effect: float  # numeric: Wasserstein-1 / reference std; categorical: total variation
    drifted: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "n": self.n, "statistic": _r(self.statistic),
                "p_value": _r(self.p_value), "q_value": _r(self.q_value), "psi": _r(self.psi),
                "effect": _r(self.effect), "drifted": self.drifted, **self.detail}


@dataclass(frozen=True)
class WindowReport:
    """The result of one window test."""

    n: int
    alpha: float
    min_effect: float
    min_samples: int
    features: tuple[FeatureResult, ...]

    @property
    def judged(self) -> bool:
        """Whether the window was large enough to alarm at all."""
        return self.n >= self.min_samples

    @property
    def drifted(self) -> tuple[FeatureResult, ...]:
        return tuple(f for f in self.features if f.drifted)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        ranked = sorted(self.features, key=lambda f: (not f.drifted, f.q_value if f.q_value == f.q_value else 2.0))
        return {"n": self.n, "judged": self.judged, "alpha": self.alpha, "min_effect": self.min_effect,
                "drifted": [f.feature for f in self.drifted],
                "features": [f.to_dict() for f in ranked[:top]]}


class WindowTest:
    """Test windows of rows against a reference sample, feature by feature.

    Parameters
    ----------
    alpha : float, default=0.01
        False discovery rate across features (Benjamini-Hochberg).
    min_effect : float, default=0.15
        Smallest effect that may alarm: Wasserstein-1 in reference standard
        deviations (numeric) or total variation distance (categorical).
    min_samples : int, default=200
        Windows with fewer rows are reported but never alarm.
    categorical : sequence of int, default=()
        Indices of categorical features (values are category codes).
    feature_names : sequence of str, optional
        Names for reports; default ``x0, x1, ...``.
    max_reference : int, default=2000
        Reference rows kept (a fixed random subsample beyond this); bounds the cost.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : tuple of str
    n_reference_ : int
    """

    def __init__(self, *, alpha: float = 0.01, min_effect: float = 0.15, min_samples: int = 200,
                 categorical: Sequence[int] = (), feature_names: Sequence[str] | None = None,
                 max_reference: int = 2000) -> None:
        self.alpha = alpha
        self.min_effect = min_effect
        self.min_samples = min_samples
        self.categorical = categorical
        self.feature_names = feature_names
        self.max_reference = max_reference

    # -- fit ------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: Any = None) -> "WindowTest":
        """Learn the reference distribution of each column of ``X``."""
        if not (0 < float(self.alpha) < 1):
            raise ValueError(f"alpha={self.alpha!r} is invalid: expected a number in (0, 1)")
        if not (float(self.min_effect) >= 0):
            raise ValueError(f"min_effect={self.min_effect!r} is invalid: expected a number >= 0")
        if not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise ValueError(f"min_samples={self.min_samples!r} is invalid: expected an integer >= 1")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"reference must be 2-D with at least 2 rows, got shape {X.shape}")
        if np.isinf(X).any():
            raise ValueError("reference contains inf: expected finite values (NaN marks a missing value)")
        d = X.shape[1]
        cat = sorted({int(i) for i in self.categorical})
        if any(i < 0 or i >= d for i in cat):
            raise ValueError(f"categorical={list(self.categorical)} is invalid: indices must be in [0, {d})")
        names = list(self.feature_names) if self.feature_names is not None else [f"x{i}" for i in range(d)]
        if len(names) != d:
            raise ValueError(f"feature_names has {len(names)} names for {d} features")
        self.n_features_in_ = d
        self.feature_names_in_ = tuple(str(n) for n in names)
        self.n_reference_ = X.shape[0]
        self.categorical_ = np.array(cat, dtype=int)
        self.numeric_ = np.array([i for i in range(d) if i not in set(cat)], dtype=int)

        # numeric: per column, the sorted non-missing reference values (NaN = missing, excluded)
        Xn = X[:, self.numeric_]
        k = len(self.numeric_)
        if k and X.shape[0] > self.max_reference:
            keep = np.random.default_rng(0).choice(X.shape[0], self.max_reference, replace=False)
            Xn = Xn[np.sort(keep)]
        self._num_std = np.nanstd(Xn, axis=0) if k else np.zeros(0)
        lo = np.nanmin(Xn, axis=0) if k else np.zeros(0)
        hi = np.nanmax(Xn, axis=0) if k else np.zeros(0)
        self._lo = np.nan_to_num(lo)
        self._scale = np.where(hi > lo, hi - lo, 1.0)
        self._off = np.arange(k, dtype=float) * 5.0  # column j lives in [5j-1, 5j+2]; NaN goes to 5j+3
        ref_sorted = np.sort(Xn.T, axis=1) if k else np.zeros((0, 0))  # NaN last
        valid = ~np.isnan(ref_sorted)
        self._ref_n = valid.sum(axis=1)
        if k and (self._ref_n == 0).any():
            bad = [names[self.numeric_[j]] for j in np.nonzero(self._ref_n == 0)[0]]
            raise ValueError(f"reference has no values (all NaN) for features {bad}")
        R = self._normalise(ref_sorted.T).T if k else np.zeros((0, 0))
        self._ref_flat = R[valid]  # globally sorted (row-major, NaN dropped)
        self._ref_col = np.nonzero(valid)[0]
        self._inv_scale = 1.0 / self._scale
        # reference ECDF at each value (right limit) and just below it (left limit)
        G, Gprev = [], []
        for j in range(k):
            col = ref_sorted[j, valid[j]]
            G.append(np.searchsorted(col, col, "right") / len(col))
            Gprev.append(np.searchsorted(col, col, "left") / len(col))
        self._ref_G = np.concatenate(G) if k else np.zeros(0)
        self._ref_Gprev = np.concatenate(Gprev) if k else np.zeros(0)
        self._ref_start = np.concatenate([[0], np.cumsum(self._ref_n)[:-1]]).astype(int) if k else np.zeros(0, int)
        levels = (np.arange(_N_QUANTILES) + 0.5) / _N_QUANTILES
        self._ref_q = np.nanquantile(Xn, levels, axis=0).T if k else np.zeros((0, _N_QUANTILES))
        deciles = np.nanquantile(Xn, np.linspace(0.1, 0.9, 9), axis=0).T if k else np.zeros((0, 9))
        self._psi_edges = self._normalise(deciles.T).T if k else deciles  # (k, 9), normalised
        self._psi_ref = np.stack([_bin_props(R[j, valid[j]], self._psi_edges[j]) for j in range(k)]) if k \
            else np.zeros((0, 10))

        # categorical: reference counts per seen category
        self._cats: list[np.ndarray] = []
        self._cat_counts: list[np.ndarray] = []
        for i in cat:
            col = X[:, i]
            col = col[~np.isnan(col)]
            vals, counts = np.unique(col, return_counts=True)
            self._cats.append(vals)
            self._cat_counts.append(counts.astype(float))
        return self

    def _normalise(self, A: np.ndarray) -> np.ndarray:
        """Map each numeric column to [-1, 2] and shift column j by 5j (rows x k)."""
        Z = np.clip((A - self._lo) / self._scale, -1.0, 2.0)
        return Z + self._off

    # -- test -----------------------------------------------------------------------
    def test(self, W: np.ndarray) -> WindowReport:
        """Test the window ``W`` (rows x features) against the reference."""
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError("WindowTest is not fitted: call fit(reference) first")
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != self.n_features_in_:
            raise ValueError(f"window must have shape (n, {self.n_features_in_}), got {W.shape}")
        n = W.shape[0]
        names = self.feature_names_in_
        rows: dict[int, tuple] = {}
        if n >= 1 and len(self.numeric_):
            D, p, w1, psi, nn = self._numeric(W[:, self.numeric_])
            for j, i in enumerate(self.numeric_):
                rows[i] = ("numeric", int(nn[j]), D[j], p[j], psi[j], w1[j], {})
        elif len(self.numeric_):
            for i in self.numeric_:
                rows[i] = ("numeric", n, np.nan, np.nan, np.nan, np.nan, {})
        for j, i in enumerate(self.categorical_):
            rows[i] = ("categorical", *self._categorical(W[:, i], j))
        order = sorted(rows)
        pvals = np.array([rows[i][3] for i in order], dtype=float)
        qvals = benjamini_hochberg(pvals)
        judged = n >= self.min_samples
        out = []
        for k, i in enumerate(order):
            kind, nn_i, stat, p_i, psi_i, eff, detail = rows[i]
            q = qvals[k]
            drifted = bool(judged and q == q and q <= self.alpha and eff == eff and eff >= self.min_effect)
            out.append(FeatureResult(names[i], kind, int(nn_i), float(stat), float(p_i), float(q),
                                     float(psi_i), float(eff), drifted, detail))
        return WindowReport(n, float(self.alpha), float(self.min_effect), int(self.min_samples), tuple(out))

    def _numeric(self, Wn: np.ndarray) -> tuple[np.ndarray, ...]:
        """KS, Wasserstein-1 and PSI for all numeric columns at once.

        The window is sorted per column, normalised and offset so that the
        flattened matrix is globally sorted; each reference value is located
        in it by binary search (one per side). Between two consecutive
        reference values the reference ECDF ``G`` is flat and the window ECDF
        ``F`` rises, so the exact KS statistic is the largest of
        ``G(r) - F(r)`` and ``F(r-) - G(r_prev)`` over reference values ``r``;
        both terms come from those two searches and ranks precomputed at fit.
        """
        k, n = Wn.shape[1], Wn.shape[0]
        S = Wn.T.copy()
        S.sort(axis=1)  # NaN last
        m = np.full(k, n)
        has_nan = np.isnan(S[:, -1])
        if has_nan.any():
            m[has_nan] = (~np.isnan(S[has_nan])).sum(axis=1)
        Z = S - self._lo[:, None]
        Z *= self._inv_scale[:, None]
        np.clip(Z, -1.0, 2.0, out=Z)
        Z += self._off[:, None]
        if has_nan.any():
            Z[np.isnan(Z)] = np.broadcast_to(self._off[:, None] + 3.0, Z.shape)[np.isnan(Z)]
        flat = Z.ravel()
        base = self._ref_col * n
        below = np.searchsorted(flat, self._ref_flat, "left") - base   # window values < r
        upto = np.searchsorted(flat, self._ref_flat, "right") - base   # window values <= r
        mcol = np.maximum(m, 1).astype(float)[self._ref_col]
        gap = np.maximum(self._ref_G - upto / mcol, below / mcol - self._ref_Gprev)
        D = np.maximum.reduceat(gap, self._ref_start) if gap.size else np.zeros(k)
        en = m * self._ref_n / np.maximum(m + self._ref_n, 1)
        sq = np.sqrt(np.maximum(en, 1e-12))
        p = np.where(m >= 1, np.clip(special.kolmogorov((sq + 0.12 + 0.11 / sq) * D), 0.0, 1.0), np.nan)
        # Wasserstein-1 from quantile functions, in reference standard deviations
        levels = (np.arange(_N_QUANTILES) + 0.5) / _N_QUANTILES
        qi = np.minimum((levels[None, :] * m[:, None]).astype(int), np.maximum(m - 1, 0)[:, None])
        wq = np.take_along_axis(S, qi, axis=1)
        w1 = np.abs(wq - self._ref_q).mean(axis=1) / np.where(self._num_std > 0, self._num_std, 1.0)
        w1 = np.where(m >= 1, w1, np.nan)
        # PSI on reference deciles: window counts below each edge
        under = np.searchsorted(flat, self._psi_edges.ravel(), "left").reshape(k, 9) - (np.arange(k) * n)[:, None]
        under = np.minimum(under, m[:, None])
        counts = np.diff(np.concatenate([np.zeros((k, 1)), under, m[:, None]], axis=1), axis=1)
        psi = _psi_rows(self._psi_ref, counts / np.maximum(m, 1)[:, None])
        psi = np.where(m >= 1, psi, np.nan)
        return D, p, w1, psi, m

    def _categorical(self, col: np.ndarray, j: int) -> tuple:
        col = col[~np.isnan(col)]
        cats, ref_counts = self._cats[j], self._cat_counts[j]
        vals, counts = np.unique(col, return_counts=True)
        pos = np.searchsorted(cats, vals)
        pos_c = np.minimum(pos, len(cats) - 1)
        seen = (pos < len(cats)) & (cats[pos_c] == vals) if len(cats) else np.zeros(len(vals), bool)
        win = np.zeros(len(cats) + 1)
        np.add.at(win, pos_c[seen], counts[seen])
        unseen = float(counts[~seen].sum())
        win[-1] = unseen
        ref = np.append(ref_counts, 0.0)
        n = int(win.sum())
        detail: dict[str, Any] = {"unseen": int(unseen)} if unseen else {}
        if n == 0:
            return 0, np.nan, np.nan, np.nan, np.nan, detail
        table = np.stack([ref, win])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return n, 0.0, 1.0, 0.0, 0.0, detail
        tot = table.sum()
        exp = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / tot
        chi2 = float(((table - exp) ** 2 / exp).sum())
        p = float(stats.chi2.sf(chi2, table.shape[1] - 1))
        pr, pw = ref / ref.sum(), win / n
        tv = 0.5 * float(np.abs(pr - pw).sum())
        return n, chi2, p, _psi(pr, pw), tv, detail


def _bin_props(col: np.ndarray, edges: np.ndarray) -> np.ndarray:
    col = col[~np.isnan(col)]
    if col.size == 0:
        return np.full(len(edges) + 1, np.nan)
    counts = np.bincount(np.searchsorted(edges, col, "right"), minlength=len(edges) + 1)
    return counts / col.size


def _psi_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, _PSI_EPS, None)
    q = np.clip(q, _PSI_EPS, None)
    return ((q - p) * np.log(q / p)).sum(axis=1)  # type: ignore[no-any-return]


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.clip(p, _PSI_EPS, None)
    q = np.clip(q, _PSI_EPS, None)
    return float(((q - p) * np.log(q / p)).sum())


def _r(x: float) -> float | None:
    if x != x:
        return None
    return float(f"{x:.4g}")
