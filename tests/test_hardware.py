"""Host hardware readings (real psutil) and verdicts (injected readings)."""

from __future__ import annotations

import pytest

from guarded_serving.operational.hardware import PsutilProvider, StaticProvider, Thresholds, evaluate, pressure


def _by_name(results):
    return {r.name: r for r in results}


class TestPsutilProvider:
    def test_real_readings_on_this_machine(self, tmp_path):
        """The real provider reads CPU, memory, this process, the watched disk and (maybe) sensors."""
        r = PsutilProvider(disk_paths=[tmp_path]).readings()
        assert r["cpu"]["count"] >= 1
        assert 0 < r["memory"]["available_percent"] <= 100
        assert r["process"]["rss_mb"] > 1
        assert r["process"]["open_fds"] >= 3
        (path, d), = r["disk"].items()
        assert path == str(tmp_path.resolve()) and 0 <= d["free_percent"] <= 100
        assert isinstance(r["temperatures"], dict)

    def test_real_verdicts_on_this_machine(self, tmp_path):
        """Every host check has a verdict; missing temperature sensors read "unavailable", never "failing"."""
        p = PsutilProvider(disk_paths=[tmp_path])
        checks = _by_name(evaluate(p.readings(), Thresholds()))
        assert {"hardware.cpu", "hardware.memory", "hardware.rss", "hardware.fds", "hardware.disk",
                "hardware.temperature"} <= set(checks)
        if not p.readings()["temperatures"]:
            assert checks["hardware.temperature"].status == "unavailable"
        assert checks["hardware.fds"].status == "ok"


class TestVerdicts:
    def test_full_disk_is_failing(self):
        """A watched path with 1% free disk fails, naming the path."""
        r = evaluate({"disk": {"/data": {"total_mb": 1000, "free_mb": 10, "free_percent": 1.0},
                               "/tmp": {"total_mb": 1000, "free_mb": 500, "free_percent": 50.0}}}, Thresholds())
        (c,) = r
        assert c.status == "failing" and "/data" in c.reason and "1.0%" in c.reason

    def test_low_disk_is_degraded(self):
        """8% free disk is degraded under the default 10% mark."""
        (c,) = evaluate({"disk": {"/d": {"free_percent": 8.0, "free_mb": 80}}}, Thresholds())
        assert c.status == "degraded"

    def test_overheating_cpu_uses_the_sensors_own_limits(self):
        """A sensor at its critical mark fails; at its high mark it is degraded."""
        hot = {"temperatures": {"coretemp/Package id 0": {"current_c": 101.0, "high_c": 90.0, "critical_c": 100.0}}}
        warm = {"temperatures": {"coretemp/Core 0": {"current_c": 92.0, "high_c": 90.0, "critical_c": 100.0}}}
        assert evaluate(hot, Thresholds())[0].status == "failing"
        assert evaluate(warm, Thresholds())[0].status == "degraded"

    def test_no_sensors_is_unavailable(self):
        """An empty sensor list (containers) is unavailable, never unhealthy."""
        (c,) = evaluate({"temperatures": {}}, Thresholds())
        assert c.status == "unavailable"

    @pytest.mark.parametrize("avail,status", [(50.0, "ok"), (8.0, "degraded"), (2.0, "failing")])
    def test_memory_levels(self, avail, status):
        """Available memory maps to ok / degraded / failing at 10% and 5%."""
        (c,) = evaluate({"memory": {"available_percent": avail, "source": "cgroup"}}, Thresholds())
        assert c.status == status

    def test_fd_exhaustion_fails(self):
        """Open descriptors at 97% of the soft limit fail."""
        checks = _by_name(evaluate({"process": {"rss_percent": 1.0, "open_fds": 970, "fd_limit": 1000}},
                                   Thresholds()))
        assert checks["hardware.fds"].status == "failing"
        assert checks["hardware.rss"].status == "ok"

    def test_cpu_saturation_degrades_but_never_fails(self):
        """100% CPU is degraded (never failing) and reads as a latency cause."""
        readings = {"cpu": {"percent": 100.0, "count": 2, "load_1m": 4.0, "load_per_cpu": 2.0}}
        (c,) = evaluate(readings, Thresholds())
        assert c.status == "degraded"
        assert pressure(readings, Thresholds()) == ("cpu_saturation",)

    def test_threshold_overrides(self):
        """Overridden thresholds change the verdict."""
        t = Thresholds().with_overrides({"disk_free_percent_degraded": 60})
        (c,) = evaluate({"disk": {"/d": {"free_percent": 50.0, "free_mb": 5}}}, t)
        assert c.status == "degraded"


def test_static_provider_returns_a_copy():
    """StaticProvider hands out copies, and set() swaps its readings."""
    p = StaticProvider({"cpu": {"percent": 1.0}})
    p.readings()["cpu"]["percent"] = 99.0
    assert p.readings()["cpu"]["percent"] == 1.0
    p.set({"memory": {}})
    assert p.readings() == {"memory": {}}
