"""Prediction drift: the window test applied to a model's outputs.

Outputs become columns: a score column (tested with KS, Wasserstein, PSI)
and a class column (chi-squared on class frequencies), against the model's
outputs on the reference data (``reference_predictions`` of a profile).

- 1-D scores in [0, 1] (a positive-class probability): ``score`` and
  ``class`` (score >= 0.5);
- 1-D integers: ``class`` only;
- other 1-D values (a regression): ``score`` only;
- 2-D probabilities (n, k): ``score`` (the top probability) and ``class`` (argmax).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .windows import WindowReport, WindowTest

__all__ = ["PredictionDrift", "default_output_extractor", "prediction_columns"]


def default_output_extractor(result: Any) -> np.ndarray | None:
    """A model result as an array of outputs, or None when it has none we understand.

    Accepts an ndarray (or list) of scores/probabilities/labels, or a dict with
    ``"probability"`` (else ``"scores"``, ``"label"``, ``"labels"``, ``"prediction"``).
    """
    if isinstance(result, dict):
        for key in ("probability", "probabilities", "scores", "prediction", "predictions", "label", "labels"):
            if key in result:
                result = result[key]
                break
        else:
            return None
    if isinstance(result, (list, tuple, np.ndarray)):
        try:
            a = np.asarray(result, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        return a if a.ndim in (1, 2) and a.size else None
    return None


def prediction_columns(pred: np.ndarray, kind: str) -> np.ndarray:
    """``pred`` as the (n, c) matrix of columns tested for ``kind``."""
    pred = np.asarray(pred, dtype=np.float64)
    if kind == "proba2d":
        return np.column_stack([pred.max(axis=1), pred.argmax(axis=1)])
    pred = pred.reshape(-1)
    if kind == "binary":
        return np.column_stack([pred, (pred >= 0.5).astype(float)])
    return pred[:, None]


class PredictionDrift:
    """Window tests on model outputs against reference predictions.

    Parameters
    ----------
    alpha, min_effect, min_samples : see :class:`~guarded_serving.drift.windows.WindowTest`.

    Attributes
    ----------
    kind_ : {"binary", "labels", "scores", "proba2d"}
    n_columns_ : int
        Width of the rows :meth:`columns` produces (what a store holds).
    """

    def __init__(self, *, alpha: float = 0.01, min_effect: float = 0.15, min_samples: int = 200) -> None:
        self.alpha = alpha
        self.min_effect = min_effect
        self.min_samples = min_samples

    def fit(self, reference_predictions: np.ndarray, y: Any = None) -> "PredictionDrift":
        ref = np.asarray(reference_predictions, dtype=np.float64)
        if ref.ndim == 2 and ref.shape[1] == 1:
            ref = ref[:, 0]
        if ref.ndim == 2:
            kind, names, cat = "proba2d", ["prediction.score", "prediction.class"], [1]
        elif ref.ndim == 1 and np.all((ref >= 0) & (ref <= 1)) and not np.all(ref == np.round(ref)):
            kind, names, cat = "binary", ["prediction.score", "prediction.class"], [1]
        elif ref.ndim == 1 and np.all(ref == np.round(ref)):
            kind, names, cat = "labels", ["prediction.class"], [0]
        elif ref.ndim == 1:
            kind, names, cat = "scores", ["prediction.score"], []
        else:
            raise ValueError(f"reference_predictions must be 1-D or 2-D, got shape {ref.shape}")
        self.kind_ = kind
        self.n_columns_ = len(names)
        self.test_ = WindowTest(alpha=self.alpha, min_effect=self.min_effect, min_samples=self.min_samples,
                                categorical=cat, feature_names=names).fit(prediction_columns(ref, kind))
        return self

    def columns(self, pred: np.ndarray) -> np.ndarray:
        """Turn raw outputs into the stored columns; ValueError if the shape does not fit."""
        pred = np.asarray(pred, dtype=np.float64)
        if self.kind_ == "proba2d" and pred.ndim != 2:
            raise ValueError(f"expected 2-D probabilities, got shape {pred.shape}")
        if self.kind_ != "proba2d" and pred.ndim == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if self.kind_ != "proba2d" and pred.ndim != 1:
            raise ValueError(f"expected 1-D outputs, got shape {pred.shape}")
        return prediction_columns(pred, self.kind_)

    def test(self, window_columns: np.ndarray) -> WindowReport:
        """Test a window of stored columns (see :meth:`columns`)."""
        return self.test_.test(window_columns)

    def test_predictions(self, pred: np.ndarray) -> WindowReport:
        """Test raw outputs directly."""
        return self.test(self.columns(pred))


OutputExtractor = Callable[[Any], "np.ndarray | None"]
