"""Train-serving skew: the first requests after startup against the training profile.

Skew is a difference that exists from the first request (a preprocessing
step that differs between training and serving), as opposed to drift, which
comes later. :class:`SkewCheck` tests the first ``N`` rows after startup with
the window test at a stricter level and, for each feature that differs, says
*how*:

- ``missing``  -- the share of missing values (NaN) rose;
- ``constant`` -- serving values are (nearly) constant while training's vary
  (a default filled in, a column dropped upstream);
- ``scale``    -- the spread changed by a factor (units, a scaler fitted twice);
- ``offset``   -- the centre moved with the spread unchanged (a shifted origin);
- ``distribution`` -- it differs in another way.

:func:`compare_preprocessing` is the offline twin: the serving preprocessing's
output and the training features for the *same* raw records, row by row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .windows import WindowReport, WindowTest

__all__ = ["SkewCheck", "SkewFinding", "classify_difference", "compare_preprocessing"]


@dataclass(frozen=True)
class SkewFinding:
    feature: str
    kind: str  # missing | constant | scale | offset | distribution
    detail: str
    p_value: float | None = None
    effect: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "detail": self.detail,
                "p_value": self.p_value, "effect": self.effect}


def classify_difference(train: np.ndarray, serve: np.ndarray, *, scale_tol: float = 0.25,
                        offset_tol: float = 0.25, missing_tol: float = 0.05) -> tuple[str, str]:
    """How one feature's serving values differ from its training values: ``(kind, detail)``."""
    train = np.asarray(train, dtype=float)
    serve = np.asarray(serve, dtype=float)
    miss_t, miss_s = float(np.isnan(train).mean()), float(np.isnan(serve).mean())
    if miss_s > miss_t + missing_tol:
        return "missing", f"{miss_s:.0%} missing in serving vs {miss_t:.0%} in training"
    t, s = train[~np.isnan(train)], serve[~np.isnan(serve)]
    if s.size == 0 or t.size == 0:
        return "missing", "no values to compare"
    sd_t, sd_s = float(t.std()), float(s.std())
    mu_t, mu_s = float(np.median(t)), float(np.median(s))
    if sd_t > 0 and sd_s <= 1e-9 * max(1.0, abs(mu_s)) + 1e-12:
        return "constant", f"serving value is constant {s[0]:.6g} (training std {sd_t:.4g})"
    if sd_t > 0:
        ratio = sd_s / sd_t
        if abs(np.log(ratio)) > np.log1p(scale_tol):
            return "scale", f"spread x{ratio:.3g} (std {sd_s:.4g} vs {sd_t:.4g}; median {mu_s:.4g} vs {mu_t:.4g})"
        shift = (mu_s - mu_t) / sd_t
        if abs(shift) > offset_tol:
            return "offset", f"centre moved by {shift:+.3g} training std (median {mu_s:.4g} vs {mu_t:.4g})"
    elif sd_s > 0:
        return "scale", f"training was constant {t[0]:.6g}, serving varies (std {sd_s:.4g})"
    elif mu_s != mu_t:
        return "offset", f"constant {mu_s:.6g} in serving vs {mu_t:.6g} in training"
    return "distribution", "shape differs (centre and spread similar)"


