"""Latency SLO accounting: rolling quantiles and error-budget burn rates.

State lives in one worker process (BentoML runs one per worker); the
numbers describe that worker's calls.

The request path does O(1) work per call: it judges the call against the SLO and
appends ``(latency, outcome, flagged, time)`` to a queue. The queue is accounted in
batches (one slot of a ring of recent latencies and three counters in a ring of
one-second buckets per call) by whoever reads (``snapshot()`` drains it first, so a
reader always sees every call recorded before it), or by the request path once
every ``DRAIN_AT`` calls. Quantiles and burn rates are computed when read, off the
request path.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["LatencyTracker", "LatencySnapshot"]

#: calls queued before the request path accounts them itself (when no reader has drained them)
DRAIN_AT = 256
_UNTIMED = frozenset({"invalid_input", "rejected"})  # the model never ran: counted apart, outside the SLO


@dataclass(frozen=True)
class LatencySnapshot:
    calls: int
    errors: int
    invalid_inputs: int
    rejected: int
    flagged: int
    slo_violations: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    window_calls: tuple[int, int]
    window_violations: tuple[int, int]
    window_errors: tuple[int, int]
    burn_rates: tuple[float | None, float | None]
    error_rates: tuple[float | None, float | None]


class LatencyTracker:
    """Per-call latency bookkeeping against a latency SLO.

    Parameters
    ----------
    slo_ms : float
        Latency budget of one call.
    slo_target : float
        Fraction of calls that must meet it; the error budget is ``1 - slo_target``.
    windows_s : tuple of int
        Short and long burn-rate windows in seconds.
    quantile_window : int
        How many recent latencies are kept for quantiles.
    clock : callable, default=time.monotonic
        Seconds clock for the bucket ring (injectable for tests).

    The counters (``calls``, ``errors``, ``slo_violations``, ...) lag the calls recorded by up to
    ``DRAIN_AT`` until the next :meth:`drain`; read them through :meth:`snapshot`, which drains first.
    """

    def __init__(self, *, slo_ms: float, slo_target: float, windows_s: tuple[int, int],
                 quantile_window: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        self.slo_ms = float(slo_ms)
        self.slo_target = float(slo_target)
        self.windows_s = windows_s
        self._clock = clock
        self._lock = threading.Lock()
        self._lat = [0.0] * quantile_window
        self._n = 0  # latencies written into the ring, ever
        self.calls = 0
        self.errors = 0
        self.invalid_inputs = 0
        self.rejected = 0
        self.flagged = 0
        self.slo_violations = 0
        nb = windows_s[1] + 1
        self._nb = nb
        self._tot = [0] * nb
        self._bad = [0] * nb
        self._err = [0] * nb
        self._sec = int(clock())
        self._pending: deque[tuple[float, str, bool, float]] = deque()

    # -- request path ---------------------------------------------------------------
    def _advance(self, sec: int) -> int:
        """Move the bucket ring to ``sec``; zero the buckets skipped. Lock held."""
        cur = self._sec
        if sec > cur:
            nb = self._nb
            for s in range(cur + 1, min(sec, cur + nb) + 1):
                i = s % nb
                self._tot[i] = 0
                self._bad[i] = 0
                self._err[i] = 0
            self._sec = sec
        return self._sec % self._nb

    def record(self, latency_ms: float, outcome: str = "ok", flagged: bool = False) -> bool:
        """Account one call; return whether it violated the latency SLO.

        ``outcome`` is ``ok``, ``error``, ``invalid_input`` or ``rejected``. Invalid
        and rejected inputs are counted apart and enter neither the SLO nor the
        error rate: the model never ran, they measure the caller. The call is queued
        (one append; thread-safe) and accounted when read or every ``DRAIN_AT`` calls.
        """
        if latency_ms < 0.0:  # time can go backwards on some clocks; never record negative
            latency_ms = 0.0
        pending = self._pending
        pending.append((latency_ms, outcome, flagged, self._clock()))
        if len(pending) >= DRAIN_AT:
            self.drain()
        return latency_ms > self.slo_ms and outcome not in _UNTIMED

    def drain(self) -> None:
        """Account the queued calls (any thread; :meth:`snapshot` calls it first)."""
        pending = self._pending
        if not pending:
            return
        with self._lock:
            slo, lat, size, nb = self.slo_ms, self._lat, len(self._lat), self._nb
            tot, bad, err = self._tot, self._bad, self._err
            pop = pending.popleft
            while True:
                try:  # popped one by one: a call queued meanwhile by another thread is taken now or next time
                    latency_ms, outcome, flagged, t = pop()
                except IndexError:
                    break
                self.calls += 1
                if flagged:
                    self.flagged += 1
                if outcome in _UNTIMED:
                    if outcome == "invalid_input":
                        self.invalid_inputs += 1
                    else:
                        self.rejected += 1
                    continue
                lat[self._n % size] = latency_ms
                self._n += 1
                sec = int(t)
                if sec >= self._sec:
                    i = self._advance(sec)
                elif sec > self._sec - nb:  # queued out of order (threads, or a reader between): its own second
                    i = sec % nb
                else:  # older than the ring: counted, in no window
                    i = -1
                if i >= 0:
                    tot[i] += 1
                if latency_ms > slo:
                    self.slo_violations += 1
                    if i >= 0:
                        bad[i] += 1
                if outcome == "error":
                    self.errors += 1
                    if i >= 0:
                        err[i] += 1

    # -- read side ------------------------------------------------------------------
    def snapshot(self) -> LatencySnapshot:
        """Counters, quantiles and windowed rates (every call recorded so far). Copies under the lock,
        computes outside it."""
        self.drain()
        with self._lock:
            n = min(self._n, len(self._lat))
            lat = np.array(self._lat[:n]) if n else None
            i_now = self._advance(int(self._clock()))
            tot, bad, err_b = np.array(self._tot), np.array(self._bad), np.array(self._err)
            calls, errors, invalid, viol = self.calls, self.errors, self.invalid_inputs, self.slo_violations
            rejected, flagged = self.rejected, self.flagged
        sums = []
        for w in self.windows_s:
            idx = (i_now - np.arange(w)) % self._nb
            sums.append((int(tot[idx].sum()), int(bad[idx].sum()), int(err_b[idx].sum())))
        if lat is not None:
            p50, p95, p99 = (float(v) for v in np.quantile(lat, [0.5, 0.95, 0.99]))
            mx = float(lat.max())
        else:
            p50 = p95 = p99 = mx = None
        budget = 1.0 - self.slo_target
        burn = tuple((b / t) / budget if t else None for t, b, _ in sums)
        err = tuple(e / t if t else None for t, _, e in sums)
        return LatencySnapshot(
            calls=calls, errors=errors, invalid_inputs=invalid, rejected=rejected, flagged=flagged,
            slo_violations=viol,
            p50_ms=p50, p95_ms=p95, p99_ms=p99, max_ms=mx,
            window_calls=(sums[0][0], sums[1][0]), window_violations=(sums[0][1], sums[1][1]),
            window_errors=(sums[0][2], sums[1][2]), burn_rates=burn, error_rates=err,  # type: ignore[arg-type]
        )
