"""Concentration of exposure, measured on counts (pure functions, no state).

Every function takes an exposure vector: one non-negative number per item of the
catalogue (position-weighted impressions in a window; items never shown count 0
when the catalogue is known). They are the measures of the loop check:

================================  =============================================  ===================
measure                           definition                                     rises with a loop
================================  =============================================  ===================
:func:`gini`                      Gini coefficient of the exposure shares        yes (0 even, ->1)
:func:`normalised_entropy`        Shannon entropy / log(catalogue size)           falls (1 = even)
:func:`coverage`                  share of the catalogue shown at least once      falls
:func:`top_share`                 exposure share of the top 1% of items           yes
:func:`average_popularity`        exposure-weighted mean reference popularity     yes
:func:`popularity_lift`           average popularity / its value under the        yes (1 = as users
                                  reference distribution itself                   chose in training)
:func:`jaccard`                   overlap of two successive lists of one user     yes (lists freeze)
================================  =============================================  ===================

Position weights (:func:`position_weights`) turn a ranked list into exposure: an item at
rank ``r`` (1-based) counts ``1 / log2(r + 1)`` by default (the DCG discount: the first
slot is seen more than the tenth).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["POSITION_SCHEMES", "ExposureSummary", "average_popularity", "coverage", "exposure_counts", "gini",
           "jaccard", "normalised_entropy", "popularity_lift", "position_weights", "summarise", "top_share"]

POSITION_SCHEMES = ("dcg", "reciprocal", "uniform")


def position_weights(k: int, scheme: str = "dcg") -> np.ndarray:
    """Exposure weight of ranks 1..k: ``dcg`` 1/log2(r+1), ``reciprocal`` 1/r, ``uniform`` 1."""
    r = np.arange(1, int(k) + 1, dtype=np.float64)
    if scheme == "dcg":
        return 1.0 / np.log2(r + 1.0)
    if scheme == "reciprocal":
        return 1.0 / r
    if scheme == "uniform":
        return np.ones_like(r)
    raise ValueError(f"scheme={scheme!r} is invalid: expected one of {POSITION_SCHEMES}")


def exposure_counts(lists: Iterable[Sequence[Any]], scheme: str = "dcg") -> dict[Any, float]:
    """Position-weighted exposure per item of ranked ``lists`` (item -> weight)."""
    out: dict[Any, float] = {}
    cache: dict[int, np.ndarray] = {}
    for lst in lists:
        k = len(lst)
        if k not in cache:
            cache[k] = position_weights(k, scheme)
        for item, w in zip(lst, cache[k]):
            out[item] = out.get(item, 0.0) + float(w)
    return out


def _vector(exposure: Any, n_items: int | None = None) -> np.ndarray:
    """Exposure as a float vector, padded with zeros up to ``n_items`` (unseen catalogue items)."""
    if isinstance(exposure, Mapping):
        exposure = list(exposure.values())
    e = np.asarray(exposure, dtype=np.float64).reshape(-1)
    if np.any(e < 0) or not np.all(np.isfinite(e)):
        raise ValueError("exposure must be finite and non-negative")
    if n_items is not None:
        if n_items < len(e):
            raise ValueError(f"n_items={n_items} is smaller than the {len(e)} items given")
        e = np.concatenate([e, np.zeros(n_items - len(e))])
    return e


def gini(exposure: Any, n_items: int | None = None) -> float:
    """Gini coefficient of exposure over ``n_items`` items (0: all equal; (n-1)/n: one item takes all).

    NaN when there is no exposure or fewer than two items.
    """
    e = np.sort(_vector(exposure, n_items))
    n, total = len(e), e.sum()
    if n < 2 or total <= 0:
        return float("nan")
    i = np.arange(1, n + 1)
    return max(0.0, float((2.0 * np.sum(i * e)) / (n * total) - (n + 1.0) / n))  # no -1e-16 for even exposure


def normalised_entropy(exposure: Any, n_items: int | None = None) -> float:
    """Shannon entropy of the exposure shares divided by ``log(n_items)`` (1: even; 0: one item)."""
    e = _vector(exposure, n_items)
    n, total = len(e), e.sum()
    if n < 2 or total <= 0:
        return float("nan")
    p = e[e > 0] / total
    return min(1.0, max(0.0, float(-(p * np.log(p)).sum() / math.log(n))))


def coverage(exposure: Any, n_items: int | None = None) -> float:
    """Share of the ``n_items`` catalogue items with any exposure."""
    e = _vector(exposure, n_items)
    return float(np.count_nonzero(e) / len(e)) if len(e) else float("nan")


def top_share(exposure: Any, n_items: int | None = None, fraction: float = 0.01) -> float:
    """Exposure share of the top ``fraction`` of the catalogue (at least one item)."""
    e = _vector(exposure, n_items)
    total = e.sum()
    if total <= 0:
        return float("nan")
    k = max(1, math.ceil(fraction * len(e)))
    return float(np.sort(e)[-k:].sum() / total)


def average_popularity(exposure: Any, popularity: Any) -> float:
    """Exposure-weighted mean of the items' reference popularity (shares of reference interactions;
    ``exposure`` and ``popularity`` aligned item by item)."""
    e = _vector(exposure)
    p = _vector(popularity)
    if len(p) != len(e):
        raise ValueError(f"popularity has {len(p)} items, exposure {len(e)}: align them item by item")
    total = e.sum()
    if total <= 0:
        return float("nan")
    ps = p.sum()
    return float((e * (p / ps if ps > 0 else p)).sum() / total)


def popularity_lift(exposure: Any, popularity: Any) -> float:
    """:func:`average_popularity` divided by its value when exposure follows the reference itself
    (``sum p_i^2``): 1 means the model shows popular items as often as users chose them in the
    reference; above 1, it pushes the head of the catalogue harder."""
    p = _vector(popularity)
    ps = p.sum()
    if ps <= 0:
        return float("nan")
    ref = float(((p / ps) ** 2).sum())
    return average_popularity(exposure, p) / ref


def jaccard(a: Iterable[Any], b: Iterable[Any]) -> float:
    """|a & b| / |a | b| of two lists taken as sets (1 when both are empty)."""
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return 1.0 if union == 0 else len(sa & sb) / union


@dataclass(frozen=True)
class ExposureSummary:
    """The measures of one window of exposure."""

    n_lists: int
    n_items: int
    exposure: float
    gini: float
    entropy: float
    coverage: float
    top_share: float
    avg_popularity: float | None = None
    popularity_lift: float | None = None
    jaccard: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in self.__dict__.items()}


def summarise(exposure: Any, *, n_items: int | None = None, n_lists: int = 0, popularity: Any = None,
              top_fraction: float = 0.01, jaccard_mean: float | None = None) -> ExposureSummary:
    """Every measure of one window's exposure vector (aligned with ``popularity`` when given)."""
    e = _vector(exposure, n_items)
    avg = lift = None
    if popularity is not None:
        p = _vector(popularity)
        if len(p) < len(e):
            p = np.concatenate([p, np.zeros(len(e) - len(p))])
        avg, lift = average_popularity(e, p[: len(e)]), popularity_lift(e, p[: len(e)])
    return ExposureSummary(n_lists=int(n_lists), n_items=len(e), exposure=float(e.sum()), gini=gini(e),
                           entropy=normalised_entropy(e), coverage=coverage(e),
                           top_share=top_share(e, fraction=top_fraction), avg_popularity=avg,
                           popularity_lift=lift, jaccard=jaccard_mean)
