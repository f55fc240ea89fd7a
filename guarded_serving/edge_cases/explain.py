"""Explanations a person can act on: why a row was flagged, led by the part that drove the verdict.

Each reason names the feature, its value and the training evidence, e.g.
``"mean_area=654000 is above every training value (max 2501), 261x the maximum"``,
``"colour=7 is a category never seen in training (seen: 0, 1, 2)"`` or
``"income is missing, which happened in only 0.20% of training rows"``.
A row flagged by the Mahalanobis (or kNN) part is led by the combination, stated
against the same calibration rows the p-value counts, e.g. ``"... the combination is
unusual (Mahalanobis distance 27.9, beyond all 114 calibration rows, largest 18.3)"``
or ``"... exceeded by 3 of 114 calibration rows"``: an explanation never calls a row
more extreme than the calibration rows when its p-value says otherwise.

Cost: O(features) vectorised work per row plus a few reasons in Python (only the
features with the largest tail contributions are looked at); the Mahalanobis
contributions (O(features^2)) only for rows that part drove. The component builds
explanations for at most ``max_explained`` rows per call; :meth:`Guard.check` builds them
for any rows asked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .combined import CombinedDetector

__all__ = ["explain_rows", "lead_parts"]

_PART_TEXT = {"tail": "tail score", "mahalanobis": "Mahalanobis distance", "knn": "distance to the nearest training rows",
              "copula": "Mahalanobis distance on normal scores"}


def _fmt(v: float) -> str:
    if v == 0 or (1e-3 <= abs(v) < 1e7):
        return f"{v:.6g}"
    return f"{v:.3g}"


def lead_parts(profile: Any, X: np.ndarray, detector: str = "combined") -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    """For each row of ``X``: the part that drove its score, its raw score, and that part's
    sorted calibration scores (the evidence the p-value counts)."""
    det = profile.detector(detector)
    if isinstance(det, CombinedDetector):
        S = det.part_scores(X)
        best = det.evidence(S).argmax(axis=1)
        if "tail" in det.parts:  # past every calibration row in the tail part too: the values say why
            t = det.parts.index("tail")
            best = np.where(S[:, t] > det._sorted[t][-1], t, best)
        return ([det.parts[k] for k in best], S[np.arange(len(X)), best], [det._sorted[k] for k in best])
    cal = np.sort(profile.arrays[f"cal_{detector}"])
    return [detector] * len(X), det.outlyingness(X), [cal] * len(X)


def _versus_calibration(name: str, score: float, cal: np.ndarray) -> str:
    """``score`` of part ``name`` against its calibration scores, in the p-value's own terms."""
    shown = (lambda s: f"{math.sqrt(max(s, 0.0)):.3g}") if name in ("mahalanobis", "copula") else (lambda s: f"{s:.3g}")
    n = len(cal)
    ge = n - int(np.searchsorted(cal, score, side="left"))
    if ge == 0:
        return f"{_PART_TEXT[name]} {shown(score)}, beyond all {n} calibration rows, whose largest is {shown(cal[-1])}"
    return (f"{_PART_TEXT[name]} {shown(score)}, reached or exceeded by {ge} of {n} calibration rows "
            f"(part p-value {(ge + 1) / (n + 1):.3g})")


def explain_rows(profile: Any, X: np.ndarray, rows: np.ndarray, *, max_reasons: int = 3,
                 detector: str = "combined") -> list[list[str]]:
    """Reasons (the driving part first, then the most severe features) for each row index in ``rows`` of ``X``."""
    tail = profile.detector("tail")
    names = profile.feature_names
    view = profile.view  # speaks the input's language: "text of 4,312 characters, longer than ..."
    cats = tail.categories_
    Xr = np.asarray(X[rows], dtype=np.float64)
    if not len(Xr):
        return []
    contrib = tail.contributions(Xr)
    leads, scores, cals = lead_parts(profile, Xr, detector)
    floor = 1.0 / (tail.n_samples_fit_ + 1.0)
    p = Xr.shape[1]
    top_k = min(p, 4 * max_reasons)
    out: list[list[str]] = []
    for k in range(len(Xr)):
        x = Xr[k]
        ck = contrib[k]
        cand = np.argpartition(-ck, top_k - 1)[:top_k] if top_k < p else np.arange(p)
        found: list[tuple[float, str]] = []
        for j in cand[np.argsort(-ck[cand])].tolist():
            if not ck[j] > 0:
                continue
            found += _feature_reason(tail, view, cats, names, j, float(x[j]), float(ck[j]), floor)
        found.sort(key=lambda r: -r[0])
        reasons = [r for _, r in found[:max_reasons]]
        head = view.headline(x) if view is not None else None
        lead = leads[k]
        if lead != "tail" or not reasons:  # the combination drove it (or no single value stands out)
            combo = _combination(profile, x, lead, float(scores[k]), cals[k], inside=not found)
            reasons = [combo, *reasons[:max_reasons - 1]]
        if head is not None:
            reasons = [head, *reasons[:max_reasons - 1]]
        out.append(reasons)
    return out


