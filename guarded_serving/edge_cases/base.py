"""The estimator shape shared by the edge-case detectors (scikit-learn style).

``score_samples`` (higher = more normal) -> ``decision_function`` (minus
``offset_``; negative = outlier) -> ``predict`` (+1 inlier / -1 outlier).
Internally every detector computes an *outlyingness* (higher = stranger,
``outlyingness(X) == -score_samples(X)``), which is what calibration uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["BaseDetector", "NotFittedError", "check_matrix"]


class NotFittedError(ValueError, AttributeError):
    """A scoring method was called before ``fit``."""


def check_matrix(X: Any, *, n_features: int | None = None, allow_nan: bool = True, what: str = "X") -> np.ndarray:
    """``X`` as a 2-D float64 array; clear errors for bad shape or feature count."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D array (rows x features), got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{what} has {X.shape[1]} features, but the detector was fitted with {n_features}")
    if not allow_nan and np.isnan(X).any():
        raise ValueError(f"{what} contains NaN")
    if np.isinf(X).any():
        raise ValueError(f"{what} contains inf")
    return X


class BaseDetector:
    """Common layers: ``score_samples`` / ``decision_function`` / ``predict``.

    Subclasses implement ``fit`` (returning ``self``, setting ``n_features_in_``)
    and ``outlyingness(X)``. ``offset_`` defaults to the 99th percentile of the
    training outlyingness (a 1% contamination), like scikit-learn's ``offset_``.
    """

    n_features_in_: int
    offset_: float

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(X) first")

    def outlyingness(self, X: Any) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def outlyingness_small(self, X: np.ndarray) -> np.ndarray:
        """``outlyingness`` of a small validated batch (float64, 2-D, a few to ~100 rows).

        The request path's fast path for small batches; detectors with a leaner
        computation for few rows override it. Same scores as ``outlyingness``.
        """
        return self.outlyingness(X)

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality of each row: higher = more normal (``-outlyingness``)."""
        return -self.outlyingness(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for outliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """+1 for inliers, -1 for outliers (at ``offset_``)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def _set_offset(self, train_outlyingness: np.ndarray) -> None:
        self.offset_ = -float(np.quantile(train_outlyingness, 0.99)) if train_outlyingness.size else 0.0

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def categorical_indices(categorical: Any, n_features: int) -> np.ndarray:
    """Validate a list of categorical column indices."""
    idx = np.asarray(sorted(set(int(c) for c in categorical)), dtype=np.intp)
    if idx.size and (idx[0] < 0 or idx[-1] >= n_features):
        raise ConfigError(f"categorical={list(categorical)!r} is invalid: expected column indices in 0..{n_features - 1}")
    return idx
