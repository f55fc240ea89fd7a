"""Operational checks: latency SLO, and (later) hardware, dependencies, downstream components."""

from .blas import blas_threads, limit_blas_threads
from .latency import LatencySnapshot, LatencyTracker

__all__ = ["LatencySnapshot", "LatencyTracker", "blas_threads", "limit_blas_threads"]
