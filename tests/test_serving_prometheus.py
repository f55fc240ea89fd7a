"""The Prometheus exporter component: counters per call, gauges from health and stats, bounded labels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from guarded_serving import Component, ConfigError, Guard
from guarded_serving.health import CheckResult
from guarded_serving.keys import EDGE_P_VALUES, EDGE_VERDICT, FEATURES, OUTCOME
from guarded_serving.serving.prometheus import PrometheusMetrics
from guarded_serving.errors import RejectedInputError


class FakeEdge(Component):
    """Scores rows: rows whose first value is negative are flagged; a call with a value < -100 is rejected."""

    name = "fake_edge"
    provides = (EDGE_P_VALUES, EDGE_VERDICT)
    needs = (FEATURES,)

    def before_call(self, call):
        x = call.inputs
        p = np.where(x[:, 0] < 0, 0.001, 0.5)
        call.state[EDGE_P_VALUES] = p
        rows = np.flatnonzero(p < 0.01)
        if len(rows):
            call.state[EDGE_VERDICT] = {"flagged_rows": rows.tolist()}
            call.flag()
            if (x[:, 0] < -100).any():
                raise RejectedInputError("out of distribution", details=call.state[EDGE_VERDICT])

    def stats(self):
        return {"fpr": 0.01, "calls": 0}


class Withhold(Component):
    """Withholds every flagged call's answer in after_call (like an output check)."""

    name = "withhold"
    provides = (OUTCOME,)

    def after_call(self, call):
        if call.flagged and call.error is None:
            raise RejectedInputError("answer withheld")


class Status(Component):
    """A check whose status the test sets."""

    name = "status"

    def __init__(self):
        self.status = "ok"

    def checks(self):
        return (CheckResult("custom.thing", self.status, "set by the test"),)


def value(registry, name, **labels):
    v = registry.get_sample_value(name, {"model": "m", "version": "1", **labels})
    return v


def make(slo_ms=1000.0, components=(), **kw):
    """A guard with the exporter on a fresh registry. Not watched: no gauge worker starts, and
    tests that need gauges call ``exp.watch(guard)`` after the start and ``exp.refresh()`` themselves."""
    reg = CollectorRegistry()
    exp = PrometheusMetrics(registry=reg, interval_s=3600)
    guard = Guard(name="m", version="1", latency_slo_ms=slo_ms, n_features=2,
                  components=[*components, exp], **kw)

    @guard
    def predict(x):
        if x[0][1] == 99:
            raise RuntimeError("boom")
        return [0] * len(x)

    return reg, exp, guard, predict


class TestCounters:
    def test_nothing_is_registered_before_the_guard_starts(self):
        """Metrics are created in start() (in the worker), never when the exporter or guard is built."""
        reg, _, guard, _ = make()
        assert not list(reg.collect())
        guard.start()
        assert value(reg, "guard_calls_total", outcome="ok") == 0.0
        guard.stop()

    def test_calls_are_counted_by_outcome(self):
        """ok, error and invalid_input calls each increment their own series, and the histogram counts them."""
        reg, _, guard, predict = make()
        predict([[1.0, 2.0]])
        predict([[1.0, 2.0], [3.0, 4.0]])
        with pytest.raises(RuntimeError):
            predict([[1.0, 99.0]])
        with pytest.raises(Exception):
            predict([[1.0]])  # wrong feature count: invalid_input
        assert value(reg, "guard_calls_total", outcome="ok") == 2.0
        assert value(reg, "guard_calls_total", outcome="error") == 1.0
        assert value(reg, "guard_calls_total", outcome="invalid_input") == 1.0
        assert value(reg, "guard_call_duration_seconds_count", outcome="ok") == 2.0
        assert value(reg, "guard_call_duration_seconds_bucket", outcome="ok", le="+Inf") == 2.0
        guard.stop()

    def test_the_request_paths_direct_increments_give_the_public_apis_series(self):
        """after_call increments prometheus_client's value objects directly (a third of its cost); the
        series, every bucket and the sum included, are those Counter.inc/Histogram.observe would give."""
        from guarded_serving.call import Call

        samples = {}
        for fast in (True, False):
            reg, exp, guard, _ = make()
            guard.start()
            assert exp._fast is not None  # this prometheus_client's layout is the one the fast path reads
            if not fast:
                exp._fast = None
            for i, ms in enumerate([0.2, 0.5, 3.0, 20.0, 1000.0, 1000.0001, 7000.0, 0.0]):
                call = Call((), {}, None, None, None)
                call.outcome, call.latency_ms = ("ok", "error")[i % 2], ms
                exp.after_call(call)
            samples[fast] = sorted((m.name, s.name, tuple(sorted(s.labels.items())), s.value)
                                   for m in reg.collect() for s in m.samples if not s.name.endswith("_created"))
            guard.stop()
        assert samples[True] == samples[False]
        assert value(reg, "guard_call_duration_seconds_bucket", outcome="ok", le="1.0") == 3.0  # cumulative: 0.2, 3 and 1000 ms (<= 1 s)

    def test_slo_violations_are_counted_and_the_slo_is_a_bucket(self):
        """A call over the budget increments guard_slo_violations_total; the SLO is an exact bucket bound."""
        reg, _, guard, predict = make(slo_ms=1e-6)
        predict([[1.0, 2.0]])
        predict([[1.0, 2.0]])
        assert value(reg, "guard_slo_violations_total") == 2.0
        assert value(reg, "guard_slo_latency_seconds") == pytest.approx(1e-9)
        assert value(reg, "guard_slo_target") == 0.99
        guard.stop()

    def test_edge_rows_flags_and_rejections(self):
        """Scored rows, flagged rows, flagged calls and rejected calls come from the edge keys."""
        reg, _, guard, predict = make(components=[FakeEdge()])
        predict([[1.0, 2.0], [-1.0, 2.0], [-2.0, 2.0]])
        with pytest.raises(RejectedInputError):
            predict([[-500.0, 2.0]])
        assert value(reg, "guard_edge_rows_total") == 4.0
        assert value(reg, "guard_edge_flagged_rows_total") == 3.0
        assert value(reg, "guard_edge_flagged_calls_total") == 2.0
        assert value(reg, "guard_edge_rejected_calls_total") == 1.0
        assert value(reg, "guard_calls_total", outcome="rejected") == 1.0
        guard.stop()

    def test_an_answer_withheld_later_is_rejected_but_not_an_edge_rejection(self):
        """A flagged call whose answer an after_call hook withholds counts as rejected, not as rejected by
        the edge-case detector; the exporter runs after the hook (it needs OUTCOME)."""
        reg, _, guard, predict = make(components=[FakeEdge(), Withhold()])
        with pytest.raises(RejectedInputError):
            predict([[-1.0, 2.0]])
        assert value(reg, "guard_calls_total", outcome="rejected") == 1.0
        assert value(reg, "guard_edge_flagged_calls_total") == 1.0
        assert value(reg, "guard_edge_rejected_calls_total") == 0.0
        guard.stop()

    def test_labels_stay_bounded(self):
        """Many calls with different inputs add no series: no label per request or row."""
        reg, exp, guard, predict = make(components=[FakeEdge()])
        predict([[1.0, 2.0]])
        exp.watch(guard).refresh()
        before = generate_latest(reg).decode().count("\n")
        rng = np.random.default_rng(0)
        for _ in range(200):
            predict(rng.normal(size=(int(rng.integers(1, 5)), 2)).tolist())
        exp.refresh()
        after = generate_latest(reg).decode().count("\n")
        assert after == before
        guard.stop()


