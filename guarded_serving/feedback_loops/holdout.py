"""The random-exposure holdout: the one comparison that tells "users like these items" from
"users only see these items".

On the model's own traffic an item is clicked more because it is shown more, so clicks
cannot say whether the model's favourites deserve their exposure. On the *holdout* (requests the
caller marks as exploration, served a random list) exposure does not depend on the model, so
the click-through of an item there is an unbiased estimate of how much users like it where
they see it. :func:`holdout_comparison` compares, on the holdout, the click-through of the
model's favourites (the items with the most model exposure) with that of every other item:

- ratio clearly above 1: users prefer the favourites -- the concentration is earned;
- ratio near 1 while the favourites take most of the exposure: users only see these items,
  the signature of a feedback loop.

Click-through is clicks per position-weighted impression, so a favourite shown first on the
holdout is not credited for its slot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HoldoutComparison", "holdout_comparison"]


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

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["favourites"] = [str(f) for f in self.favourites[:20]]
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def holdout_comparison(model_exposure: Mapping[Any, float], holdout_shows: Mapping[Any, float],
                       holdout_clicks: Mapping[Any, float], *, model_clicks: Mapping[Any, float] | None = None,
                       favourites: int | None = None, min_clicks: int = 30, z: float = 1.96,
                       min_share: float = 0.5) -> HoldoutComparison:
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
        Normal quantile of the ratio's interval (Katz log interval).
    min_share : float, default=0.5
        The favourites must take at least this share of model exposure for "exposure only".
    """
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
    ctr_f = cf / sf if sf > 0 else float("nan")
    ctr_r = cr / sr if sr > 0 else float("nan")
    clicks = round(cf + cr)
    ratio = lo = hi = float("nan")
    if cf > 0 and cr > 0 and sf > 0 and sr > 0:
        ratio = ctr_f / ctr_r
        se = math.sqrt(1.0 / cf + 1.0 / cr)  # Poisson counts per exposure: the log ratio's standard error
        lo, hi = ratio * math.exp(-z * se), ratio * math.exp(z * se)
    model_ctr = None
    if model_clicks is not None:
        mf = sum(model_exposure[i] for i in fav)
        model_ctr = sum(model_clicks.get(i, 0.0) for i in fav) / mf if mf > 0 else float("nan")
    judged = clicks >= min_clicks and math.isfinite(ratio)
    if not judged:
        verdict = "too few holdout clicks"
    elif lo > 1.0:
        verdict = "earned"
    elif share >= min_share:
        verdict = "exposure only"
    else:
        verdict = "undecided"
    return HoldoutComparison(fav, share, ctr_f, ctr_r, ratio, lo, hi, model_ctr, clicks, judged, verdict)
