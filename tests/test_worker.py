"""PeriodicWorker: periodic runs, exception isolation with a counted and reported error, backoff,
weak ownership, and stop with a join timeout."""

from __future__ import annotations

import gc
import threading
import time

import pytest

from guarded_serving import PeriodicWorker
from guarded_serving.testing import wait_until


class Counter:
    def __init__(self, fail_first: int = 0, exc: type[Exception] = OSError):
        self.n = 0
        self.fail_first = fail_first
        self.exc = exc

    def tick(self):
        self.n += 1
        if self.n <= self.fail_first:
            raise self.exc(f"failure {self.n}")


def test_runs_periodically_and_stops():
    """The task runs again and again; stop() ends the thread."""
    c = Counter()
    w = PeriodicWorker("t", c.tick, 0.01).start()
    assert wait_until(lambda: c.n >= 5, timeout=10)
    assert w.running and w.stop() and not w.running
    n = c.n
    time.sleep(0.05)
    assert c.n == n


def test_exception_isolated_counted_and_reported():
    """A raising task never kills the thread; errors are counted and shown as a degraded check."""
    c = Counter(fail_first=3)
    w = PeriodicWorker("flaky", c.tick, 0.01, backoff_max_s=0.02)
    assert w.run_once() is False
    check = w.check("flaky.check")
    assert check is not None and check.status == "degraded" and "OSError: failure 1" in check.reason
    assert not check.affects_readiness
    w.start()
    assert wait_until(lambda: w.runs >= 2, timeout=10)
    assert w.errors == 3 and w.consecutive_errors == 0 and w.check("flaky.check") is None
    w.stop()


def test_backoff_doubles_up_to_the_cap():
    """Consecutive failures double the wait, up to backoff_max_s; no jitter when jitter=0."""
    w = PeriodicWorker("b", Counter(fail_first=100).tick, 1.0, jitter=0.0, backoff_max_s=5.0)
    waits = []
    for _ in range(5):
        w.run_once()
        waits.append(w.next_wait())
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_spreads_waits():
    """With jitter the wait varies within [1-j, 1+j] of the interval."""
    w = PeriodicWorker("j", Counter().tick, 1.0, jitter=0.2)
    waits = {round(w.next_wait(), 6) for _ in range(50)}
    assert len(waits) > 10 and all(0.8 <= x <= 1.2 for x in waits)


def test_callable_interval_and_run_first():
    """interval_s may be a callable; run_first runs before the first wait."""
    c = Counter()
    w = PeriodicWorker("c", c.tick, lambda: 3600.0, run_first=True).start()
    assert wait_until(lambda: c.n == 1, timeout=10)
    assert w.stop(timeout=5)


def test_owner_dropped_without_stop_lets_thread_end():
    """With weak=True a bound-method task is held weakly: dropping its owner ends the thread."""
    c = Counter()
    w = PeriodicWorker("weak", c.tick, 0.01, weak=True).start()
    t = w._thread
    del c, w
    gc.collect()
    t.join(10)
    assert not t.is_alive()


def test_stop_returns_false_when_the_task_hangs():
    """stop() joins for at most the timeout and says whether the thread ended."""
    release = threading.Event()
    w = PeriodicWorker("hang", lambda: release.wait(10), 0.01, run_first=True).start()
    time.sleep(0.05)
    assert w.stop(timeout=0.1) is False
    release.set()


def test_on_stop_runs_in_the_worker():
    """on_stop runs once in the worker thread when it ends (closing what it owns)."""
    seen = []
    w = PeriodicWorker("s", lambda: None, 3600.0, on_stop=lambda: seen.append(threading.current_thread().name))
    w.start()
    assert w.stop()
    assert seen == ["guard-s"]


@pytest.mark.parametrize("bad", [0, -1, "x"])
def test_bad_interval_names_it(bad):
    """A bad interval is refused with the value named."""
    with pytest.raises(ValueError, match="interval_s="):
        PeriodicWorker("x", lambda: None, bad)


def test_worker_dropped_without_stop_lets_thread_end():
    """A worker dropped without stop() (held strongly by nothing) ends its thread."""
    c = Counter()
    w = PeriodicWorker("dropped", c.tick, 0.01).start()
    t = w._thread
    del w
    gc.collect()
    t.join(10)
    assert not t.is_alive()


def test_weak_needs_a_bound_method():
    """weak=True with a plain function is refused (it would never run)."""
    with pytest.raises(ValueError, match="bound method"):
        PeriodicWorker("w", lambda: None, 1.0, weak=True)