class SkewCheck:
    """Compare the first serving rows with the training profile, feature by feature.

    Parameters
    ----------
    first_n : int, default=500
        Rows after startup to judge; the check waits until that many arrived.
    alpha : float, default=0.001
        Stricter false discovery rate than the drift windows'.
    min_effect : float, default=0.2
    categorical, feature_names : as in :class:`~guarded_serving.drift.windows.WindowTest`.
    """

    def __init__(self, *, first_n: int = 500, alpha: float = 0.001, min_effect: float = 0.2,
                 categorical: Sequence[int] = (), feature_names: Sequence[str] | None = None) -> None:
        self.first_n = first_n
        self.alpha = alpha
        self.min_effect = min_effect
        self.categorical = categorical
        self.feature_names = feature_names

    def fit(self, X: np.ndarray, y: Any = None) -> "SkewCheck":
        if not isinstance(self.first_n, int) or self.first_n < 2:
            raise ValueError(f"first_n={self.first_n!r} is invalid: expected an integer >= 2")
        self.reference_ = np.asarray(X, dtype=float)
        self.test_ = WindowTest(alpha=self.alpha, min_effect=self.min_effect,
                                min_samples=min(self.first_n, 2 ** 31 - 1), categorical=self.categorical,
                                feature_names=self.feature_names).fit(self.reference_)
        return self

    def check(self, rows: np.ndarray) -> tuple[list[SkewFinding], WindowReport]:
        """Findings for the first rows (uses at most ``first_n``), and the window report."""
        rows = np.asarray(rows, dtype=float)[: self.first_n]
        report = self.test_.test(rows)
        names = list(self.test_.feature_names_in_)
        cat = set(int(i) for i in self.categorical)
        findings = []
        for f in report.features:
            if not f.drifted or f.kind == "joint":
                continue
            if f.kind == "missing":  # the missing rate, tested in the same BH family as the values
                name = f.feature.removesuffix(" (missing rate)")
                findings.append(SkewFinding(name, "missing", f"{f.detail['window_missing']:.0%} missing in serving "
                                            f"vs {f.detail['reference_missing']:.0%} in training", f.q_value, f.effect))
                continue
            i = names.index(f.feature)
            if i in cat:
                kind, detail = "distribution", f"category frequencies differ (total variation {f.effect:.3g})"
                if f.detail.get("unseen"):
                    detail += f"; {f.detail['unseen']} values of categories unseen in training"
            else:
                kind, detail = classify_difference(self.reference_[:, i], rows[:, i])
            findings.append(SkewFinding(f.feature, kind, detail, f.q_value, f.effect))
        return findings, report


def compare_preprocessing(serving: np.ndarray, training: np.ndarray, *,
                          feature_names: Sequence[str] | None = None, rtol: float = 1e-6,
                          atol: float = 1e-9) -> list[SkewFinding]:
    """Offline: compare serving-preprocessed features with training features for the same raw records.

    ``serving[i]`` and ``training[i]`` must come from the same raw record.
    For each feature whose values disagree, the finding says how: ``missing``,
    ``constant``, ``scale`` (serving = a * training with a != 1), ``offset``
    (serving = training + b), or ``distribution`` (no affine relation).
    """
    S = np.asarray(serving, dtype=float)
    T = np.asarray(training, dtype=float)
    if S.shape != T.shape or S.ndim != 2:
        raise ValueError(f"serving {S.shape} and training {T.shape} must be the same 2-D shape (same records)")
    names = list(feature_names) if feature_names is not None else [f"x{i}" for i in range(S.shape[1])]
    out = []
    for i, name in enumerate(names):
        s, t = S[:, i], T[:, i]
        both_nan = np.isnan(s) & np.isnan(t)
        same = both_nan | np.isclose(s, t, rtol=rtol, atol=atol)
        if same.all():
            continue
        frac = float((~same).mean())
        new_nan = np.isnan(s) & ~np.isnan(t)
        if new_nan.mean() > 0.5 * frac:
            out.append(SkewFinding(name, "missing", f"{int(new_nan.sum())} records missing in serving "
                                   f"but present in training ({frac:.0%} of records differ)"))
            continue
        ok = ~np.isnan(s) & ~np.isnan(t)
        s_, t_ = s[ok], t[ok]
        if s_.size and np.ptp(s_) == 0 and np.ptp(t_) > 0:
            out.append(SkewFinding(name, "constant", f"serving is constant {s_[0]:.6g} for every record "
                                   f"({frac:.0%} of records differ)"))
            continue
        if s_.size >= 2 and np.ptp(t_) > 0:
            a, b = np.polyfit(t_, s_, 1)
            resid = s_ - (a * t_ + b)
            if np.allclose(resid, 0, atol=max(atol, 1e-6 * float(np.abs(s_).max() or 1.0))):
                if not np.isclose(a, 1.0, rtol=1e-6):
                    out.append(SkewFinding(name, "scale", f"serving = {a:.6g} x training + {b:.6g} "
                                           f"({frac:.0%} of records differ)", effect=float(a)))
                else:
                    out.append(SkewFinding(name, "offset", f"serving = training {b:+.6g} "
                                           f"({frac:.0%} of records differ)", effect=float(b)))
                continue
        out.append(SkewFinding(name, "distribution", f"{frac:.0%} of records differ, with no affine relation "
                               f"(max abs difference {float(np.nanmax(np.abs(s - t))):.4g})"))
    return out
