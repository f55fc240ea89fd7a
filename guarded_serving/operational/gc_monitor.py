"""Garbage-collection pauses, timed with ``gc.callbacks``, for latency root causes.

The callback notes the monotonic time at each collection's ``start`` and
``stop`` and writes the interval into a small ring. A slow call asks
:meth:`GcMonitor.overlap_ms` for the pause time inside its own interval: it
walks the ring from the newest pause back until pauses end before the call
began, so the cost is the number of pauses during the call (usually zero,
bounded by the ring). Collections run under the GIL, one at a time, so the
ring needs no lock; state is per process.
"""

from __future__ import annotations

import gc
import time
import weakref
from typing import Any

__all__ = ["GcMonitor"]

_perf_ns = time.perf_counter_ns


class _WeakHook:
    """The ``gc.callbacks`` entry: holds its monitor weakly, so a dropped monitor costs one call."""

    __slots__ = ("ref",)

    def __init__(self, monitor: "GcMonitor") -> None:
        self.ref = weakref.ref(monitor)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        m = self.ref()
        if m is not None:
            m._callback(phase, info)


class GcMonitor:
    """Time GC pauses in this process.

    Parameters
    ----------
    ring : int, default=64
        How many recent pauses are kept.
    """

    def __init__(self, *, ring: int = 64) -> None:
        self._size = ring
        self._starts = [0] * ring
        self._stops = [0] * ring
        self._gens = [0] * ring
        self._n = 0
        self._cur_start = 0
        self.last_stop_ns = 0
        self.pauses = 0
        self.total_ns = 0
        self.max_ns = 0
        self._installed = False

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._cur_start = _perf_ns()
            return
        t = _perf_ns()
        s = self._cur_start or t
        i = self._n % self._size
        self._starts[i], self._stops[i], self._gens[i] = s, t, info.get("generation", -1)
        self._n += 1
        self._cur_start = 0
        self.last_stop_ns = t
        d = t - s
        self.pauses += 1
        self.total_ns += d
        if d > self.max_ns:
            self.max_ns = d

    def install(self) -> None:
        if not self._installed:
            # purge hooks of monitors that were dropped without uninstall()
            gc.callbacks[:] = [cb for cb in gc.callbacks if not (isinstance(cb, _WeakHook) and cb.ref() is None)]
            self._hook = _WeakHook(self)
            gc.callbacks.append(self._hook)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            try:
                gc.callbacks.remove(self._hook)
            except ValueError:  # pragma: no cover - removed by someone else
                pass
            self._installed = False

    def overlap_ms(self, t0_ns: int, t1_ns: int) -> float:
        """Milliseconds of GC pause inside ``[t0_ns, t1_ns]`` (perf_counter_ns clock)."""
        if self.last_stop_ns < t0_ns:
            return 0.0
        total = 0
        n, size = self._n, self._size
        for k in range(1, min(n, size) + 1):
            i = (n - k) % size
            stop = self._stops[i]
            if stop < t0_ns:
                break
            start = self._starts[i]
            lo, hi = max(start, t0_ns), min(stop, t1_ns)
            if hi > lo:
                total += hi - lo
        return total / 1e6

    def recent(self) -> list[dict[str, float]]:
        """The pauses in the ring, newest first: ``{"generation", "pause_ms", "ago_s"}``."""
        now = _perf_ns()
        out = []
        n, size = self._n, self._size
        for k in range(1, min(n, size) + 1):
            i = (n - k) % size
            out.append({"generation": self._gens[i], "pause_ms": (self._stops[i] - self._starts[i]) / 1e6,
                        "ago_s": (now - self._stops[i]) / 1e9})
        return out

    def stats(self) -> dict[str, Any]:
        return {"pauses": self.pauses, "total_ms": round(self.total_ns / 1e6, 3),
                "max_ms": round(self.max_ns / 1e6, 3)}
