"""A bounded, concurrent loopback load client (threads + requests), used by the load
tests, the soak and the fault tests.

    result = drive("http://127.0.0.1:3000/predict", payload, seconds=10, concurrency=8)
    result.rps, result.p50_ms, result.p99_ms, result.failures

Every loop is bounded: it stops at ``seconds`` or after ``max_requests``, or when
``stop`` (a threading.Event) is set.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import requests

__all__ = ["LoadResult", "drive"]


@dataclass
class LoadResult:
    """What a load run saw; latencies in milliseconds."""

    seconds: float
    latencies_ms: np.ndarray
    statuses: Counter = field(default_factory=Counter)
    exceptions: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return int(self.statuses.get(200, 0))

    @property
    def failures(self) -> int:
        return sum(n for s, n in self.statuses.items() if s != 200) + sum(self.exceptions.values())

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    @property
    def p50_ms(self) -> float:
        return self.pct(50)

    @property
    def p99_ms(self) -> float:
        return self.pct(99)


def drive(url: str, payload: Any, *, seconds: float, concurrency: int = 8, max_requests: int | None = None,
          stop: threading.Event | None = None, timeout: float = 30.0) -> LoadResult:
    """POST ``payload`` (JSON) to ``url`` from ``concurrency`` threads, flat out, until a bound is hit.

    ``payload`` may be a list of payloads: each thread cycles through them (from its own offset).
    """
    many = payload if isinstance(payload, list) else [payload]
    bodies = [json.dumps(p, allow_nan=True).encode() for p in many]
    headers = {"content-type": "application/json"}
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds
    lock = threading.Lock()
    issued = [0]
    lat: list[list[float]] = [[] for _ in range(concurrency)]
    statuses: Counter = Counter()
    exceptions: Counter = Counter()

    def worker(i: int) -> None:
        mine = lat[i]
        st: Counter = Counter()
        ex: Counter = Counter()
        k = i
        with requests.Session() as s:
            while not stop.is_set() and time.monotonic() < deadline:
                body = bodies[k % len(bodies)]
                k += 1
                if max_requests is not None:
                    with lock:
                        if issued[0] >= max_requests:
                            break
                        issued[0] += 1
                t0 = time.perf_counter()
                try:
                    r = s.post(url, data=body, headers=headers, timeout=timeout)
                    st[r.status_code] += 1
                    if r.status_code == 200:
                        mine.append((time.perf_counter() - t0) * 1000.0)
                except requests.RequestException as e:
                    ex[type(e).__name__] += 1
        with lock:
            statuses.update(st)
            exceptions.update(ex)

    t_start = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + timeout + 5)
    elapsed = time.monotonic() - t_start
    return LoadResult(elapsed, np.array([x for part in lat for x in part]), statuses, exceptions)
