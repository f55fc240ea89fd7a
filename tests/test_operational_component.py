"""OperationalHealth inside a real Guard: checks, span attributes, latency causes, transitions, readiness."""

from __future__ import annotations

import gc
import logging
import time

import pytest

from guarded_serving import ConfigError, Guard
from guarded_serving.operational.component import OperationalHealth
from guarded_serving.operational.hardware import StaticProvider
from guarded_serving.testing import free_port, in_memory_tracer_provider


def _guard(component, **kw):
    provider, exporter = in_memory_tracer_provider()
    g = Guard(name="op", operational=False, components=[component], tracer_provider=provider, **kw)
    return g, exporter


def test_default_guard_reports_real_hardware_checks():
    """A guard built with defaults samples this machine and shows hardware and GC checks in health()."""
    g = Guard(name="op", gpu=False)
    g.start()
    try:
        checks = g.health()["checks"]
    finally:
        g.stop()
    assert {"hardware.memory", "hardware.disk", "hardware.fds", "hardware.temperature", "runtime.gc"} <= set(checks)
    assert checks["runtime.gc"]["affects_readiness"] is False


def test_span_carries_the_cached_hardware_snapshot():
    """Spans get guard.hardware.* from the cache: anomalous ones always, every one with span_detail='full'."""
    def spans(**kw):
        op = OperationalHealth(providers=[StaticProvider({"cpu": {"percent": 12.0, "count": 2, "load_1m": 0.5,
                                                                  "load_per_cpu": 0.25}})])
        g, exp = _guard(op, **kw)
        f = g(lambda x, fail=False: 1 / 0 if fail else 1)
        try:
            f([[1.0]])
            try:
                f([[1.0]], fail=True)
            except ZeroDivisionError:
                pass
        finally:
            g.stop()
        return exp.get_finished_spans()

    normal, failed = spans()
    assert "guard.hardware.cpu_percent" not in normal.attributes  # compact: context on anomalies only
    assert failed.attributes["guard.hardware.cpu_percent"] == 12.0
    assert failed.attributes["guard.health.operational"] == "ok"
    normal, _ = spans(span_detail="full")
    assert normal.attributes["guard.hardware.cpu_percent"] == 12.0


def test_slow_call_overlapping_a_gc_pause_names_gc_as_cause():
    """A call that breached the SLO while a real collection ran carries guard.latency.cause=gc_pause."""
    op = OperationalHealth(hardware_interval_s=None)
    g, exp = _guard(op, latency_slo_ms=0.001)

    @g
    def predict(x):
        junk = [[i, {}] for i in range(50_000)]
        for a in junk:
            a[1]["self"] = a
        del junk
        gc.collect()
        return 1

    try:
        predict([[1.0]])
        gc_check = g.health()["checks"]["runtime.gc"]
    finally:
        g.stop()
    (span,) = exp.get_finished_spans()
    assert span.attributes["guard.slo.violated"] is True
    assert span.attributes["guard.latency.cause"] == "gc_pause"
    assert span.attributes["guard.gc.pause_ms"] > 0
    assert g.stats()["operational"]["slow_calls_by_cause"] == {"gc_pause": 1}
    assert gc_check["status"] == "degraded"


def test_slow_call_under_cpu_saturation_names_it():
    """Without a GC pause, a slow call under a saturated CPU snapshot is attributed to CPU saturation."""
    op = OperationalHealth(gc_tracking=False, providers=[StaticProvider(
        {"cpu": {"percent": 100.0, "count": 2, "load_1m": 6.0, "load_per_cpu": 3.0},
         "memory": {"available_percent": 2.0}})])
    g, exp = _guard(op, latency_slo_ms=1)
    f = g(lambda x: time.sleep(0.005))
    try:
        f([[1.0]])
    finally:
        g.stop()
    (span,) = exp.get_finished_spans()
    assert span.attributes["guard.latency.cause"] == "cpu_saturation"
    assert list(span.attributes["guard.latency.causes"]) == ["cpu_saturation", "memory_pressure"]


