"""Explanations a person can act on: why a row was flagged, feature by feature.

Each reason names the feature, its value and the training evidence, e.g.
``"mean_area=654000 is above every training value (max 2501), 261x the maximum"``,
``"colour=7 is a category never seen in training (seen: 0, 1, 2)"`` or
``"income is missing, which happened in only 0.20% of training rows"``.
When no single feature stands out the reason is the combination (the
Mahalanobis distance and the features that contribute most to it).
Only flagged rows are explained, so this runs rarely.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["explain_rows"]


def _fmt(v: float) -> str:
    if v == 0 or (1e-3 <= abs(v) < 1e7):
        return f"{v:.6g}"
    return f"{v:.3g}"


def explain_rows(profile: Any, X: np.ndarray, rows: np.ndarray, *, max_reasons: int = 3) -> list[list[str]]:
    """Reasons (most severe first) for each row index in ``rows`` of ``X``."""
    tail = profile.detector("tail")
    mah = profile.detector("mahalanobis")
    names = profile.feature_names
    view = profile.view  # speaks the input's language: "text of 4,312 characters, longer than ..."
    cats = tail.categories_
    Xr = X[rows]
    contrib = tail.contributions(Xr)
    floor = 1.0 / (tail.n_samples_fit_ + 1.0)
    out: list[list[str]] = []
    for k in range(len(rows)):
        x = Xr[k]
        found: list[tuple[float, str]] = []
        for j in np.argsort(-contrib[k]):
            j = int(j)
            v = float(x[j])
            name = names[j]
            rate = float(tail.missing_rate_[j])
            if math.isnan(v):
                if rate == 0:
                    found.append((contrib[k, j], f"{name} is missing, which never happened in training"))
                elif rate < 0.01:
                    found.append((contrib[k, j], f"{name} is missing, which happened in only {rate:.2%} "
                                                 "of training rows"))
                continue
            lo, hi = float(tail.min_[j]), float(tail.max_[j])
            said = view.describe(j, v, lo, hi) if view is not None and (v > hi or v < lo or j in cats) else None
            if said is not None and (j not in cats or not np.any(cats[j][0] == v)):
                found.append((contrib[k, j], said))
                continue
            if j in cats:
                vals, freqs = cats[j]
                hit = np.nonzero(vals == v)[0]
                if not hit.size:
                    seen = ", ".join(_fmt(float(c)) for c in vals[:10]) + (", ..." if len(vals) > 10 else "")
                    found.append((contrib[k, j], f"{name}={_fmt(v)} is a category never seen in training "
                                                 f"(seen: {seen})"))
                elif freqs[hit[0]] < 0.001:
                    found.append((contrib[k, j], f"{name}={_fmt(v)} is a rare category ({freqs[hit[0]]:.3%} "
                                                 "of training rows)"))
                continue
            if v > hi:
                by = (f", {v / hi:.3g}x the maximum" if hi > 0 and v / hi >= 2
                      else f", by {_fmt(v - hi)} ({(v - hi) / (hi - lo):.1%} of the training range)" if hi > lo
                      else "")
                found.append((contrib[k, j], f"{name}={_fmt(v)} is above every training value (max {_fmt(hi)}){by}"))
            elif v < lo:
                if lo > 0 and v < 0:
                    by = ", a negative value where training had only positive ones"
                elif lo > 0 and v > 0 and lo / v >= 2:
                    by = f", {lo / v:.3g}x below the minimum"
                else:
                    by = f", by {_fmt(lo - v)}" + (f" ({(lo - v) / (hi - lo):.1%} of the training range)"
                                                   if hi > lo else "")
                found.append((contrib[k, j], f"{name}={_fmt(v)} is below every training value (min {_fmt(lo)}){by}"))
            else:
                t = math.exp(-min(float(contrib[k, j]), -math.log(floor)))
                if t <= 0.001:
                    side = "top" if v >= float(np.median(tail.quantiles_[j])) else "bottom"
                    found.append((contrib[k, j], f"{name}={_fmt(v)} is in the {side} {max(t, floor):.2%} "
                                                 f"of training values (range {_fmt(lo)} to {_fmt(hi)})"))
        found.sort(key=lambda r: -r[0])
        reasons = [r for _, r in found[:max_reasons]]
        head = view.headline(x) if view is not None else None
        if head is not None:
            reasons = [head, *reasons[:max_reasons - 1]]
        if not reasons:
            c = mah.contributions(x[None, :])[0]
            top = [names[int(j)] for j in np.argsort(-c)[:3] if c[int(j)] > 0]
            d = math.sqrt(max(float(mah.outlyingness(x[None, :])[0]), 0.0))
            typical = math.sqrt(max(float(np.quantile(profile.arrays["cal_mahalanobis"], 0.99)), 0.0))
            reasons.append(f"each value is within its training range, but the combination is unusual "
                           f"(Mahalanobis distance {d:.1f}, 99% of held-out training rows are below {typical:.1f})"
                           + (f"; most unusual together: {', '.join(top)}" if top else ""))
        out.append(reasons)
    return out
