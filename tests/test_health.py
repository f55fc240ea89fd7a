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
        assert set(rep["checks"]) == {"latency_slo", "model_errors", "extra.thing"}
        assert rep["status"] == "ok" and rep["model"] == {"name": "m", "version": "0"}

    def test_few_calls_are_not_judged(self):
        """Below min_window_calls even 100% slow calls leave the SLO check ok."""
        g = Guard(name="m", latency_slo_ms=1, min_window_calls=20)
        for _ in range(5):
            g.component("slo").tracker.record(50.0)
        assert g.health()["checks"]["latency_slo"]["status"] == "ok"

    def test_burn_rate_degrades_then_fails(self):
        """A moderate burn degrades the SLO check; a fast burn over both windows fails it."""
        g = Guard(name="m", latency_slo_ms=10, min_window_calls=10)
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
