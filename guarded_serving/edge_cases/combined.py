"""The default detector: tail + Mahalanobis (and optionally kNN), standardised, the largest wins.

The tail part counts only values rarer than 1 in 100 (``tail_threshold=log(100)``,
see :class:`~.tail.TailDetector`): summing every feature's mild unusualness made the
tail part noisy on wide data, where it then outvoted the Mahalanobis part.

Each part's outlyingness is put on a common scale with the median and the
spread (90th minus 50th percentile) of its scores on the training rows
(leave-one-out for kNN), and the largest standardised score is the combination's. The tail
score catches one feature gone wrong (unit errors, stuck or sign-flipped
sensors, missing values); the Mahalanobis score catches rows whose
features are each plausible but whose combination is not (swapped
features, another class).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .base import BaseDetector, check_matrix
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .tail import TailDetector

__all__ = ["CombinedDetector", "PARTS"]

PARTS = ("tail", "mahalanobis", "knn")
TAIL_THRESHOLD = float(np.log(100.0))


class CombinedDetector(BaseDetector):
    """Largest standardised part score.

    Parameters
    ----------
    parts : sequence of {"tail", "mahalanobis", "knn"}, default=("tail", "mahalanobis")
    categorical : sequence of int, default=()
    n_neighbors : int, default=5
        For the kNN part.
    tail_threshold : float, default=log(100)
        ``threshold`` of the tail part.

    Attributes
    ----------
    detectors_ : dict of str -> fitted detector
    center_, spread_ : ndarray of shape (n_parts,)
        Standardisation of each part's outlyingness.
    """

    def __init__(self, *, parts: Sequence[str] = ("tail", "mahalanobis"), categorical: Sequence[int] = (),
                 n_neighbors: int = 5, tail_threshold: float = TAIL_THRESHOLD) -> None:
        self.parts = tuple(parts)
        self.categorical = tuple(categorical)
        self.n_neighbors = n_neighbors
        self.tail_threshold = tail_threshold

    def fit(self, X: Any, y: Any = None) -> "CombinedDetector":
        """Fit every part on ``X`` and learn their standardisation."""
        bad = [p for p in self.parts if p not in PARTS]
        if bad or not self.parts:
            raise ValueError(f"parts={self.parts!r} is invalid: expected a non-empty subset of {PARTS}")
        X = check_matrix(X)
        dets: dict[str, BaseDetector] = {}
        train: dict[str, np.ndarray] = {}
        for name in self.parts:
            if name == "tail":
                d: Any = TailDetector(categorical=self.categorical, threshold=self.tail_threshold).fit(X)
            elif name == "mahalanobis":
                d = MahalanobisDetector(categorical=self.categorical).fit(X)
            else:
                d = KNNDetector(categorical=self.categorical, n_neighbors=self.n_neighbors).fit(X)
            dets[name] = d
            train[name] = d.train_outlyingness() if name == "knn" else d.outlyingness(X)
        return self._set_state(dets, train)

    def _set_state(self, detectors: dict[str, BaseDetector], train_outlyingness: dict[str, np.ndarray]
                   ) -> "CombinedDetector":
        self.detectors_ = {n: detectors[n] for n in self.parts}
        self.n_features_in_ = next(iter(self.detectors_.values())).n_features_in_
        center, spread = [], []
        for n in self.parts:
            med, q90 = np.quantile(train_outlyingness[n], [0.5, 0.9])
            center.append(med)
            spread.append(q90 - med if q90 > med else max(abs(med), 1.0))
        self.center_ = np.array(center)
        self.spread_ = np.array(spread)
        self._parts = [(self.detectors_[n].outlyingness, float(c), 1.0 / float(s))
                       for n, c, s in zip(self.parts, self.center_, self.spread_)]
        self._one = [(self.detectors_[n].outlyingness_one, c, inv) for n, (_, c, inv) in zip(self.parts, self._parts)]
        self._small = [(self.detectors_[n].outlyingness_small, c, inv)
                       for n, (_, c, inv) in zip(self.parts, self._parts)]
        self._fused = _fuse(self.detectors_, dict(zip(self.parts, self._parts)))
        return self

    @classmethod
    def from_parts(cls, detectors: dict[str, BaseDetector], center: Sequence[float], spread: Sequence[float],
                   **params: Any) -> "CombinedDetector":
        """Rebuild a fitted combination from fitted parts and their standardisation."""
        self = cls(parts=tuple(detectors), **params)
        self.detectors_ = dict(detectors)
        self.n_features_in_ = next(iter(detectors.values())).n_features_in_
        self.center_ = np.asarray(center, dtype=np.float64)
        self.spread_ = np.asarray(spread, dtype=np.float64)
        self._parts = [(detectors[n].outlyingness, float(c), 1.0 / float(s))
                       for n, c, s in zip(self.parts, self.center_, self.spread_)]
        self._one = [(detectors[n].outlyingness_one, c, inv) for n, (_, c, inv) in zip(self.parts, self._parts)]
        self._small = [(detectors[n].outlyingness_small, c, inv) for n, (_, c, inv) in zip(self.parts, self._parts)]
        self._fused = _fuse(self.detectors_, dict(zip(self.parts, self._parts)))
        return self

    def outlyingness_one(self, X: np.ndarray) -> float:
        """``outlyingness`` of a single validated row (float64, shape (1, n_features)), as a float."""
        return max([(f(X) - c) * inv for f, c, inv in self._one])

    def outlyingness_small(self, X: np.ndarray) -> np.ndarray:
        """``outlyingness`` of a small validated batch (float64, 2-D).

        The default parts (all-numeric tail + Mahalanobis) run fused, with the
        standardisation folded into the tail's table and the Mahalanobis factor
        (:func:`_fuse`): 14 array operations for any number of rows. Rows with a value
        out of range or missing are scored again: by the one-row path (up to 4 rows), else
        by the parts' small-batch paths on those rows (the tail's exact scores; Mahalanobis
        again only where a value is missing).
        """
        fused = self._fused
        if fused is None:
            return self._parts_small(X)
        t_scale, t_shift, t_low, t_high, table, t_off, factor, shift, m_off = fused
        u = X * t_scale
        u += t_shift
        np.fmax(u, t_low, out=u)
        np.minimum(u, t_high, out=u)
        s = table.take(u.astype(np.intp)).sum(axis=1)
        z = X @ factor
        z -= shift
        d = np.einsum("ij,ij->i", z, z)
        s -= t_off
        d -= m_off
        out = np.maximum(s, d)
        total = out.sum()
        if total == total:
            return out
        # rows the table cannot score (a value out of range or missing): those rows again, exactly
        bad = np.flatnonzero(np.isnan(out))
        if len(bad) <= 4:  # the one-row path, scalar arithmetic
            for r in bad.tolist():
                out[r] = self.outlyingness_one(X[r:r + 1])
            return out
        tail, mah = self.detectors_["tail"], self.detectors_["mahalanobis"]
        (_, c_t, i_t) = self._parts[self.parts.index("tail")]
        (_, c_m, i_m) = self._parts[self.parts.index("mahalanobis")]
        xb = X[bad]
        tb = (tail.outlyingness_small(xb) - c_t) * i_t
        db = d[bad]
        if np.isnan(db).any():  # missing values: Mahalanobis imputes them
            db = (mah.outlyingness_small(xb) - c_m) * i_m
        out[bad] = np.maximum(tb, db)
        return out

    def _parts_small(self, X: np.ndarray) -> np.ndarray:
        """Largest standardised part score, through each part's ``outlyingness_small``."""
        return _largest_part(self._small, X)

    def outlyingness(self, X: Any) -> np.ndarray:
        """Largest of the parts' standardised outlyingness. Higher = stranger."""
        self._check_fitted()
        if type(X) is not np.ndarray or X.dtype != np.float64 or X.ndim != 2:
            X = check_matrix(X, n_features=self.n_features_in_)
        return _largest_part(self._parts, X)

    def part_outlyingness(self, X: Any) -> dict[str, np.ndarray]:
        """Each part's standardised outlyingness (for explanations and benchmarks)."""
        X = check_matrix(X, n_features=self.n_features_in_)
        return {n: (self.detectors_[n].outlyingness(X) - c) * inv
                for n, (_, c, inv) in zip(self.parts, self._parts)}


