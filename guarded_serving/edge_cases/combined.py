"""The default detector: tail + Mahalanobis (and optionally kNN), combined by their calibration ranks.

Each part scores a row (higher = stranger). The parts do not share a scale, and a scale
learned on the fitting rows misleads: the thresholded tail part is zero on almost every
fitting row but not on held-out rows (a value just outside a small training range), so
adding or maxing standardised scores let a few clean calibration rows set the threshold
and the combination flagged far fewer rows than its own Mahalanobis part. Instead, every
part is put on the scale of its own **calibration rows** (held out from fitting):

``v_k(x) = -#{calibration rows whose part-k score is >= the row's}``, and when no
calibration row reaches the row's score, ``v_k = g_k(s) - g_k(max)`` > 0: how far past the
most extreme calibration row it lies, in nats (``g`` = the score itself for the tail part,
whose scores are sums of ``-log`` tail probabilities; ``d2 / 2`` for Mahalanobis and
``d^2 / 2`` for kNN, their log-density scale under a Gaussian).

The combined outlyingness is ``max_k v_k``: the row's best part rank (a min-p over parts).
Its conformal p-value compares it with the calibration rows' own combined outlyingness,
each computed against the *other* calibration rows (leave one out). Adding the scored row
to the calibration set can only lower those (a count grows, a maximum rises), so the
p-value is at least the exact conformal p-value of this rank statistic over the
calibration rows plus the scored row: ``P(p <= alpha) <= alpha`` on in-distribution rows,
whatever the parts and however they depend on each other. A row far past the calibration
rows in any one part gets the smallest reachable p-value ``1 / (n + 1)``; a row at rank
``r`` in its best part gets about ``r / (n + 1)`` times the number of parts that are
independent of it (Bonferroni when they are independent, no loss when they agree).

Cost: the parts' scores, then one binary search per part into its sorted calibration
scores (a single row: Python ``bisect`` on a list).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import BaseDetector, check_matrix
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .tail import TailDetector

__all__ = ["PARTS", "CombinedDetector", "parse_parts"]

PARTS = ("tail", "mahalanobis", "knn")
TAIL_THRESHOLD = float(np.log(100.0))
#: Each part's score on a nats scale (for the distance past the most extreme calibration row).
_NATS = {"tail": 1.0, "mahalanobis": 0.5, "knn": None}  # knn: d^2 / 2


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


def _nats(name: str, s: Any) -> Any:
    f = _NATS[name]
    return s * f if f is not None else s * s * 0.5


class CombinedDetector(BaseDetector):
    """Best calibration rank over the parts (see the module docstring).

    Parameters
    ----------
    parts : sequence of {"tail", "mahalanobis", "knn"}, default=("tail", "mahalanobis")
    categorical : sequence of int, default=()
    n_neighbors : int, default=5
        For the kNN part.
    tail_threshold : float, default=log(100)
        ``threshold`` of the tail part.
    calibration_fraction : float, default=0.2
        Share of ``fit``'s rows held out to calibrate the parts when ``fit`` gets no
        ``calibration`` rows.
    random_state : int, default=0

    Attributes
    ----------
    detectors_ : dict of str -> fitted detector
    part_calibration_ : ndarray of shape (n_calibration, n_parts)
        Each part's score on each calibration row.
    calibration_scores_ : ndarray of shape (n_calibration,)
        The combined outlyingness of each calibration row against the others (what the
        conformal p-values compare with).
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

    def fit(self, X: Any, y: Any = None, *, calibration: Any = None) -> CombinedDetector:
        """Fit every part on ``X`` and rank them on ``calibration`` (held-out rows; default: a
        random ``calibration_fraction`` of ``X``, the parts then fit on the rest)."""
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
        if len(X) < 2 or len(cal) < 1:
            raise ValueError(f"too few rows: {len(X)} to fit and {len(cal)} to calibrate")
        dets: dict[str, BaseDetector] = {}
        for name in self.parts:
            if name == "tail":
                d: Any = TailDetector(categorical=self.categorical, threshold=self.tail_threshold).fit(X)
            elif name == "mahalanobis":
                d = MahalanobisDetector(categorical=self.categorical).fit(X)
            else:
                d = KNNDetector(categorical=self.categorical, n_neighbors=self.n_neighbors).fit(X)
            dets[name] = d
        return self._set_state(dets, np.column_stack([dets[n].outlyingness(cal) for n in self.parts]))

    @classmethod
    def from_parts(cls, detectors: dict[str, BaseDetector], part_calibration: Any, **params: Any
                   ) -> CombinedDetector:
        """Rebuild a fitted combination from fitted parts and their scores on the calibration rows
        (ndarray of shape (n_calibration, n_parts), columns in the order of ``detectors``)."""
        self = cls(parts=tuple(detectors), **params)
        return self._set_state(dict(detectors), np.asarray(part_calibration, dtype=np.float64))

    def _set_state(self, detectors: dict[str, BaseDetector], part_calibration: np.ndarray) -> CombinedDetector:
        self.detectors_ = {n: detectors[n] for n in self.parts}
        self.n_features_in_ = next(iter(self.detectors_.values())).n_features_in_
        cal = part_calibration.reshape(len(part_calibration), len(self.parts))
        if not len(cal) or not np.isfinite(cal).all():
            raise ValueError("part calibration scores must be a non-empty matrix of finite numbers")
        self.part_calibration_ = cal
        self._sorted = [np.sort(cal[:, k]) for k in range(len(self.parts))]
        self._lists = [s.tolist() for s in self._sorted]
        self._n = len(cal)
        self._top = [(float(s[-1]), float(_nats(n, s[-1]))) for n, s in zip(self.parts, self._sorted)]
        self.calibration_scores_ = self._leave_one_out()
        self._one = [d.outlyingness_one for d in self.detectors_.values()]
        self._small = [d.outlyingness_small for d in self.detectors_.values()]
        self._fused = _fuse(self.detectors_) if self.parts == ("tail", "mahalanobis") else None
        self._set_offset(self.calibration_scores_)
        return self

    def _leave_one_out(self) -> np.ndarray:
        """Each calibration row's combined outlyingness against the other calibration rows."""
        cal, n = self.part_calibration_, self._n
        out = np.full(n, -np.inf)
        for k, name in enumerate(self.parts):
            col, srt = cal[:, k], self._sorted[k]
            others_ge = n - np.searchsorted(srt, col, side="left") - 1  # the row itself counted once
            v = -others_ge.astype(np.float64)
            top = others_ge == 0
            if top.any():  # the unique maximum: its distance past the second largest, in nats
                second = srt[-2] if n > 1 else srt[-1]
                v[top] = _nats(name, col[top]) - _nats(name, second) if n > 1 else 0.0
            np.maximum(out, v, out=out)
        return out

    # -- scoring ----------------------------------------------------------------------------------
    def rank_scores(self, S: np.ndarray) -> np.ndarray:
        """Each part's calibration rank score ``v_k`` (module docstring) from raw part scores
        ``S`` of shape (n_rows, n_parts)."""
        n = self._n
        out = np.empty_like(S)
        for k, name in enumerate(self.parts):
            s = S[:, k]
            ge = n - np.searchsorted(self._sorted[k], s, side="left")
            v = -ge.astype(np.float64)
            past = ge == 0
            if past.any():
                v[past] = _nats(name, s[past]) - self._top[k][1]
            out[:, k] = v
        return out

    def _best(self, scores: list[np.ndarray]) -> np.ndarray:
        """``max_k v_k`` from each part's raw scores (a list of 1-D arrays): the best part's rank,
        ``-#{calibration rows at least as strange}`` = position - n, from one binary search per
        part; rows past every calibration row in some part get the largest distance past."""
        n = self._n
        pos = np.searchsorted(self._sorted[0], scores[0], side="left")
        for k in range(1, len(scores)):
            np.maximum(pos, np.searchsorted(self._sorted[k], scores[k], side="left"), out=pos)
        out = (pos - n).astype(np.float64)
        if pos.max() == n:  # past every calibration row in some part (rare)
            past = np.flatnonzero(pos == n)
            best = np.full(len(past), -np.inf)
            for k, name in enumerate(self.parts):
                sk = scores[k][past]
                e = np.where(sk > self._top[k][0], _nats(name, sk) - self._top[k][1], -np.inf)
                np.maximum(best, e, out=best)
            out[past] = best
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
        """Best calibration rank score over the parts. Higher = stranger."""
        self._check_fitted()
        if type(X) is not np.ndarray or X.dtype != np.float64 or X.ndim != 2:
            X = check_matrix(X, n_features=self.n_features_in_)
        return self._best([d.outlyingness(X) for d in self.detectors_.values()])

    def outlyingness_one(self, X: np.ndarray) -> float:
        """``outlyingness`` of a single validated row (float64, shape (1, n_features)), as a float."""
        best = -float("inf")
        n = self._n
        for f, lst, (top, top_nats), name in zip(self._one, self._lists, self._top, self.parts):
            s = f(X)
            ge = n - bisect_left(lst, s)
            v = -float(ge) if ge else _nats(name, s) - top_nats
            best = max(best, v)
        return best

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
