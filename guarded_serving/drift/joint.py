r"""A multivariate two-sample test on the window: MMD with random Fourier features, permutation-calibrated.

Per-feature tests cannot see a change of the *joint* distribution whose
marginals stay put (two features whose correlation goes from 0.8 to 0, or
from 0 to 0.8). This test compares the whole rows of the window with the
reference rows.

Statistic: the squared maximum mean discrepancy (MMD) for a Gaussian kernel
on standardised numeric features, approximated with ``n_components`` random
Fourier features :math:`\phi(x) = \sqrt{2/D}\cos(Wx / h + b)` (Rahimi and
Recht, 2007): :math:`T = \lVert \bar\phi(\text{window}) - \bar\phi(\text{reference}) \rVert^2`.
``W`` and ``b`` are drawn once at ``fit``, independently of the data; the
standardisation (mean and standard deviation; missing values at the mean) and
the bandwidth ``h`` (median distance between 200 pooled rows drawn at random)
are computed on the *pooled* rows of each test (complete rows only: a row
with a missing value is left out on both sides, since the window family tests
missing rates on their own), so ``T`` is a function of the
pooled sample and of the split alone, which is what makes the permutation
p-value exact.

Calibration: a permutation test. The window rows and the reference rows are
pooled and ``n_permutations`` random splits of the same sizes give the null
distribution; the p-value ``(1 + #{T_b >= T}) / (B + 1)`` is exact (its
false-alarm probability is at most the level) whenever window and reference
rows are exchangeable, e.g. independent draws of one distribution. With the
default 199 permutations the smallest p-value is 0.005. The permutations are
drawn sequentially and stop at the ``early_stop``-th (default 10) null
statistic at least as large as the observed one, with the p-value ``h / L``
(Besag and Clifford, "Sequential Monte Carlo p-values", Biometrika 1991; also
exact): a window far from the level, the usual case, costs about 20
permutations instead of 199, and a window near or below the level gets all of them.

Effect size: a permutation p-value is calibrated for one window against
one reference *drawn at random*; a deployment tests many windows against the
same reference, and an unlucky reference makes every window look a little
different. As the per-feature tests do with their effect size, the window
family alarms only when the p-value is at most its level **and** the effect,
the largest change of a pairwise Pearson correlation between reference and
window, reaches ``min_effect``. A joint change that leaves every pairwise
correlation nearly unchanged (a purely nonlinear dependence) is tested and
reported but does not alarm.

Cost: with ``n`` pooled rows (at most ``max_rows`` window rows plus
``max_reference`` reference rows), ``d`` features, ``D`` random features and
``B`` permutations: ``n d D`` for the features of all pooled rows (recomputed
each test, since the standardisation and bandwidth are the pooled rows'),
``200^2 d`` for the bandwidth, and one ``(B x n) @ (n x D)`` product
(float32 BLAS) for the permutations. See ``benchmarks/bench_drift.py`` for
the measured cost per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["JointResult", "JointShiftTest"]


@dataclass(frozen=True)
class JointResult:
    """One joint test of one window."""

    n: int
    statistic: float        # squared MMD (random features), window vs reference
    p_value: float          # permutation p-value
    effect: float           # largest change of a pairwise Pearson correlation (0 with one column)
    detail: dict[str, Any]  # that pair, its correlations, and the MMD


class JointShiftTest:
    """Window rows vs reference rows, all numeric features together: MMD with a permutation p-value.

    Parameters
    ----------
    columns : sequence of int, optional
        Feature indices used (default: all).
    n_components : int, default=128
        Random Fourier features ``D``.
    n_permutations : int, default=199
        Permutations ``B``; the p-value is at least ``1 / (B + 1)``.
    max_rows : int, default=2000
        Latest window rows used (bounds the cost).
    max_reference : int, default=2000
        Reference rows kept (a fixed random subsample beyond this).
    feature_names : sequence of str, optional
    early_stop : int, default=10
        Stop permuting at the ``early_stop``-th null statistic at least as large as the
        observed one (Besag-Clifford sequential p-value ``early_stop / L``); 0 runs all ``B``.
        On a window far from the level this costs about ``2 early_stop`` permutations, not ``B``.
    random_state : int, default=0

    Attributes
    ----------
    n_features_in_ : int
    bandwidth_ : float
        Kernel bandwidth of the latest test (median distance between standardised pooled rows).
    permutations_ : int
        Permutations the latest test used.
    n_reference_ : int
    """

    def __init__(self, *, columns: Sequence[int] | None = None, n_components: int = 128,
                 n_permutations: int = 199, max_rows: int = 2000, max_reference: int = 2000,
                 feature_names: Sequence[str] | None = None, early_stop: int = 10,
                 random_state: int = 0) -> None:
        self.columns = columns
        self.n_components = n_components
        self.n_permutations = n_permutations
        self.max_rows = max_rows
        self.max_reference = max_reference
        self.feature_names = feature_names
        self.early_stop = early_stop
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> "JointShiftTest":
        """Standardise, pick the bandwidth and draw the random features from the reference ``X``."""
        for name in ("n_components", "n_permutations", "max_rows", "max_reference"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} is invalid: expected an integer >= 1")
        if not isinstance(self.early_stop, int) or isinstance(self.early_stop, bool) or self.early_stop < 0:
            raise ValueError(f"early_stop={self.early_stop!r} is invalid: expected an integer >= 0 (0: all permutations)")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 4:
            raise ValueError(f"reference must be 2-D with at least 4 rows, got shape {X.shape}")
        d = X.shape[1]
        cols = list(range(d)) if self.columns is None else [int(c) for c in self.columns]
        if not cols or any(c < 0 or c >= d for c in cols):
            raise ValueError(f"columns={self.columns!r} is invalid: expected indices in [0, {d})")
        names = list(self.feature_names) if self.feature_names is not None else [f"x{i}" for i in range(d)]
        self.n_features_in_ = d
        self._cols = np.array(cols)
        self._names = [str(names[c]) for c in cols]
        rng = np.random.default_rng(self.random_state)
        if X.shape[0] > self.max_reference:
            X = X[np.sort(rng.choice(X.shape[0], self.max_reference, replace=False))]
        R = X[:, self._cols]
        complete = ~np.isnan(R).any(axis=1)
        if complete.sum() >= 4:  # missing values are tested by their rate (the window family); compare complete rows
            X, R = X[complete], R[complete]
        self._mu = np.nanmean(R, axis=0)
        sd = np.nanstd(R, axis=0)
        self._sd = np.where(sd > 0, sd, 1.0)
        self._ref = R
        Z = self._standardise(X)
        self.bandwidth_ = _median_distance(Z, rng)
        D = self.n_components
        self._W = rng.normal(size=(len(cols), D))
        self._b = rng.uniform(0, 2 * np.pi, size=D)
        self._ref_corr = _corr(Z)
        self.n_reference_ = len(Z)
        self._rng = np.random.default_rng(self.random_state + 1)
        return self

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        Z = (X[:, self._cols] - self._mu) / self._sd
        return np.where(np.isnan(Z), 0.0, Z)  # type: ignore[no-any-return]

    def _features(self, Z: np.ndarray, h: float) -> np.ndarray:
        return (np.sqrt(2.0 / self.n_components) * np.cos(_small_products(Z, self._W / h) + self._b)).astype(np.float32)  # type: ignore[no-any-return]

    def test(self, W: np.ndarray) -> JointResult:
        """Test the latest ``max_rows`` rows of the window ``W`` against the reference."""
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError("JointShiftTest is not fitted: call fit(reference) first")
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != self.n_features_in_:
            raise ValueError(f"window must have shape (n, {self.n_features_in_}), got {W.shape}")
        W = W[-self.max_rows:]
        W = W[~np.isnan(W[:, self._cols]).any(axis=1)]  # complete rows only (missing rates are tested apart)
        nw, nr = W.shape[0], self.n_reference_
        if nw < 2:
            return JointResult(nw, float("nan"), float("nan"), float("nan"), {})
        Z = self._standardise(W)
        # standardisation and bandwidth from the pooled rows: symmetric in them, so the permutation test is exact
        P = np.concatenate([W[:, self._cols], self._ref], axis=0)
        mu, sd = np.nanmean(P, axis=0), np.nanstd(P, axis=0)
        P = (P - mu) / np.where(sd > 0, sd, 1.0)
        P = np.where(np.isnan(P), 0.0, P)
        h = _median_distance(P, self._rng)
        self.bandwidth_ = h
        pooled = self._features(P, h)
        phi_w = pooled[:nw]
        total = pooled.sum(axis=0, dtype=np.float64)

        def stat(sum_w: np.ndarray) -> np.ndarray:
            diff = sum_w / nw - (total - sum_w) / nr
            return (diff * diff).sum(axis=-1)  # type: ignore[no-any-return]

        t = float(stat(phi_w.sum(axis=0, dtype=np.float64)))
        p, used = self._permutation_p(pooled, nw, t, stat)
        self.permutations_ = used
        detail: dict[str, Any] = {"mmd": round(float(np.sqrt(max(t, 0.0))), 4), "permutations": used}
        effect = 0.0
        if len(self._cols) >= 2:
            c = _corr(Z)
            delta = np.abs(c - self._ref_corr)
            np.fill_diagonal(delta, -1.0)
            i, j = np.unravel_index(int(np.argmax(delta)), delta.shape)
            effect = float(delta[i, j])
            detail.update({"pair": f"{self._names[i]}~{self._names[j]}",
                           "reference_corr": round(float(self._ref_corr[i, j]), 3), "window_corr": round(float(c[i, j]), 3)})
        return JointResult(nw, t, p, effect, detail)

    def _permutation_p(self, pooled: np.ndarray, nw: int, t: float, stat: Any) -> tuple[float, int]:
        """Permutation p-value, sequential (Besag and Clifford, 1991): stop at the ``h``-th null statistic >= ``t``.

        Permutations are drawn in small batches; when the ``h``-th exceedance (``h = early_stop``)
        comes at permutation ``L``, the p-value is ``h / L``, otherwise ``(1 + G) / (B + 1)`` after all
        ``B``. Both are valid p-values (``P(p <= u) <= u`` under exchangeability), and a window far from
        the level costs ``~h / p`` permutations instead of ``B``. Returns (p-value, permutations used).
        """
        B, n = self.n_permutations, pooled.shape[0]
        h = int(self.early_stop)
        base = np.arange(n)
        G, L = 0, 0
        while L < B:
            b = min(16, B - L)
            perm = self._rng.permuted(np.broadcast_to(base, (b, n)), axis=1)
            # the window side's feature sums: an indicator matrix times the features, in products small
            # enough that BLAS stays on this thread (see _small_products)
            M = np.zeros((b, n), dtype=np.float32)
            np.put_along_axis(M, perm[:, :nw], 1.0, axis=1)
            null = stat(_small_products(M, pooled, inner=True).astype(np.float64))
            hits = null >= t
            if h and G + int(hits.sum()) >= h:   # the h-th exceedance is in this batch
                L += int(np.nonzero(np.cumsum(hits) == h - G)[0][0]) + 1
                return h / L, L
            G += int(hits.sum())
            L += b
        return (1.0 + G) / (B + 1.0), B


def _small_products(A: np.ndarray, B: np.ndarray, inner: bool = False) -> np.ndarray:
    """``A @ B`` in blocks small enough that OpenBLAS runs each on the calling thread.

    A background test should not wake the process's BLAS thread pool (it competes with the request
    threads for the cores; on a busy 2-core host that doubled the joint test's CPU time). OpenBLAS
    stays single-threaded below ``m n k`` = 262,144: blocks of rows of ``A`` keep each product under
    it, or with ``inner=True`` (``A`` short and wide) blocks of the inner dimension, summed.
    """
    if inner:
        step = max(1, 200_000 // max(A.shape[0] * B.shape[1], 1))
        if A.shape[1] <= step:
            return A @ B  # type: ignore[no-any-return]
        out = A[:, :step] @ B[:step]
        for i in range(step, A.shape[1], step):
            out += A[:, i:i + step] @ B[i:i + step]
        return out  # type: ignore[no-any-return]
    rows = max(1, 200_000 // max(A.shape[1] * B.shape[1], 1))
    if A.shape[0] <= rows:
        return A @ B  # type: ignore[no-any-return]
    return np.concatenate([A[i:i + rows] @ B for i in range(0, A.shape[0], rows)], axis=0)


def _median_distance(Z: np.ndarray, rng: np.random.Generator, m: int = 200) -> float:
    """Median Euclidean distance between ``m`` rows of ``Z`` drawn at random (1 when it is 0)."""
    sub = Z[rng.choice(len(Z), min(len(Z), m), replace=False)]
    sq = (sub * sub).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * _small_products(sub, sub.T), 0.0)
    med = float(np.sqrt(np.median(d2[np.triu_indices(len(sub), 1)])))
    return med if med > 0 else 1.0


def _corr(Z: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(Z, rowvar=False)
    return np.nan_to_num(np.atleast_2d(c))  # type: ignore[no-any-return]
