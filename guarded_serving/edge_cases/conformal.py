"""Conformal p-values: a score becomes the rank of its outlyingness among held-out calibration scores.

For a row with outlyingness ``s`` and ``n`` calibration scores ``c_i`` (from
rows the detector never saw while fitting),

    p(s) = (1 + #{i : c_i >= s}) / (n + 1)

If the row comes from the same distribution as the calibration rows, ``p`` is
(super-)uniform, so flagging ``p <= alpha`` flags at most a fraction ``alpha``
of in-distribution rows (exactly ``floor(alpha (n + 1)) / (n + 1)`` without
ties): the false-positive rate is the configured one, whatever the detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ConformalCalibrator"]


class ConformalCalibrator:
    """Turn outlyingness into conformal p-values.

    Parameters
    ----------
    calibration_scores : array-like of shape (n_calibration,)
        Outlyingness of held-out in-distribution rows.
    """

    def __init__(self, calibration_scores: Any) -> None:
        cal = np.sort(np.asarray(calibration_scores, dtype=np.float64).ravel())
        if cal.size == 0 or not np.isfinite(cal).all():
            raise ValueError("calibration_scores must be a non-empty array of finite numbers")
        self.scores_ = cal
        self.n_ = int(cal.size)
        self._num = float(self.n_ + 1)

    def p_values(self, outlyingness: np.ndarray) -> np.ndarray:
        """Conformal p-value of each score, ndarray of shape (n_rows,)."""
        ge = self.n_ - np.searchsorted(self.scores_, outlyingness, side="left")
        return (ge + 1.0) / self._num

    def threshold(self, alpha: float) -> float:
        """The outlyingness above which ``p <= alpha`` (``inf`` if alpha < 1/(n+1))."""
        k = int(np.floor(alpha * self._num)) - 1  # rows allowed at or above the score
        if k < 0:
            return float("inf")
        return float(self.scores_[self.n_ - 1 - k]) if k < self.n_ else float("-inf")

    def min_p_value(self) -> float:
        """The smallest p-value this calibration can give: ``1 / (n + 1)``."""
        return 1.0 / self._num
