"""LatencyTracker: quantiles in bounded memory, SLO counting, burn rates over windows."""

import numpy as np
import pytest

from guarded_serving.operational.latency import LatencyTracker


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def make(clock=None, **kw):
    args = dict(slo_ms=100.0, slo_target=0.99, windows_s=(60, 600), quantile_window=1000)
    args.update(kw)
    return LatencyTracker(clock=clock or FakeClock(), **args)


class TestQuantiles:
    def test_quantiles_match_numpy(self):
        """p50/p95/p99 equal numpy's quantiles of the recorded latencies."""
        t = make()
        rng = np.random.default_rng(0)
        lat = rng.exponential(10, size=500)
        for v in lat:
            t.record(float(v))
        s = t.snapshot()
        np.testing.assert_allclose([s.p50_ms, s.p95_ms, s.p99_ms], np.quantile(lat, [0.5, 0.95, 0.99]))

    def test_memory_is_bounded_to_recent_calls(self):
        """Only the last `quantile_window` latencies count; the ring does not grow."""
        t = make(quantile_window=100)
        for _ in range(1000):
            t.record(1000.0)
        for _ in range(100):
            t.record(1.0)
        s = t.snapshot()
        assert s.p99_ms == 1.0 and len(t._lat) == 100
        assert s.calls == 1100

    def test_empty_tracker_has_no_quantiles(self):
        """Before any call the quantiles are None, not zero."""
        s = make().snapshot()
        assert s.p50_ms is None and s.calls == 0 and s.burn_rates == (None, None)

    def test_negative_latency_is_clamped(self):
        """A clock that went backwards records 0, never a negative latency."""
        t = make()
        t.record(-5.0)
        assert t.snapshot().max_ms == 0.0


class TestSLO:
    def test_violations_counted_strictly_above_budget(self):
        """Calls over the budget are violations; a call at exactly the budget is not."""
        t = make()
        assert t.record(100.0) is False
        assert t.record(100.1) is True
        assert t.snapshot().slo_violations == 1

    def test_burn_rate_is_violation_rate_over_budget(self):
        """Burn rate = violating fraction / (1 - target): 2% violations on a 99% SLO burns at 2x."""
        t = make()
        for i in range(100):
            t.record(500.0 if i < 2 else 1.0)
        s = t.snapshot()
        assert s.burn_rates[0] == pytest.approx(2.0)
        assert s.burn_rates[1] == pytest.approx(2.0)

    def test_short_window_forgets_old_violations(self):
        """Violations older than the short window leave it but stay in the long window."""
        clock = FakeClock()
        t = make(clock)
        for _ in range(10):
            t.record(500.0)
        clock.t += 120  # past the 60 s window, inside 600 s
        for _ in range(10):
            t.record(1.0)
        s = t.snapshot()
        assert s.window_calls == (10, 20)
        assert s.window_violations == (0, 10)
        assert s.burn_rates[0] == 0.0 and s.burn_rates[1] == pytest.approx(50.0)

    def test_long_gap_clears_every_bucket(self):
        """After a gap longer than the long window, nothing old remains."""
        clock = FakeClock()
        t = make(clock)
        for _ in range(10):
            t.record(500.0, "error")
        clock.t += 10_000
        s = t.snapshot()
        assert s.window_calls == (0, 0) and s.window_errors == (0, 0)
        assert s.errors == 10  # lifetime counters stay

    def test_invalid_and_rejected_do_not_enter_slo(self):
        """Invalid and rejected inputs are counted apart: not in quantiles, SLO or error rate."""
        t = make()
        t.record(900.0, "invalid_input")
        t.record(900.0, "rejected")
        t.record(1.0, "error")
        s = t.snapshot()
        assert (s.invalid_inputs, s.rejected, s.errors, s.slo_violations) == (1, 1, 1, 0)
        assert s.window_calls[0] == 1 and s.max_ms == 1.0
        assert s.error_rates[0] == 1.0


class TestQueuedAccounting:
    def test_calls_are_queued_and_every_one_is_seen_by_the_next_reader(self):
        """record() only queues (the request path's one append); a snapshot accounts every call queued
        before it, in order, each in the one-second bucket of its own time, not the reader's."""
        from guarded_serving.operational.latency import DRAIN_AT

        clock = FakeClock()
        t = make(clock=clock, windows_s=(2, 10))
        assert t.record(150.0) is True and t.record(50.0, "error") is False
        assert t.record(500.0, "invalid_input") is False  # outside the SLO: never a violation
        assert len(t._pending) == 3 and t.calls == 0  # queued, not yet accounted
        clock.t += 5  # the reader comes later: the calls stay in their own second, now outside the short window
        s = t.snapshot()
        assert (s.calls, s.slo_violations, s.errors, s.invalid_inputs) == (3, 1, 1, 1)
        assert s.window_calls == (0, 2) and s.window_violations == (0, 1) and s.window_errors == (0, 1)
        assert not t._pending
        for _ in range(DRAIN_AT):  # nobody reads: the request path accounts a full queue itself
            t.record(1.0)
        assert len(t._pending) == 0 and t.calls == 3 + DRAIN_AT

    def test_a_call_queued_after_a_later_one_counts_in_its_own_second(self):
        """Threads (or a reader between) can queue a call stamped before the ring's current second: it goes
        to its own second's bucket, inside or outside the short window by its own time; one older than
        the ring is counted but in no window."""
        clock = FakeClock(1000.0)
        t = make(clock=clock, windows_s=(2, 10))
        clock.t = 1005.0
        t.snapshot()  # the ring is at second 1005 now
        clock.t = 1002.0
        t.record(150.0)  # stamped 1002: outside the 2 s window (1004-1005), inside the 10 s one
        clock.t = 900.0
        t.record(150.0)  # older than the ring
        clock.t = 1005.0
        s = t.snapshot()
        assert s.calls == 2 and s.slo_violations == 2
        assert s.window_calls == (0, 1) and s.window_violations == (0, 1)

    def test_threads_recording_while_others_read_lose_no_call(self):
        import threading

        t = make(quantile_window=100_000)
        n_threads, per = 4, 5_000
        stop = threading.Event()

        def writer(k):
            for i in range(per):
                t.record(float(i % 200), "error" if i % 7 == 0 else "ok")

        def reader():
            while not stop.is_set():
                t.snapshot()

        r = threading.Thread(target=reader)
        r.start()
        ws = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
        for w in ws:
            w.start()
        for w in ws:
            w.join()
        stop.set()
        r.join()
        s = t.snapshot()
        assert s.calls == n_threads * per
        assert s.errors == n_threads * len(range(0, per, 7))
        assert s.slo_violations == n_threads * sum(1 for i in range(per) if i % 200 > 100)
