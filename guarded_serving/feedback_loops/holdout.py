"""The random-exposure holdout: the one comparison that tells "users like these items" from
"users only see these items".

On the model's own traffic an item is clicked more because it is shown more, so clicks
cannot say whether the model's favourites deserve their exposure. On the *holdout* (requests the
caller marks as exploration, served a random list) exposure does not depend on the model, so
the click-through of an item there is an unbiased estimate of how much users like it where
they see it. :func:`holdout_comparison` compares, on the holdout, the click-through of the
model's favourites (the items with the most model exposure) with that of every other item
(the *lift*, with a Katz log interval):

- the favourites take most of the exposure (``min_share``) and the upper end of the lift's
  interval lies below ``lift`` (default 2): users only see these items -- they like them less
  than ``lift`` times the rest, at confidence ``1 - (1 - erf(z / sqrt 2)) / 2`` (97.5% for
  ``z = 1.96``). This is the degraded verdict, and its error level is stated: a model whose
  favourites really are liked ``lift`` times the rest or more gets it with probability at most
  2.5% (the interval is asymptotic: it needs ``min_clicks`` holdout clicks);
- the lower end above 1: users prefer the favourites, the concentration is earned;
- otherwise undecided.

Why a threshold and not "the lift is above 1": a popularity loop does not pick its favourites
at random -- plays follow appeal times exposure, so the items it locks onto are often somewhat
liked (a lift of 1.1-1.4 in ``benchmarks/bench_loops.py``), and with enough holdout clicks
"above 1" becomes certain while they still take all the exposure.

:func:`windowed_holdout_comparison` chooses the favourites *per window* and judges each window's
favourites on that window's holdout, then pools the counts. When the model retrains on the
exploration clicks, favourites chosen from exposure pooled over many windows are partly chosen by
the very clicks that judge them (a winner's curse that flatters the model: 3.5 instead of 1.7 in
the simulated control); per window, the favourites come from a model trained before the window.

Click-through is clicks per position-weighted impression, so a favourite shown first on the
holdout is not credited for its slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HoldoutComparison", "holdout_comparison", "lift_interval", "windowed_holdout_comparison"]


@dataclass(frozen=True)
class HoldoutComparison:
    """Favourites against the rest on the holdout (rates per weighted impression)."""

    favourites: tuple[Any, ...]
    favourites_exposure_share: float      # their share of the model's exposure
    holdout_ctr_favourites: float
    holdout_ctr_rest: float
    ratio: float
    ratio_low: float
    ratio_high: float
    model_ctr_favourites: float | None
    holdout_clicks: int
    judged: bool
    verdict: str                          # "earned", "exposure only", "undecided", "too few holdout clicks"
    lift: float = 2.0                     # the lift that would justify the favourites' share
    model_to_holdout: float | None = None  # the favourites' click-through on model traffic / on the holdout

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["favourites"] = [str(f) for f in self.favourites[:20]]
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def lift_interval(cf: float, sf: float, cr: float, sr: float, z: float = 1.96) -> tuple[float, float, float]:
    """Ratio of two click-through rates ``(cf / sf) / (cr / sr)`` and its Katz log interval
    (clicks as Poisson counts per weighted impression); NaNs without clicks on either side."""
    if not (cf > 0 and cr > 0 and sf > 0 and sr > 0):
        nan = float("nan")
        return nan, nan, nan
    ratio = (cf / sf) / (cr / sr)
    se = math.sqrt(1.0 / cf + 1.0 / cr)
    return ratio, ratio * math.exp(-z * se), ratio * math.exp(z * se)


def _judge(fav: tuple[Any, ...], share: float, cf: float, sf: float, cr: float, sr: float,
           model_ctr: float | None, *, min_clicks: int, z: float, min_share: float,
           lift: float) -> HoldoutComparison:
    ctr_f = cf / sf if sf > 0 else float("nan")
    ctr_r = cr / sr if sr > 0 else float("nan")
    clicks = round(cf + cr)
    ratio, lo, hi = lift_interval(cf, sf, cr, sr, z)
    judged = clicks >= min_clicks and math.isfinite(ratio)
    if not judged:
        verdict = "too few holdout clicks"
    elif share >= min_share and hi < lift:
        verdict = "exposure only"
    elif lo > 1.0:
        verdict = "earned"
    else:
        verdict = "undecided"
    infl = model_ctr / ctr_f if model_ctr is not None and ctr_f > 0 and math.isfinite(model_ctr) else None
    return HoldoutComparison(fav, share, ctr_f, ctr_r, ratio, lo, hi, model_ctr, clicks, judged, verdict, lift,
                             infl)


def _check_params(min_share: float, lift: float) -> None:
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share={min_share!r} is invalid: expected a share in (0, 1]")
    if not (isinstance(lift, (int, float)) and math.isfinite(lift) and lift > 1):
        raise ValueError(f"lift={lift!r} is invalid: expected a number > 1")


def holdout_comparison(model_exposure: Mapping[Any, float], holdout_shows: Mapping[Any, float],
                       holdout_clicks: Mapping[Any, float], *, model_clicks: Mapping[Any, float] | None = None,
                       favourites: int | None = None, min_clicks: int = 30, z: float = 1.96,
                       min_share: float = 0.5, lift: float = 2.0) -> HoldoutComparison:
    """Compare the model's favourites with the rest on the random-exposure holdout.

    Parameters
    ----------
    model_exposure : mapping item -> weighted impressions on the model's traffic
    holdout_shows, holdout_clicks : mapping item -> weighted impressions / clicks on the holdout
    model_clicks : mapping item -> clicks on the model's traffic, optional
    favourites : int, optional
        How many top items are the favourites (default: the top 5% of the items seen, at least 1).
    min_clicks : int, default=30
        Fewer holdout clicks than this: not judged.
    z : float, default=1.96
        Normal quantile of the ratio's interval (Katz log interval); the degraded verdict's
        error level is one-sided, 2.5% at 1.96.
    min_share : float, default=0.5
        The favourites must take at least this share of model exposure for "exposure only".
    lift : float, default=2.0
        "exposure only" when the interval's upper end lies below this lift.
    """
    _check_params(min_share, lift)
    items = set(model_exposure) | set(holdout_shows)
    k = favourites or max(1, math.ceil(0.05 * len(items)))
    ranked = sorted(model_exposure, key=lambda i: -model_exposure[i])
    fav = tuple(ranked[:k])
    fset = set(fav)
    total_model = sum(model_exposure.values())
    share = sum(model_exposure[i] for i in fav) / total_model if total_model > 0 else float("nan")
    cf = sum(holdout_clicks.get(i, 0.0) for i in fset)
    sf = sum(holdout_shows.get(i, 0.0) for i in fset)
    cr = sum(v for i, v in holdout_clicks.items() if i not in fset)
    sr = sum(v for i, v in holdout_shows.items() if i not in fset)
    model_ctr = None
    if model_clicks is not None:
        mf = sum(model_exposure[i] for i in fav)
        model_ctr = sum(model_clicks.get(i, 0.0) for i in fav) / mf if mf > 0 else float("nan")
    return _judge(fav, share, cf, sf, cr, sr, model_ctr, min_clicks=min_clicks, z=z, min_share=min_share,
                  lift=lift)


def windowed_holdout_comparison(windows: Sequence[tuple[Mapping[Any, float], Mapping[Any, float],
                                                        Mapping[Any, float], Mapping[Any, float]]], *,
                                favourites: float = 0.05, min_clicks: int = 30, z: float = 1.96,
                                min_share: float = 0.5, lift: float = 2.0) -> HoldoutComparison | None:
    """The comparison with favourites chosen per window (see the module docstring).

    ``windows``: per window ``(model_exposure, holdout_shows, holdout_clicks, model_clicks)``
    mappings item -> weighted impressions or clicks. The favourites of a window are the top
    ``favourites`` share of the items it showed on model traffic (at least 1); each window's
    favourites are judged on that window's holdout and the counts pooled. The favourites named
    (and the exposure share) are those of the pooled windows. None without model exposure or
    holdout impressions.
    """
    _check_params(min_share, lift)
    cf = sf = cr = sr = mc = ms = fav_exp = total = 0.0
    pooled: dict[Any, float] = {}
    shows_any = False
    for exp, shows, clicks, mclicks in windows:
        for i, v in exp.items():
            pooled[i] = pooled.get(i, 0.0) + v
        shows_any = shows_any or bool(shows)
        if not exp or not shows:
            continue
        k = max(1, math.ceil(favourites * len(set(exp) | set(shows))))
        fset = set(sorted(exp, key=lambda i: -exp[i])[:k])
        fav_exp += sum(exp[i] for i in fset)
        total += sum(exp.values())
        cf += sum(clicks.get(i, 0.0) for i in fset)
        sf += sum(shows.get(i, 0.0) for i in fset)
        cr += sum(v for i, v in clicks.items() if i not in fset)
        sr += sum(v for i, v in shows.items() if i not in fset)
        mc += sum(mclicks.get(i, 0.0) for i in fset)
        ms += sum(exp[i] for i in fset)
    if not pooled or not shows_any:
        return None
    n_seen = len(pooled)
    fav = tuple(sorted(pooled, key=lambda i: -pooled[i])[:max(1, math.ceil(favourites * n_seen))])
    share = fav_exp / total if total > 0 else float("nan")
    model_ctr = mc / ms if ms > 0 else None
    return _judge(fav, share, cf, sf, cr, sr, model_ctr, min_clicks=min_clicks, z=z, min_share=min_share,
                  lift=lift)