class TestGauges:
    def test_check_status_follows_health(self):
        """guard_check_status is 0 for ok, 1 degraded, 2 failing, one series per check name."""
        st = Status()
        reg, exp, guard, _ = make(components=[st])
        guard.start()
        exp.watch(guard)
        for status, expected in (("ok", 0), ("degraded", 1), ("failing", 2), ("unavailable", 0)):
            st.status = status
            exp.refresh()
            assert value(reg, "guard_check_status", check="custom.thing") == expected
        assert value(reg, "guard_check_status", check="latency_slo") == 0
        guard.stop()

    def test_burn_rate_worker_calls_and_readiness(self):
        """The guard's burn rate per window, this worker's call count, and readiness (0 once a gating check
        fails: here the SLO, with slo_gates_readiness)."""
        reg, exp, guard, predict = make(slo_ms=1e-6, min_window_calls=1, slo_gates_readiness=True)
        guard.start()
        exp.watch(guard).refresh()
        assert value(reg, "guard_ready") == 1
        for _ in range(3):
            predict([[1.0, 2.0]])
        exp.refresh()
        assert value(reg, "guard_worker_calls") == 3
        assert value(reg, "guard_slo_burn_rate", window="300s") == pytest.approx(100.0)
        assert value(reg, "guard_error_rate", window="300s") == 0.0
        assert value(reg, "guard_check_status", check="latency_slo") == 2
        assert value(reg, "guard_ready") == 0
        guard.stop()

    def test_drift_and_sequential_gauges(self):
        """Per-feature p-values and effect sizes and the martingale's evidence come from drift stats."""
        reg, exp, guard, _ = make()
        guard.start()
        stats = {"calls": 0, "drift": {
            "window_rows": 500,
            "features": {"a": {"p_value": 1e-9, "effect": 0.8, "drifted": True},
                         "b": {"p_value": 0.4, "effect": 0.01, "drifted": False},
                         "c": {"p_value": float("nan"), "effect": float("nan"), "drifted": False}},
            "sequential": {"n": 10, "log10_capital": 2.5, "threshold_log10": 2.0, "alarm": True}}}
        exp.watch(SimpleNamespace(health=guard.health, stats=lambda: stats))  # anything with health() and stats()
        exp.refresh()
        assert value(reg, "guard_drift_p_value", feature="a") == 1e-9
        assert value(reg, "guard_drift_effect_size", feature="b") == 0.01
        assert value(reg, "guard_drift_p_value", feature="c") is None
        assert value(reg, "guard_drift_features_drifted") == 1
        assert value(reg, "guard_drift_window_rows") == 500
        assert value(reg, "guard_drift_sequential_log10_evidence") == 2.5
        assert value(reg, "guard_drift_sequential_alarm") == 1
        guard.stop()

    def test_the_gauge_worker_runs_in_the_background(self):
        """start() starts a PeriodicWorker that refreshes the gauges; stop() ends it."""
        from guarded_serving.testing import wait_until

        reg = CollectorRegistry()
        exp = PrometheusMetrics(registry=reg, interval_s=0.05)
        guard = Guard(name="m", version="1", components=[exp])
        exp.watch(guard)
        guard.start()
        assert wait_until(lambda: guard.stats()["prometheus"]["refreshes"] >= 1, 10, 0.05)
        assert value(reg, "guard_ready") == 1
        guard.stop()
        assert exp._worker is None


class TestConfig:
    def test_bad_interval_is_a_config_error(self):
        """A non-positive refresh interval is refused when the guard is built."""
        with pytest.raises(ConfigError, match="interval_s"):
            Guard(name="m", components=[PrometheusMetrics(interval_s=0)])
