"""Health: check aggregation, readiness gating, and the guard's built-in SLO and error checks."""

import json

import pytest

from guarded_serving import CheckResult, Component, Guard
from guarded_serving.health import aggregate


def r(name, status, affects=True):
    return CheckResult(name, status, f"{name} is {status}", {"v": 1}, affects)


class TestAggregate:
    def test_worst_status_wins(self):
        """The overall status is the most severe check's."""
        rep = aggregate([r("a", "ok"), r("b", "degraded"), r("c", "ok")])
        assert rep["status"] == "degraded" and rep["ready"] is True

    def test_unavailable_is_not_unhealthy(self):
        """A check with no reading on this machine leaves the service ok."""
        assert aggregate([r("hardware.temp", "unavailable")])["status"] == "ok"

    def test_failing_makes_not_ready(self):
        """A failing check makes the report failing and not ready."""
        rep = aggregate([r("a", "ok"), r("b", "failing")])
        assert rep["status"] == "failing" and rep["ready"] is False

    def test_readiness_policy_limits_gating_checks(self):
        """Only checks named in readiness_checks (or their children) can make the service not ready."""
        rep = aggregate([r("hardware.gpu0.temp", "failing")], readiness_checks=("latency_slo",))
        assert rep["status"] == "degraded" and rep["ready"] is True
        assert rep["checks"]["hardware.gpu0.temp"]["status"] == "failing"
        rep = aggregate([r("hardware.gpu0.temp", "failing")], readiness_checks=("hardware",))
        assert rep["ready"] is False

    def test_check_can_opt_out_of_readiness(self):
        """A check built with affects_readiness=False never gates readiness."""
        assert aggregate([r("x", "failing", affects=False)])["ready"] is True

    def test_bad_status_rejected(self):
        """A check with an unknown status is a programming error, caught at construction."""
        with pytest.raises(ValueError, match="status='bad'"):
            CheckResult("x", "bad", "")


class TestGuardChecks:
    def test_report_is_json_serialisable_with_all_checks(self):
        """health() is JSON-serialisable and lists the built-in checks and component checks."""
        class Extra(Component):
            name = "extra"

            def checks(self):
                yield CheckResult("extra.thing", "ok", "fine", {"n": 1})

        g = Guard(name="m", components=[Extra()])
        rep = json.loads(json.dumps(g.health()))
        assert set(rep["checks"]) == {"latency_slo", "model_errors", "integrity.manifest", "extra.thing"}
        assert rep["status"] == "ok" and rep["model"] == {"name": "m", "version": "0"}

    def test_few_calls_are_not_judged(self):
        """Below min_window_calls even 100% slow calls leave the SLO check ok."""
        g = Guard(name="m", latency_slo_ms=1, min_window_calls=20)
        for _ in range(5):
            g.component("slo").tracker.record(50.0)
        assert g.health()["checks"]["latency_slo"]["status"] == "ok"

    def test_burn_rate_degrades_then_fails(self):
        """A moderate burn degrades the SLO check; a fast burn over both windows fails it (and, when the
        SLO is set to gate readiness, makes the service not ready)."""
        g = Guard(name="m", latency_slo_ms=10, min_window_calls=10, slo_gates_readiness=True)
        for i in range(100):
            g.component("slo").tracker.record(50.0 if i < 5 else 1.0)  # 5% -> 5x burn
        c = g.health()["checks"]["latency_slo"]
        assert c["status"] == "degraded" and "5 of 100 calls" in c["reason"]
        for _ in range(100):
            g.component("slo").tracker.record(50.0)  # 105/200 -> 52x burn
        rep = g.health()
        assert rep["checks"]["latency_slo"]["status"] == "failing" and not rep["ready"]
        assert g.is_ready() is False

    def test_error_rate_check(self):
        """Errors over the short window degrade, then fail, the model_errors check."""
        g = Guard(name="m", min_window_calls=10)
        for i in range(100):
            g.component("slo").tracker.record(1.0, "error" if i < 10 else "ok")
        assert g.health()["checks"]["model_errors"]["status"] == "degraded"
        for _ in range(100):
            g.component("slo").tracker.record(1.0, "error")
        assert g.health()["checks"]["model_errors"]["status"] == "failing"

    def test_check_that_raises_is_reported(self):
        """A component whose checks() raises shows up degraded, and health() still answers."""
        class Bad(Component):
            name = "bad"

            def checks(self):
                raise OSError("sensor gone")

        rep = Guard(name="m", components=[Bad()]).health()
        assert rep["checks"]["bad"]["status"] == "degraded" and "sensor gone" in rep["checks"]["bad"]["reason"]


class TestRequestTime:
    def test_budget_held_to_the_callers_wait(self):
        """With arrivals marked, a fast model behind a long queue breaks the budget; stats show both times."""
        import time as _time

        from guarded_serving.arrival import mark_arrival, reset_arrival

        g = Guard(name="m", latency_slo_ms=50, min_window_calls=5, operational=False)
        f = g.wrap(lambda x: x)
        for _ in range(10):
            token = mark_arrival(_time.perf_counter_ns() - 80_000_000)  # arrived 80 ms ago, then queued
            try:
                f(1)
            finally:
                reset_arrival(token)
        s = g.stats()
        assert s["slo_violations"] == 10 and s["latency_ms"]["measure"] == "request"
        assert s["latency_ms"]["p50"] >= 80 and s["model_latency_ms"]["p50"] < 50
        check = g.health()["checks"]["latency_slo"]
        assert check["status"] != "ok" and "queueing and parsing" in check["reason"]

    def test_model_measure_ignores_queueing(self):
        """slo_measure='model' holds the budget to the model call alone."""
        import time as _time

        from guarded_serving.arrival import mark_arrival, reset_arrival

        g = Guard(name="m", latency_slo_ms=50, slo_measure="model", operational=False)
        token = mark_arrival(_time.perf_counter_ns() - 80_000_000)
        try:
            g.wrap(lambda x: x)(1)
        finally:
            reset_arrival(token)
        assert g.stats()["slo_violations"] == 0 and g.stats()["latency_ms"]["measure"] == "model"

    def test_without_arrivals_the_model_time_is_used(self):
        """Outside a serving integration the budget applies to the model time, as before."""
        g = Guard(name="m", latency_slo_ms=50, operational=False)
        g.wrap(lambda x: x)(1)
        assert g.stats()["latency_ms"]["measure"] == "model" and "model_latency_ms" not in g.stats()


def test_failing_slo_does_not_gate_readiness_by_default():
    """A fast burn fails the latency check but leaves the service ready unless slo_gates_readiness is set."""
    g = Guard(name="m", latency_slo_ms=10, min_window_calls=10, operational=False)
    for _ in range(100):
        g.component("slo").tracker.record(50.0)
    rep = g.health()
    assert rep["checks"]["latency_slo"]["status"] == "failing" and rep["ready"] is True
    assert rep["checks"]["latency_slo"]["affects_readiness"] is False
