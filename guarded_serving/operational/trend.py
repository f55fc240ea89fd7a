"""Is the model itself getting slower? A trend test on recent call latencies, run in the background.

The request path appends each call's latency to a bounded ring
(:meth:`LatencyTrend.append`: one list slot and a counter, O(1)). Background
work (the hardware sampler's tick) calls :meth:`LatencyTrend.update`, which
tests the ring for an upward trend and caches a :class:`TrendResult` that
slow calls read.

The test. The ring (the last ``window`` calls, in call order) is cut into at
most ``blocks`` consecutive blocks of equal size and each block is reduced to
its median: medians shrug off the odd slow call (a GC pause, a preempted
thread) and blocks absorb the short-range correlation of latencies on a busy
host. On the block medians:

* **Mann-Kendall** (one-sided, upward): ``S = sum_{i<j} sign(m_j - m_i)``,
  variance ``n(n-1)(2n+5)/18`` less the tie correction, ``z = (S - 1) / sd``,
  ``p = P(Z >= z)``. The trend is called *rising* when ``p <= alpha``: with
  latencies that do not trend (independent block medians), a test says
  "rising" with probability at most ``alpha`` (the false-alarm level, per test).
* **Theil-Sen** slope (median of the pairwise slopes) and intercept (median of
  ``m_i - slope * i``) give the size of the trend, reported in milliseconds
  per 100 calls, and the fitted latency at the start and end of the window.

A test runs only when at least ``window // 8`` calls (and 16) arrived since the
last one, so the windows of successive tests overlap by at most 7/8 and a
quiet service is not retested on the same data. Cost: one copy of the ring, a
median over it and an O(blocks^2) pass over the medians (~1 ms), off the
request path. State is per worker process.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LatencyTrend", "TrendResult", "mann_kendall", "theil_sen"]


@dataclass(frozen=True)
class TrendResult:
    """The last trend test over the ring of recent call latencies.

    ``rising`` is the test's verdict at level ``alpha``; the slope and the fitted
    latencies describe the trend whatever the verdict. ``calls == 0``: not tested yet.
    """

    calls: int = 0
    rising: bool = False
    p_value: float | None = None
    slope_ms_per_100_calls: float | None = None
    start_ms: float | None = None  # fitted latency at the start of the window
    end_ms: float | None = None  # fitted latency at its end (the latest calls)
    alpha: float = 0.001
    block_calls: int = 0
    tested_at: float = 0.0  # time.time()
    at_call: int = 0  # calls appended (ever) when tested

    @property
    def rise_ms(self) -> float:
        """Fitted rise across the window (end minus start), 0 when unknown."""
        if self.start_ms is None or self.end_ms is None:
            return 0.0
        return self.end_ms - self.start_ms

    def fitted_ms(self, calls_since: int = 0) -> float | None:
        """The trend line ``calls_since`` calls after the test (extrapolated at most one window ahead)."""
        if self.end_ms is None or self.slope_ms_per_100_calls is None:
            return None
        ahead = min(max(calls_since, 0), self.calls)
        return self.end_ms + self.slope_ms_per_100_calls * ahead / 100.0

    def explained_ms(self, slo_ms: float, calls_since: int = 0) -> float:
        """How much of a call's time over ``slo_ms`` the trend accounts for (0 unless rising).

        The fitted latency now (``calls_since`` calls after the test) minus the larger of the
        fitted latency at the window's start and the budget: the part of the excess that the
        rise carried over the budget.
        """
        now = self.fitted_ms(calls_since)
        if not self.rising or now is None or self.start_ms is None:
            return 0.0
        return max(now - max(self.start_ms, slo_ms), 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "rising": self.rising, "p_value": self.p_value,
                "slope_ms_per_100_calls": self.slope_ms_per_100_calls, "start_ms": self.start_ms,
                "end_ms": self.end_ms, "alpha": self.alpha, "block_calls": self.block_calls}


def mann_kendall(x: np.ndarray) -> tuple[float, float]:
    """One-sided (upward) Mann-Kendall test: ``(S, p)``, ``p = P(S' >= S)`` with no trend.

    Normal approximation with continuity correction and the tie correction of the
    variance; ``p = 1`` for fewer than 3 points.
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 3:
        return 0.0, 1.0
    d = np.sign(x[None, :] - x[:, None])
    s = float(np.triu(d, 1).sum())
    _, counts = np.unique(x, return_counts=True)
    ties = float(np.sum(counts * (counts - 1.0) * (2.0 * counts + 5.0)))
    var = (n * (n - 1.0) * (2.0 * n + 5.0) - ties) / 18.0
    if var <= 0.0:
        return s, 1.0
    z = (s - math.copysign(1.0, s)) / math.sqrt(var) if s else 0.0
    return s, 0.5 * math.erfc(z / math.sqrt(2.0))


def theil_sen(x: np.ndarray) -> tuple[float, float]:
    """Theil-Sen ``(slope, intercept)`` of ``x`` against its index 0..n-1."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return 0.0, float(x[0]) if n else 0.0
    i, j = np.triu_indices(n, 1)
    slope = float(np.median((x[j] - x[i]) / (j - i)))
    intercept = float(np.median(x - slope * np.arange(n)))
    return slope, intercept


class LatencyTrend:
    """A bounded ring of recent call latencies and an upward-trend test over it.

    Parameters
    ----------
    window : int, default=1024
        Calls kept (and tested).
    alpha : float, default=0.001
        False-alarm level of one test (Mann-Kendall, one-sided).
    blocks : int, default=64
        Most block medians the window is reduced to.
    min_calls : int, default=128
        Calls needed before the first test.
    """

    def __init__(self, *, window: int = 1024, alpha: float = 0.001, blocks: int = 64, min_calls: int = 128) -> None:
        if window < 16:
            raise ValueError(f"window={window!r} is invalid: the trend test needs at least 16 calls")
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha={alpha!r} is invalid: expected a false-alarm level in (0, 0.5)")
        if blocks < 8:
            raise ValueError(f"blocks={blocks!r} is invalid: expected at least 8")
        self.window = int(window)
        self.alpha = float(alpha)
        self.blocks = int(blocks)
        self.min_calls = max(int(min_calls), 16)
        self._buf = [0.0] * self.window
        self._n = 0
        self._tested_n = 0
        self._lock = threading.Lock()  # background updates only; append never locks
        self.result = TrendResult(alpha=self.alpha)
        self.tests = 0

    # -- request path ------------------------------------------------------------------
    @property
    def calls(self) -> int:
        """Latencies appended, ever."""
        return self._n

    def append(self, latency_ms: float) -> None:
        """Add one call's latency (O(1); a race between threads may drop a sample, never corrupt)."""
        n = self._n
        self._buf[n % self.window] = latency_ms
        self._n = n + 1

    # -- background ----------------------------------------------------------------------
    def latencies(self) -> np.ndarray:
        """The ring's latencies, oldest first."""
        n, buf = self._n, list(self._buf)
        if n < self.window:
            return np.array(buf[:n])
        i = n % self.window
        return np.array(buf[i:] + buf[:i])

    def update(self, force: bool = False) -> TrendResult:
        """Test the ring for an upward trend when enough new calls arrived; cache and return the result."""
        with self._lock:
            n = self._n
            if n < self.min_calls or (not force and n - self._tested_n < max(16, self.window // 8)
                                      and self.result.calls):
                return self.result
            self._tested_n = n
            self.result = dataclasses.replace(self.test(self.latencies()), at_call=n)
            self.tests += 1
            return self.result

    def test(self, lat: np.ndarray) -> TrendResult:
        """The trend test on latencies in call order (see the module docstring)."""
        m = len(lat)
        b = max(1, m // self.blocks)
        k = m // b
        med = np.median(np.asarray(lat[m - k * b:], dtype=np.float64).reshape(k, b), axis=1)
        _, p = mann_kendall(med)
        slope, intercept = theil_sen(med)
        return TrendResult(calls=k * b, rising=bool(p <= self.alpha and slope > 0.0), p_value=p,
                           slope_ms_per_100_calls=100.0 * slope / b, start_ms=intercept,
                           end_ms=intercept + slope * (k - 1), alpha=self.alpha, block_calls=b,
                           tested_at=time.time())

    # -- read side -----------------------------------------------------------------------
    def describe(self) -> str:
        """One sentence on the last test, for a check reason."""
        r = self.result
        if not r.calls:
            return f"no trend test yet ({self._n} of the {self.min_calls} calls it needs)"
        level = f"Mann-Kendall on {r.calls // r.block_calls} medians of {r.block_calls} calls, p={r.p_value:.2g}, " \
                f"false-alarm level {r.alpha:g}"
        trend = f"{r.slope_ms_per_100_calls:+.2f} ms per 100 calls (Theil-Sen; {r.start_ms:.2f} -> {r.end_ms:.2f} ms)"
        if r.rising:
            return f"the model's own latency is rising: {trend} over the last {r.calls} calls ({level})"
        return f"no rising latency trend over the last {r.calls} calls: {trend} ({level})"