def test_fast_call_gets_no_cause():
    """A call inside the SLO carries no latency cause."""
    g, exp = _guard(OperationalHealth(hardware_interval_s=None), latency_slo_ms=10_000)
    g(lambda x: 1)([[1.0]])
    g.stop()
    (span,) = exp.get_finished_spans()
    assert "guard.latency.cause" not in span.attributes


def test_transitions_are_logged_and_become_span_events(caplog):
    """ok -> failing -> ok is logged with the reason and attached as events to the next recorded span."""
    hw = StaticProvider({"disk": {"/models": {"free_percent": 50.0, "free_mb": 5000}}})
    op = OperationalHealth(providers=[hw], hardware_interval_s=3600, gc_tracking=False)
    g, exp = _guard(op)
    f = g(lambda x: 1)
    g.start()
    try:
        with caplog.at_level(logging.INFO, logger="guarded_serving.health"):
            hw.set({"disk": {"/models": {"free_percent": 1.0, "free_mb": 10}}})
            op.sampler.sample()
            assert g.health()["ready"] is False
            f([[1.0]])
            hw.set({"disk": {"/models": {"free_percent": 50.0, "free_mb": 5000}}})
            op.sampler.sample()
            f([[1.0]])
    finally:
        g.stop()
    msgs = [r for r in caplog.records if r.name == "guarded_serving.health"]
    assert [(r.guard_from, r.guard_to, r.levelname) for r in msgs] == [("ok", "failing", "WARNING"),
                                                                      ("failing", "ok", "INFO")]
    assert "/models" in msgs[0].guard_reason
    s1, s2 = exp.get_finished_spans()
    (e1,), (e2,) = s1.events, s2.events
    assert e1.name == "guard.health.transition" and e1.attributes["guard.health.to"] == "failing"
    assert e1.attributes["guard.health.check"] == "hardware.disk"
    assert e2.attributes["guard.health.from"] == "failing" and e2.attributes["guard.health.to"] == "ok"
    assert g.stats()["operational"]["transitions"] == 2


def test_readiness_policy_per_check():
    """A failing probe makes the guard not ready, unless the policy exempts that check."""
    port = free_port()  # nothing listens there
    probe = {"name": "db", "tcp": f"127.0.0.1:{port}", "failures_to_fail": 1}
    for policy, ready in (({}, False), ({"downstream.db": False}, True)):
        op = OperationalHealth(hardware_interval_s=None, probes=[probe], readiness_policy=policy)
        g, _ = _guard(op)
        g.start()
        try:
            op.prober.run_due(force=True)
            h = g.health()
        finally:
            g.stop()
        assert h["checks"]["downstream.db"]["status"] == "failing"
        assert h["ready"] is ready and h["status"] == ("failing" if not ready else "degraded")


def test_dependencies_from_config_are_checked_at_start():
    """A pinned version mismatch given in GuardConfig fails the guard at start, before any request."""
    g = Guard(name="op", hardware_interval_s=None, dependencies={"numpy": "0.0.1"}, gc_tracking=False)
    g.start()
    try:
        c = g.health()["checks"]["dependency.numpy"]
        ready = g.is_ready()
    finally:
        g.stop()
    assert c["status"] == "failing" and "0.0.1" in c["reason"] and ready is False


@pytest.mark.parametrize("kw", [
    {"hardware_interval_s": 0}, {"hardware_thresholds": {"nope": 1}}, {"gpu": "yes"},
    {"dependencies": "numpy"}, {"probes": [{"name": "x"}]}, {"readiness_policy": {"x": "no"}},
    {"probes": [{"name": "a", "tcp": "h:1"}, {"name": "a", "tcp": "h:2"}]},
])
def test_bad_operational_config_is_rejected(kw):
    """Invalid operational settings raise ConfigError at construction."""
    with pytest.raises(ConfigError):
        Guard(name="op", **kw)
