"""The hardware sampler thread: real providers on this machine, injected ones through the same interface."""

from __future__ import annotations

import threading

from guarded_serving.operational.hardware import PsutilProvider, StaticProvider
from guarded_serving.operational.sampler import HardwareSampler
from guarded_serving.testing import wait_until


def test_real_sampler_caches_snapshots_in_its_thread(tmp_path):
    """With the real psutil provider, the thread keeps replacing the cached snapshot until stopped."""
    seen = []
    done = threading.Event()

    def on_sample(snap):
        seen.append(snap)
        if len(seen) >= 3:
            done.set()

    s = HardwareSampler([PsutilProvider(disk_paths=[tmp_path])], interval_s=0.05, on_sample=on_sample)
    s.start()
    try:
        assert done.wait(30)
    finally:
        s.stop()
    assert not s.running
    snap = s.snapshot
    assert snap is seen[-1] and snap.taken_at > seen[0].taken_at
    names = {c.name for c in snap.checks}
    assert {"hardware.cpu", "hardware.memory", "hardware.disk"} <= names
    assert "guard.hardware.rss_mb" in snap.attributes


def test_injected_readings_change_verdicts_between_samples():
    """Swapping a StaticProvider's readings changes the next sample's verdict."""
    p = StaticProvider({"disk": {"/d": {"free_percent": 50.0, "free_mb": 500}}})
    s = HardwareSampler([p])
    assert s.sample().checks[0].status == "ok"
    p.set({"disk": {"/d": {"free_percent": 0.5, "free_mb": 5}}})
    assert s.sample().checks[0].status == "failing"


def test_a_broken_provider_is_reported_not_fatal():
    """A provider that raises gives a degraded hardware.sampler check; the others still count."""
    class Broken:
        def readings(self):
            raise OSError("sensor bus gone")

    s = HardwareSampler([Broken(), StaticProvider({"memory": {"available_percent": 50.0}})])
    checks = {c.name: c for c in s.sample().checks}
    assert checks["hardware.memory"].status == "ok"
    assert checks["hardware.sampler"].status == "degraded" and "sensor bus gone" in checks["hardware.sampler"].reason


def test_malformed_readings_are_reported_and_the_thread_keeps_sampling():
    """Readings that make the verdicts raise give a degraded hardware.sampler check; the thread lives on and recovers."""
    p = StaticProvider({"memory": {"available_percent": 50.0}})
    s = HardwareSampler([p], interval_s=0.05)
    s.start()
    try:
        p.set({"memory": {"available_percent": "garbage"}})
        wait_until(lambda: "evaluate" in s.snapshot.errors, timeout=10)
        checks = {c.name: c for c in s.checks()}
        assert checks["hardware.sampler"].status == "degraded" and "evaluate: ValueError" in checks["hardware.sampler"].reason
        p.set({"memory": {"available_percent": 50.0}})
        n = s.samples
        wait_until(lambda: s.samples > n + 1 and not s.snapshot.errors, timeout=10)
        assert s.running and not s.snapshot.errors
        assert {c.name: c.status for c in s.checks()} == {"hardware.memory": "ok"}
    finally:
        s.stop()


def test_memory_pressure_is_a_latency_hint():
    """Low available memory shows up in the snapshot's pressure tuple."""
    s = HardwareSampler([StaticProvider({"memory": {"available_percent": 3.0}})])
    assert s.sample().pressure == ("memory_pressure",)


def test_dropped_sampler_thread_ends_by_itself():
    """A sampler dropped without stop() (a guard discarded in a test) lets its thread end."""
    import gc

    s = HardwareSampler([StaticProvider({})], interval_s=0.01)
    s.start()
    t = s._worker._thread
    del s
    gc.collect()
    t.join(10)
    assert not t.is_alive()