def _combination(profile: Any, x: np.ndarray, part: str, score: float, cal: np.ndarray, *, inside: bool) -> str:
    names = profile.feature_names
    top: list[str] = []
    if part in ("mahalanobis", "tail", "copula"):
        c = profile.detector("copula" if part == "copula" else "mahalanobis").contributions(x[None, :])[0]
        top = [names[int(j)] for j in np.argsort(-c)[:3] if c[int(j)] > 0]
        if part == "tail":
            part, score = "mahalanobis", float(profile.detector("mahalanobis").outlyingness(x[None, :])[0])
            cal = np.sort(profile.arrays["cal_mahalanobis"])
    start = "each value is within its training range, but the combination is unusual" if inside else \
        "the combination of values is unusual"
    return (f"{start} ({_versus_calibration(part, score, cal)})"
            + (f"; most unusual together: {', '.join(top)}" if top else ""))


def _feature_reason(tail: Any, view: Any, cats: dict, names: list[str], j: int, v: float, c: float,
                    floor: float) -> list[tuple[float, str]]:
    name = names[j]
    rate = float(tail.missing_rate_[j])
    if math.isnan(v):
        if rate == 0:
            return [(c, f"{name} is missing, which never happened in training")]
        if rate < 0.01:
            return [(c, f"{name} is missing, which happened in only {rate:.2%} of training rows")]
        return []
    lo, hi = float(tail.min_[j]), float(tail.max_[j])
    said = view.describe(j, v, lo, hi) if view is not None and (v > hi or v < lo or j in cats) else None
    if said is not None and (j not in cats or not np.any(cats[j][0] == v)):
        return [(c, said)]
    if j in cats:
        vals, freqs = cats[j]
        hit = np.nonzero(vals == v)[0]
        if not hit.size:
            seen = ", ".join(_fmt(float(s)) for s in vals[:10]) + (", ..." if len(vals) > 10 else "")
            return [(c, f"{name}={_fmt(v)} is a category never seen in training (seen: {seen})")]
        if freqs[hit[0]] < 0.001:
            return [(c, f"{name}={_fmt(v)} is a rare category ({freqs[hit[0]]:.3%} of training rows)")]
        return []
    if v > hi:
        by = (f", {v / hi:.3g}x the maximum" if hi > 0 and v / hi >= 2
              else f", by {_fmt(v - hi)} ({(v - hi) / (hi - lo):.1%} of the training range)" if hi > lo else "")
        return [(c, f"{name}={_fmt(v)} is above every training value (max {_fmt(hi)}){by}")]
    if v < lo:
        if lo > 0 and v < 0:
            by = ", a negative value where training had only positive ones"
        elif lo > 0 and v > 0 and lo / v >= 2:
            by = f", {lo / v:.3g}x below the minimum"
        else:
            by = f", by {_fmt(lo - v)}" + (f" ({(lo - v) / (hi - lo):.1%} of the training range)" if hi > lo else "")
        return [(c, f"{name}={_fmt(v)} is below every training value (min {_fmt(lo)}){by}")]
    t = math.exp(-min(c, -math.log(floor)))
    if t <= 0.001:
        side = "top" if v >= float(np.median(tail.quantiles_[j])) else "bottom"
        text = f"{name}={_fmt(v)} is in the {side} {max(t, floor):.2%} of training values " \
               f"(range {_fmt(lo)} to {_fmt(hi)})"
        return [(c, text)]
    return []
