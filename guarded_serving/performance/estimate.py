"""Label-free estimates of a classifier's accuracy from its own confidence (pure numpy).

Both estimators learn from *reference predictions with labels* (held-out rows the model
scored, with their true classes, kept with the profile) and then estimate the accuracy of a
window of serving predictions from their scores alone:

- :class:`CBPE`, confidence-based performance estimation (the method of NannyML's CBPE):
  calibrate the confidence of the predicted class on the reference (isotonic regression of
  "was it right" on the confidence), then the expected accuracy of a window is the mean of
  the calibrated probabilities ``c_i`` that each prediction is right. The realised accuracy
  of those rows, were their labels known, has standard deviation
  ``sqrt(sum c_i (1 - c_i)) / n``: the sampling-error band is ``z`` of those around the
  estimate.
- :class:`ATC`, average thresholded confidence (Garg et al., ICLR 2022): learn the threshold
  ``t`` above which the share of reference confidences equals the reference accuracy; the
  estimate is the share of window confidences above ``t``.

Both assume the relation between inputs and labels is unchanged (covariate shift only).
When labels arrive and the realised accuracy falls outside the band, that assumption broke:
the concept itself may have changed, which no label-free method can see.

``scores`` are either positive-class probabilities of shape (n,) or class probabilities of
shape (n, k); the predicted class is the most probable one.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ATC", "CBPE", "confidence_and_class", "isotonic_fit"]


def confidence_and_class(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence of the predicted class, predicted class)`` for scores of shape (n,) or (n, k)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 1:
        s = np.column_stack([1.0 - s, s])
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"scores must have shape (n,) or (n, k>=2), got {np.shape(scores)}")
    return s.max(axis=1), s.argmax(axis=1)


def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing least-squares fit of ``y`` on ``x`` (pool adjacent violators).

    Returns ``(knots_x, knots_y)`` for :func:`numpy.interp` (constant beyond the ends).
    """
    order = np.argsort(x, kind="mergesort")
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    # merge tied x first
    ux, start = np.unique(xs, return_index=True)
    sums = np.add.reduceat(ys, start)
    counts = np.diff(np.append(start, len(xs))).astype(float)
    vals: list[float] = []
    wts: list[float] = []
    lefts: list[int] = []
    for i in range(len(ux)):
        vals.append(sums[i] / counts[i])
        wts.append(counts[i])
        lefts.append(i)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w
            vals[-2:], wts[-2:] = [v], [w]
            lefts.pop()
    out = np.empty(len(ux))
    bounds = lefts[1:] + [len(ux)]
    for v, lo, hi in zip(vals, lefts, bounds):
        out[lo:hi] = v
    return ux, out


class CBPE:
    """Confidence-based performance estimation of accuracy.

    Parameters
    ----------
    z : float, default=3.0
        Width of the sampling-error band in standard deviations.

    Attributes
    ----------
    knots_x_, knots_y_ : ndarray
        The isotonic calibration map (confidence -> probability of being right).
    reference_accuracy_ : float
    n_reference_ : int
    """

    def __init__(self, *, z: float = 3.0) -> None:
        self.z = z

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> "CBPE":
        conf, pred = confidence_and_class(scores)
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(conf):
            raise ValueError(f"scores have {len(conf)} rows but labels {len(y)}")
        if len(y) < 2:
            raise ValueError("CBPE needs at least 2 reference predictions with labels")
        correct = (pred == y).astype(np.float64)
        self.knots_x_, self.knots_y_ = isotonic_fit(conf, correct)
        self.reference_accuracy_ = float(correct.mean())
        self.n_reference_ = int(len(y))
        return self

    def _check(self) -> None:
        if not hasattr(self, "knots_x_"):
            raise RuntimeError("this CBPE is not fitted yet: call fit(scores, labels) first")

    def correct_probability(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated probability that each prediction is right, shape (n,)."""
        self._check()
        conf, _ = confidence_and_class(scores)
        return np.interp(conf, self.knots_x_, self.knots_y_)

    def estimate(self, scores: np.ndarray) -> dict[str, float]:
        """``{"accuracy", "std", "lower", "upper", "n"}`` for a window of predictions."""
        c = self.correct_probability(scores)
        n = len(c)
        if n == 0:
            return {"accuracy": float("nan"), "std": float("nan"), "lower": float("nan"),
                    "upper": float("nan"), "n": 0}
        acc = float(c.mean())
        sd = float(np.sqrt(np.sum(c * (1.0 - c))) / n)
        return {"accuracy": acc, "std": sd, "lower": max(0.0, acc - self.z * sd),
                "upper": min(1.0, acc + self.z * sd), "n": n}


class ATC:
    """Average thresholded confidence.

    Attributes
    ----------
    threshold_ : float
        Confidence above which the reference share equals the reference accuracy.
    reference_accuracy_ : float
    """

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> "ATC":
        conf, pred = confidence_and_class(scores)
        y = np.asarray(labels).reshape(-1)
        if len(y) != len(conf) or len(y) < 2:
            raise ValueError(f"ATC needs matching scores and labels (>= 2 rows), got {len(conf)} and {len(y)}")
        acc = float((pred == y).mean())
        # the share of confidences strictly above t should be acc: t is the (1 - acc) quantile
        srt = np.sort(conf)
        k = int(round((1.0 - acc) * len(srt)))
        self.threshold_ = float(srt[k - 1]) if k >= 1 else float(srt[0]) - 1e-12
        self.reference_accuracy_ = acc
        return self

    def estimate(self, scores: np.ndarray) -> float:
        """The estimated accuracy of a window: the share of confidences above the threshold."""
        if not hasattr(self, "threshold_"):
            raise RuntimeError("this ATC is not fitted yet: call fit(scores, labels) first")
        conf, _ = confidence_and_class(scores)
        return float(np.mean(conf > self.threshold_)) if len(conf) else float("nan")
