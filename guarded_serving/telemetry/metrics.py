"""Metric instruments of a guard, created lazily in the worker (never at import)."""

from __future__ import annotations

from opentelemetry import metrics

from .._version import __version__
from . import attributes as A

__all__ = ["GuardMetrics"]


class GuardMetrics:
    """The guard's latency histogram, with one attribute set per outcome prebuilt."""

    def __init__(self, model: str, version: str, meter_provider: metrics.MeterProvider | None = None) -> None:
        meter = metrics.get_meter("guarded_serving", __version__, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            A.METRIC_DURATION, unit="s",
            description="Wall time of guarded model calls, by outcome.",
        )
        self._attrs = {o: {A.MODEL_NAME: model, A.MODEL_VERSION: version, A.OUTCOME: o} for o in A.OUTCOMES}

    def record(self, seconds: float, outcome: str) -> None:
        self.duration.record(seconds, self._attrs[outcome])
