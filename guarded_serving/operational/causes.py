"""Why was a call slow? Causes that explain its time over the latency budget, ordered by share.

For a call that breached the budget, the *excess* is ``latency - slo``. Each
candidate cause gets a *share* of it:

``gc_pause``
    GC pause time inside the call (:class:`~.gc_monitor.GcMonitor`) over the
    excess. Named only when the share is material (``gc_share``, default one
    half): a 0.4 ms pause does not explain a 70 ms call against a 30 ms budget.
``queueing``
    Time the request waited before the model ran (for a worker thread, behind
    other requests, parsing): the request time minus the model time, when the
    budget applies to the request time. Named when its share is material
    (``gc_share``).
``latency_trend``
    The model itself is getting slower (:class:`~.trend.LatencyTrend`: a rising
    trend at the test's false-alarm level). Its share is the part of the excess
    the fitted rise accounts for (:meth:`~.trend.TrendResult.explained_ms`);
    named when the trend line, extrapolated to this call, is itself over the
    budget (the trend carried the model over it), or, for a spike above a trend
    still within the budget, when that share is material.
host and GPU state
    ``gpu_thermal_slowdown``, ``gpu_hardware_slowdown``, ``gpu_memory_pressure``,
    ``gpu_saturation``, ``cpu_saturation``, ``memory_pressure`` from the cached
    hardware snapshot (:func:`~.hardware.pressure`). Their effect on one call
    cannot be measured, so they share equally what the measured causes leave
    unexplained, and are not named when the measured causes explain it all.

Causes come out by share, largest first (ties keep the order above); a call
with none is ``unknown``. Pure arithmetic on numbers the request path already
has: O(number of causes).
"""

from __future__ import annotations

from typing import Sequence

from .trend import TrendResult

__all__ = ["explain", "UNKNOWN"]

UNKNOWN = "unknown"


def explain(latency_ms: float, slo_ms: float, *, gc_pause_ms: float = 0.0, gc_share: float = 0.5,
            trend: TrendResult | None = None, calls_since_trend: int = 0,
            snapshot: Sequence[str] = (), queue_ms: float = 0.0) -> list[tuple[str, float]]:
    """``[(cause, share), ...]`` for a call over its budget, largest share first; ``[]`` when unexplained.

    ``calls_since_trend``: calls between the trend test and this one (the trend line is extrapolated).
    Measured shares (GC, trend) are each capped at 1 and may overlap.
    """
    excess = latency_ms - slo_ms
    if excess <= 0.0:
        return []
    out: list[tuple[str, float]] = []
    explained = 0.0
    if queue_ms > 0.0:
        share = min(queue_ms / excess, 1.0)
        if share >= gc_share:
            out.append(("queueing", share))
            explained += share
    if gc_pause_ms > 0.0:
        share = min(gc_pause_ms / excess, 1.0)
        if share >= gc_share:
            out.append(("gc_pause", share))
            explained += share
    if trend is not None and trend.rising:
        share = min(trend.explained_ms(slo_ms, calls_since_trend) / excess, 1.0)
        now = trend.fitted_ms(calls_since_trend)
        over = now is not None and now > slo_ms
        if share > 0.0 and (over or share >= gc_share):
            out.append(("latency_trend", share))
            explained += share
    rest = 1.0 - explained
    if snapshot and rest > 1e-9:
        each = rest / len(snapshot)
        out.extend((c, each) for c in snapshot)
    out.sort(key=lambda cs: -cs[1])
    return out
