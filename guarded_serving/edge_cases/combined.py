"""The default detector: tail + Mahalanobis (optionally kNN or the copula distance), combined by their tail probabilities.

Each part scores a row (higher = stranger). The parts do not share a scale, and a scale
learned on the fitting rows' own scores misleads: the thresholded tail part is zero on
almost every fitting row but not on held-out rows (a value just outside a small training
range), so adding or maxing standardised scores let a few clean calibration rows set the
threshold. Ranking each part among the calibration rows (the previous rule) is balanced
but coarse: with 250 calibration rows a part's rank saturates at 1/251, so at 1% only two
ranks are left to share.

Instead every part's score becomes a **continuous tail probability under a null fitted on
the fitting rows alone**: the part is cross-fitted (``NULL_FOLDS`` folds; each fold's rows
scored by the part fitted on the other rows, so the null sees held-out behaviour such as a
value just outside the range), and ``e_k(s) = -log P_null(S_k >= s)`` is read off the
empirical survival of those out-of-fold scores, log-linearly interpolated between them and,
beyond the largest, extended by an exponential tail (mean excess of the top ``NULL_TAIL``
scores): rows far beyond every fitting row get ever larger evidence, no saturation.

The combined outlyingness is ``max_k e_k`` (a min-p over the parts). It is a fixed function
of the row, learned without the calibration rows, so the usual split-conformal p-value
against the calibration rows' combined outlyingness is exact: ``P(p <= alpha) <= alpha`` on
in-distribution rows, whatever the parts and however they depend on each other (also for a
user's combination such as ``"tail+mahalanobis+knn"``). How the budget ``alpha`` is shared
among the parts follows from the calibration rows themselves; a row found by one part
alone is flagged at about ``alpha / k`` of that part when the parts are independent.

Cost: the parts' scores, then per part one binary search into its null's knots and a
linear interpolation (a single row: Python ``bisect`` on a list).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import native
from .base import BaseDetector, check_matrix
from .copula import CopulaDetector
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .tail import TailDetector

__all__ = ["NULL_FOLDS", "PARTS", "CombinedDetector", "NullTail", "cross_fitted_scores", "parse_parts", "part_nulls"]

PARTS = ("tail", "mahalanobis", "knn", "copula")
TAIL_THRESHOLD = float(np.log(100.0))
#: Folds of the cross-fit behind each part's null; most rows scored out of fold, rows per refit.
NULL_FOLDS = 5
NULL_ROWS = 5000
NULL_FIT_ROWS = 20000
#: Exceedances behind the exponential tail past the largest null score; most knots kept.
NULL_TAIL = 10
NULL_KNN_ROWS = 1000
NULL_KNOTS = 2048
_PY_ROWS = 16


class NullTail:
    """``-log`` of a part's tail probability under its null (out-of-fold scores of fitting rows).

    Parameters
    ----------
    knots : ndarray of shape (2, n_knots)
        Increasing distinct null scores and ``log P(S >= score)`` at each.
    beta : float
        Scale of the exponential tail past the largest knot.
    """

    def __init__(self, knots: Any, beta: float) -> None:
        knots = np.asarray(knots, dtype=np.float64)
        if knots.ndim != 2 or knots.shape[0] != 2 or knots.shape[1] < 1 or not np.isfinite(knots).all() \
                or not beta > 0:
            raise ValueError("null knots must be a finite (2, n) array and beta positive")
        self.x, self.lp = knots[0].copy(), knots[1].copy()
        self.beta = float(beta)
        # segment j = #{knots <= s}: below the first knot no evidence; between knots j-1 and j the
        # log-linear interpolation; past the last the exponential tail (slope -1/beta)
        slope = np.diff(self.lp) / np.diff(self.x) if len(self.x) > 1 else np.zeros(0)
        self._bx = np.r_[self.x[0], self.x]
        self._blp = np.r_[0.0, self.lp]
        self._bsl = np.r_[0.0, slope, -1.0 / self.beta]
        self._x, self._bxl, self._blpl, self._bsll = (self.x.tolist(), self._bx.tolist(), self._blp.tolist(),
                                                      self._bsl.tolist())

    @classmethod
    def from_scores(cls, scores: Any, *, tail: int = NULL_TAIL, max_knots: int = NULL_KNOTS) -> NullTail:
        s = np.asarray(scores, dtype=np.float64).ravel()
        m = len(s)
        fin = np.sort(s[np.isfinite(s)])
        if not len(fin):
            return cls(np.zeros((2, 1)), 1.0)
        v, first = np.unique(fin, return_index=True)
        ge = m - first  # rows at or above each distinct score (infinite scores count above all)
        lp = np.log(ge / (m + 1.0))
        if len(v) > max_knots:  # every top knot, the rest evenly
            half = max_knots // 2
            keep = np.unique(np.r_[np.linspace(0, len(v) - half - 1, half).astype(np.intp),
                                   np.arange(len(v) - half, len(v))])
            v, lp = v[keep], lp[keep]
        k = max(min(tail, len(fin) - 1), 1)
        beta = float((fin[-k:] - fin[-k - 1]).mean()) if len(fin) > 1 else 0.0
        if not beta > 0:
            beta = float(np.ptp(fin)) / len(fin) if np.ptp(fin) > 0 else 1.0
        return cls(np.vstack([v, lp]), beta)

    def knots(self) -> np.ndarray:
        return np.vstack([self.x, self.lp])

    def evidence(self, s: np.ndarray) -> np.ndarray:
        """``-log P_null(S >= s)`` of each score (0 below every null score; ``inf`` for ``inf``)."""
        s = np.asarray(s, dtype=np.float64)
        if s.ndim == 1 and len(s) <= _PY_ROWS:  # a few rows: Python floats beat numpy's per-call cost
            return np.array([self.evidence_one(v) for v in s.tolist()])
        j = np.searchsorted(self.x, s, side="right")
        d = s - self._bx[j]
        d *= self._bsl[j]
        d += self._blp[j]
        return np.negative(d, out=d)

    def evidence_one(self, s: float) -> float:
        """``evidence`` of one score (the same arithmetic, in Python floats)."""
        j = bisect_right(self._x, s)
        return -((s - self._bxl[j]) * self._bsll[j] + self._blpl[j])


def cross_fitted_scores(X: np.ndarray, fit: Callable[[np.ndarray], list[BaseDetector]], *, folds: int = NULL_FOLDS,
                        max_rows: int = NULL_ROWS, max_fit_rows: int = NULL_FIT_ROWS, random_state: int = 0
                        ) -> np.ndarray:
    """Out-of-fold part scores of (at most ``max_rows``) rows of ``X``: each fold scored by the
    parts ``fit`` fits on the other rows (at most ``max_fit_rows`` of them). Shape (m, n_parts)."""
    rng = np.random.default_rng(random_state)
    n = len(X)
    idx = rng.permutation(n)
    pool = idx[:max(max_rows, max_fit_rows)]
    scored = pool[:max_rows]
    folds = max(2, min(folds, len(scored)))
    out: list[np.ndarray] = []
    for f in range(folds):
        te = scored[f::folds]
        tr = np.setdiff1d(pool, te)[:max_fit_rows]
        if len(tr) < 2 or not len(te):
            continue
        dets = fit(X[tr])
        out.append(np.column_stack([d.outlyingness(X[te]) for d in dets]))
    if not out:  # too few rows to hold any out: an empty null (no evidence below the first score)
        return np.empty((0, len(fit(X))))
    return np.vstack(out)


def parse_parts(name: str) -> tuple[str, ...] | None:
    """``"tail+mahalanobis+knn"`` -> its parts; ``"combined"`` -> the default pair; else None."""
    if name == "combined":
        return ("tail", "mahalanobis")
    if "+" not in name:
        return None
    parts = tuple(p.strip() for p in name.split("+"))
    if not parts or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts):
        return None
    return parts


def part_nulls(X: np.ndarray, detectors: dict[str, BaseDetector],
               fit: Callable[[np.ndarray, Sequence[str]], list[BaseDetector]], *, random_state: int = 0
               ) -> dict[str, NullTail]:
    """Each part's null from the fitting rows ``X``: out-of-fold scores of the parts, refitted by
    ``fit(rows, names)`` on the other folds, except kNN, whose null is the leave-one-out score of
    ``NULL_KNN_ROWS`` of its fitted reference rows (a query costs more than a refit)."""
    names = list(detectors)
    folded = [n for n in names if n != "knn"]
    out: dict[str, NullTail] = {}
    if folded:
        null = cross_fitted_scores(X, lambda A: fit(A, folded), random_state=random_state)
        out.update({n: NullTail.from_scores(null[:, k]) for k, n in enumerate(folded)})
    if "knn" in detectors:
        out["knn"] = NullTail.from_scores(detectors["knn"].train_outlyingness(NULL_KNN_ROWS))  # type: ignore[attr-defined]
    return {n: out[n] for n in names}


class CombinedDetector(BaseDetector):
    """Largest null evidence over the parts (see the module docstring).

    Parameters
    ----------
    parts : sequence of {"tail", "mahalanobis", "knn", "copula"}, default=("tail", "mahalanobis")
    categorical : sequence of int, default=()
    n_neighbors : int, default=5
        For the kNN part.
    tail_threshold : float, default=log(100)
        ``threshold`` of the tail part.
    calibration_fraction : float, default=0.2
        Share of ``fit``'s rows held out to calibrate when ``fit`` gets no ``calibration`` rows.
    random_state : int, default=0
        Seeds the calibration split and the null's folds.

    Attributes
    ----------
    detectors_ : dict of str -> fitted detector
    nulls_ : dict of str -> NullTail
        Each part's null (out-of-fold scores of the fitting rows).
    part_calibration_ : ndarray of shape (n_calibration, n_parts)
        Each part's score on each calibration row.
    calibration_scores_ : ndarray of shape (n_calibration,)
        The combined outlyingness of each calibration row (what the conformal p-values compare with).
    """

    def __init__(self, *, parts: Sequence[str] = ("tail", "mahalanobis"), categorical: Sequence[int] = (),
                 n_neighbors: int = 5, tail_threshold: float = TAIL_THRESHOLD, calibration_fraction: float = 0.2,
                 random_state: int = 0) -> None:
        self.parts = tuple(parts)
        self.categorical = tuple(categorical)
        self.n_neighbors = n_neighbors
        self.tail_threshold = tail_threshold
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    def fit_parts(self, X: np.ndarray, names: Sequence[str] | None = None) -> list[BaseDetector]:
        """The parts ``names`` (default: ``parts``), fitted on ``X``, in that order."""
        dets: list[BaseDetector] = []
        for name in self.parts if names is None else names:
            if name == "tail":
                dets.append(TailDetector(categorical=self.categorical, threshold=self.tail_threshold).fit(X))
            elif name == "mahalanobis":
                dets.append(MahalanobisDetector(categorical=self.categorical).fit(X))
            elif name == "copula":
                dets.append(CopulaDetector(categorical=self.categorical).fit(X))
            else:
                dets.append(KNNDetector(categorical=self.categorical, n_neighbors=self.n_neighbors).fit(X))
        return dets

    def fit(self, X: Any, y: Any = None, *, calibration: Any = None) -> CombinedDetector:
        """Fit every part and its null on ``X`` and calibrate on ``calibration`` (held-out rows;
        default: a random ``calibration_fraction`` of ``X``, the parts then fit on the rest)."""
        bad = [p for p in self.parts if p not in PARTS]
        if bad or not self.parts or len(set(self.parts)) != len(self.parts):
            raise ValueError(f"parts={self.parts!r} is invalid: expected a non-empty subset of {PARTS}")
        X = check_matrix(X)
        if calibration is None:
            if not 0 < self.calibration_fraction < 1:
                raise ValueError(f"calibration_fraction={self.calibration_fraction!r} is invalid: expected a "
                                 "fraction in (0, 1)")
            rng = np.random.default_rng(self.random_state)
            to_cal = rng.random(len(X)) < self.calibration_fraction
            X, cal = X[~to_cal], X[to_cal]
        else:
            cal = check_matrix(calibration, n_features=X.shape[1], what="calibration")
        if len(X) < 4 or len(cal) < 1:
            raise ValueError(f"too few rows: {len(X)} to fit (need at least 4) and {len(cal)} to calibrate")
        dets = dict(zip(self.parts, self.fit_parts(X)))
        nulls = part_nulls(X, dets, self.fit_parts, random_state=self.random_state)
        return self._set_state(dets, np.column_stack([dets[n].outlyingness(cal) for n in self.parts]), nulls)

    @classmethod
    def from_parts(cls, detectors: dict[str, BaseDetector], part_calibration: Any, nulls: dict[str, NullTail],
                   **params: Any) -> CombinedDetector:
        """Rebuild a fitted combination from fitted parts, their nulls and their scores on the
        calibration rows (ndarray of shape (n_calibration, n_parts), columns in the order of ``detectors``)."""
        self = cls(parts=tuple(detectors), **params)
        return self._set_state(dict(detectors), np.asarray(part_calibration, dtype=np.float64), dict(nulls))

    def _set_state(self, detectors: dict[str, BaseDetector], part_calibration: np.ndarray,
                   nulls: dict[str, NullTail]) -> CombinedDetector:
        self.detectors_ = {n: detectors[n] for n in self.parts}
        self.nulls_ = {n: nulls[n] for n in self.parts}
        self.n_features_in_ = next(iter(self.detectors_.values())).n_features_in_
        cal = part_calibration.reshape(len(part_calibration), len(self.parts))
        if not len(cal) or not np.isfinite(cal).all():
            raise ValueError("part calibration scores must be a non-empty matrix of finite numbers")
        self.part_calibration_ = cal
        self._sorted = [np.sort(cal[:, k]) for k in range(len(self.parts))]
        self._n = len(cal)
        self._nulls = list(self.nulls_.values())
        self._ev_one = [nl.evidence_one for nl in self._nulls]
        self.calibration_scores_ = self.evidence(cal).max(axis=1)
        self._one = [d.outlyingness_one for d in self.detectors_.values()]
        self._small = [d.outlyingness_small for d in self.detectors_.values()]
        self._fused = _fuse(self.detectors_) if self.parts == ("tail", "mahalanobis") else None
        self._set_offset(self.calibration_scores_)
        return self

    # -- scoring ----------------------------------------------------------------------------------
    def evidence(self, S: np.ndarray) -> np.ndarray:
        """Each part's null evidence ``e_k = -log P_null(S_k >= s)`` (module docstring) from raw part
        scores ``S`` of shape (n_rows, n_parts)."""
        S = np.asarray(S, dtype=np.float64).reshape(-1, len(self.parts))
        return np.column_stack([nl.evidence(S[:, k]) for k, nl in enumerate(self._nulls)])

    def _best(self, scores: list[np.ndarray]) -> np.ndarray:
        """``max_k e_k`` from each part's raw scores (a list of 1-D arrays)."""
        out = self._nulls[0].evidence(scores[0])
        for k in range(1, len(scores)):
            np.maximum(out, self._nulls[k].evidence(scores[k]), out=out)
        return out

    def part_scores(self, X: Any) -> np.ndarray:
        """Raw part scores, ndarray of shape (n_rows, n_parts)."""
        self._check_fitted()
        X = check_matrix(X, n_features=self.n_features_in_)
        return np.column_stack([d.outlyingness(X) for d in self.detectors_.values()])

    def part_p_values(self, X: Any) -> np.ndarray:
        """Each part's own conformal p-value against its calibration scores, shape (n_rows, n_parts)."""
        S = self.part_scores(X)
        n = self._n
        return np.column_stack([(n + 1.0 - np.searchsorted(self._sorted[k], S[:, k], side="left")) / (n + 1.0)
                                for k in range(len(self.parts))])

    def outlyingness(self, X: Any) -> np.ndarray:
        """Largest null evidence over the parts. Higher = stranger."""
        self._check_fitted()
        if type(X) is not np.ndarray or X.dtype != np.float64 or X.ndim != 2:
            X = check_matrix(X, n_features=self.n_features_in_)
        return self._best([d.outlyingness(X) for d in self.detectors_.values()])

    def outlyingness_one(self, X: np.ndarray) -> float:
        """``outlyingness`` of a single validated row (float64, shape (1, n_features)), as a float."""
        best = -float("inf")
        for f, ev in zip(self._one, self._ev_one):
            best = max(best, ev(f(X)))
        return best

    def one_row_kernel(self, calibration_scores: np.ndarray) -> Callable[[np.ndarray], float] | None:
        """The compiled one-row verdict (:mod:`guarded_serving.native`) of the default pair on
        all-numeric columns: ``kernel(x)`` is the conformal p-value of row ``x`` (float64, shape
        (1, n_features)) against ``calibration_scores`` (sorted combined outlyingness), or -1.0 when
        the row needs the exact path (a value out of the tail table's range, or missing). None when
        the kernels are not built, the detector is another combination, or rows are wider than
        ``MAX_FEATURES`` (128)."""
        if native.kernels is None or self._fused is None or self.n_features_in_ > native.kernels.MAX_FEATURES:
            return None  # wider rows: the Mahalanobis product is BLAS's to do
        t_scale, t_shift, t_low, t_high, table, factor, _ = self._fused
        n = self.n_features_in_
        t_null, m_null = self._nulls
        # the one-row path's Mahalanobis form, (x - location) @ factor (the fused batch path shifts after)
        arrays = [t_scale, t_shift, np.broadcast_to(t_low, (n,)), np.broadcast_to(t_high, (n,)), table,
                  self.detectors_["mahalanobis"].location_, factor, t_null.x, t_null._bx, t_null._blp,
                  t_null._bsl, m_null.x, m_null._bx, m_null._blp, m_null._bsl, calibration_scores]
        try:
            return native.kernels.EdgeKernel([np.ascontiguousarray(a, dtype=np.float64) for a in arrays])
        except (TypeError, ValueError):  # an unexpected layout: the NumPy path serves
            return None

    def outlyingness_small(self, X: np.ndarray) -> np.ndarray:
        """``outlyingness`` of a small validated batch (float64, 2-D): the default pair's raw scores
        fused (:func:`_fuse`), rows the tail table cannot score (a value out of range or missing)
        scored again by the tail's small-batch path."""
        fused = self._fused
        if fused is None:
            return self._best([f(X) for f in self._small])
        t_scale, t_shift, t_low, t_high, table, factor, shift = fused
        u = X * t_scale
        u += t_shift
        np.fmax(u, t_low, out=u)
        np.minimum(u, t_high, out=u)
        s = table.take(u.astype(np.intp)).sum(axis=1)
        z = X @ factor
        z -= shift
        d = np.einsum("ij,ij->i", z, z)
        if s.sum() != s.sum() or d.sum() != d.sum():  # a value out of range or missing
            tail, mah = self.detectors_["tail"], self.detectors_["mahalanobis"]
            bad = np.flatnonzero(np.isnan(s))
            if len(bad):
                s[bad] = tail.outlyingness_small(X[bad])
            if np.isnan(d).any():
                d = mah.outlyingness_small(X)
        return self._best([s, d])


def _fuse(detectors: dict[str, BaseDetector]) -> tuple | None:
    """Constants of the fused small-batch path for an all-numeric tail + Mahalanobis pair, else None."""
    tail, mah = detectors["tail"], detectors["mahalanobis"]
    if not (isinstance(tail, TailDetector) and isinstance(mah, MahalanobisDetector)
            and tail._all_numeric and mah._all):
        return None
    return (tail._scale, tail._shift, tail._low, tail._high, tail._table, mah.precision_factor_,
            mah.location_ @ mah.precision_factor_)
