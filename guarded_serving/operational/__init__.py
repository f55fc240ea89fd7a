"""Operational checks: latency SLO, and (later) hardware, dependencies, downstream components."""

from .latency import LatencySnapshot, LatencyTracker

__all__ = ["LatencySnapshot", "LatencyTracker"]