def _fuse(detectors: dict[str, BaseDetector], parts: dict[str, tuple[Any, float, float]]) -> tuple | None:
    """Constants of the fused small-batch path for exactly an all-numeric tail + Mahalanobis pair, else None.

    ``(tail - c_t) * i_t`` becomes a table scaled by ``i_t`` less ``c_t * i_t``; ``(d2 - c_m) * i_m``
    becomes the squared norm under a factor scaled by ``sqrt(i_m)`` less ``c_m * i_m`` (scores agree
    with ``outlyingness`` to rounding).
    """
    if set(detectors) != {"tail", "mahalanobis"}:
        return None
    tail, mah = detectors["tail"], detectors["mahalanobis"]
    if not (isinstance(tail, TailDetector) and isinstance(mah, MahalanobisDetector)
            and tail._all_numeric and mah._all):
        return None
    (_, c_t, i_t), (_, c_m, i_m) = parts["tail"], parts["mahalanobis"]
    if not (i_t > 0 and i_m > 0):
        return None
    factor = np.ascontiguousarray(mah.precision_factor_ * np.sqrt(i_m))
    return (tail._scale, tail._shift, tail._low, tail._high, tail._table * i_t, c_t * i_t,
            factor, mah.location_ @ factor, c_m * i_m)


def _largest_part(parts: Any, X: np.ndarray) -> np.ndarray:
    """The largest of the parts' standardised scores ``(score(X) - centre) * inverse spread``."""
    total = None
    for score, c, inv in parts:
        s = score(X)
        s -= c
        s *= inv
        total = s if total is None else np.maximum(total, s, out=total)
    return total  # type: ignore[return-value]
