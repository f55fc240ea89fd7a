"""Realised performance of one model version and segment, updated label by label.

A :class:`Tally` takes joined outcomes (predicted, label, prediction time, label time) in
join order and keeps: for classifiers the accuracy and the recall of each class, for
regressors MAE and RMSE, the label lag (time from the prediction to its label), and one
anytime-valid confidence sequence per expectation (:mod:`.confseq`).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Mapping

import numpy as np

from .confseq import RestartingCS
from .metrics import metric_direction

__all__ = ["Tally"]


class Tally:
    """Counters and bounds of one ``(version, segment)``.

    Parameters
    ----------
    kind : {"classification", "regression"}
    expectations : mapping of metric to target
    alpha : float
        Level of each expectation's confidence sequence (one-sided).
    error_scale : float, optional
        Errors are clipped here for the bounds of ``mae`` / ``rmse``.
    """

    def __init__(self, kind: str, expectations: Mapping[str, float], alpha: float,
                 error_scale: float | None = None, lag_sample: int = 10_000, restart_every: int = 500) -> None:
        self.kind = kind
        self.expectations = dict(expectations)
        self.error_scale = error_scale
        self.n = 0
        self.abstained = 0
        self.correct = 0
        self.by_class: dict[int, list[int]] = {}      # true class -> [n, correct]
        self.abs_err = 0.0
        self.sq_err = 0.0
        self.lags: deque[float] = deque(maxlen=lag_sample)
        self.bounds: dict[str, RestartingCS] = {}
        for m in self.expectations:
            if (m in ("mae", "rmse")) == (kind == "regression"):
                side = "upper" if metric_direction(m) == "at_least" else "lower"
                self.bounds[m] = RestartingCS(alpha, side=side, every=restart_every)

    def update(self, predicted: np.ndarray, label: np.ndarray, pred_ts: np.ndarray, label_ts: np.ndarray) -> None:
        """Take outcomes in join order (predicted NaN: the row got no answer, counted as abstained)."""
        answered = ~np.isnan(predicted)
        self.abstained += int((~answered).sum())
        p, y = predicted[answered], label[answered]
        if len(p) == 0:
            return
        self.lags.extend(np.maximum(label_ts[answered] - pred_ts[answered], 0.0).tolist())
        self.n += len(p)
        if self.kind == "classification":
            hit = (p == y)
            self.correct += int(hit.sum())
            classes, inv = np.unique(y.astype(np.int64), return_inverse=True)
            n_c = np.bincount(inv, minlength=len(classes))
            hit_c = np.bincount(inv, weights=hit.astype(float), minlength=len(classes))
            for c, n, h in zip(classes.tolist(), n_c.tolist(), hit_c.tolist()):
                tot = self.by_class.setdefault(int(c), [0, 0])
                tot[0] += int(n)
                tot[1] += int(round(h))
            for m, cs in self.bounds.items():
                if m == "accuracy":
                    cs.update(hit.astype(float))
                else:  # recall:<class>
                    c = int(m.split(":", 1)[1])
                    cs.update(hit[y == c].astype(float))
        else:
            err = np.abs(p - y)
            self.abs_err += float(err.sum())
            self.sq_err += float((err ** 2).sum())
            s = self.error_scale or 1.0
            for m, cs in self.bounds.items():
                cs.update(np.minimum(err, s) / s if m == "mae" else np.minimum(err ** 2, s * s) / (s * s))

    # -- read ---------------------------------------------------------------------------
    def value(self, metric: str) -> float:
        """The realised ``metric`` (nan without labels)."""
        if metric == "accuracy":
            return self.correct / self.n if self.n else math.nan
        if metric.startswith("recall:"):
            n, h = self.by_class.get(int(metric.split(":", 1)[1]), (0, 0))
            return h / n if n else math.nan
        if metric == "mae":
            return self.abs_err / self.n if self.n else math.nan
        if metric == "rmse":
            return math.sqrt(self.sq_err / self.n) if self.n else math.nan
        raise KeyError(metric)

    def bound(self, metric: str) -> tuple[float, int]:
        """The bound that judges ``metric`` (upper for accuracy and recall, lower for errors, in the
        metric's units) and the labels it rests on (the latest ones: see :meth:`since`)."""
        cs = self.bounds[metric]
        if metric_direction(metric) == "at_least":
            return cs.bound_, cs.labels_since()
        s = self.error_scale or 1.0
        return (cs.bound_ * s if metric == "mae" else math.sqrt(cs.bound_) * s), cs.labels_since()

    def value_since(self, metric: str) -> float:
        """The realised ``metric`` over the labels its bound rests on (errors: clipped)."""
        m = self.bounds[metric].mean_since_
        if metric_direction(metric) == "at_least":
            return m
        s = self.error_scale or 1.0
        return m * s if metric == "mae" else math.sqrt(m) * s

    def since(self, metric: str) -> int:
        """Labels of ``metric`` before those its bound rests on (0: every label)."""
        return self.bounds[metric].since_

    def judged(self, metric: str) -> int:
        """Labels of ``metric`` seen in all."""
        return self.bounds[metric].n_

    def lag(self) -> dict[str, float]:
        if not self.lags:
            return {}
        a = np.fromiter(self.lags, float)
        return {"median_s": float(np.median(a)), "p90_s": float(np.quantile(a, 0.9)), "max_s": float(a.max())}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"labels": self.n, "abstained": self.abstained}
        if self.kind == "classification":
            out["accuracy"] = self.value("accuracy")
            out["recall"] = {str(c): (h / n if n else None) for c, (n, h) in sorted(self.by_class.items())}
        else:
            out["mae"], out["rmse"] = self.value("mae"), self.value("rmse")
        out["label_lag"] = self.lag()
        for m in self.bounds:
            b, n = self.bound(m)
            out.setdefault("bounds", {})[m] = {"bound": b, "side": "upper" if metric_direction(m) == "at_least"
                                               else "lower", "labels": n, "since_label": self.since(m)}
        return out
