"""GPU verdicts from injected NVML-shaped readings, and the real NVML provider where it can run."""

from __future__ import annotations

import pytest

from guarded_serving.operational.gpu import NvmlProvider, decode_clock_events
from guarded_serving.operational.hardware import StaticProvider, Thresholds, evaluate, pressure
from guarded_serving.operational.sampler import HardwareSampler


def _gpu(**over):
    g = {"index": 0, "name": "NVIDIA H200", "temperature_c": 45, "slowdown_c": 87, "shutdown_c": 92,
         "memory_used_mb": 1000.0, "memory_total_mb": 143771.0, "utilization_percent": 10.0,
         "power_w": 120.0, "power_limit_w": 700.0, "ecc_uncorrected_volatile": 0,
         "remapped_rows": {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False},
         "clock_event_reasons": ["gpu_idle"]}
    g.update(over)
    return g


def _checks(g):
    return {r.name: r for r in evaluate({"gpus": [g]}, Thresholds())}


def test_healthy_gpu_is_ok():
    """A cool, idle GPU gives five ok checks."""
    c = _checks(_gpu())
    assert sorted(c) == [f"hardware.gpu0.{k}" for k in ("ecc", "memory", "power", "temperature", "throttle")]
    assert {r.status for r in c.values()} == {"ok"}


def test_overheating_against_the_devices_own_slowdown_threshold():
    """At its own slowdown threshold the GPU fails; 3 C below, it is degraded."""
    assert _checks(_gpu(temperature_c=88))["hardware.gpu0.temperature"].status == "failing"
    r = _checks(_gpu(temperature_c=84))["hardware.gpu0.temperature"]
    assert r.status == "degraded" and "87" in r.reason


def test_uncorrected_ecc_errors_fail():
    """Uncorrected ECC errors fail the ECC check with the count."""
    r = _checks(_gpu(ecc_uncorrected_volatile=3))["hardware.gpu0.ecc"]
    assert r.status == "failing" and "3 uncorrected" in r.reason


def test_pending_row_remap_fails():
    """A pending row remapping fails (the GPU needs a reset)."""
    rr = {"correctable": 0, "uncorrectable": 1, "pending": True, "failure": False}
    assert _checks(_gpu(remapped_rows=rr))["hardware.gpu0.ecc"].status == "failing"


def test_thermal_throttling_degrades():
    """Thermal slowdown clock events degrade the throttle check and are named."""
    r = _checks(_gpu(clock_event_reasons=decode_clock_events(0x20 | 0x4)))["hardware.gpu0.throttle"]
    assert r.status == "degraded" and "sw_thermal_slowdown" in r.reason


def _h200_under_load(power_w=691.0, temperature_c=60, reasons=("sw_power_cap",)):
    """The readings of an H200 under sustained bf16 matmul load (NVML, sampled every 0.5 s)."""
    return _gpu(power_w=power_w, power_limit_w=700.0, temperature_c=temperature_c, slowdown_c=89, shutdown_c=94,
                utilization_percent=99.0, memory_used_mb=20_000.0, clock_event_reasons=list(reasons))


class TestPowerAtTheCap:
    @pytest.mark.parametrize("power_w,temperature_c", [(688.0, 59), (691.5, 60), (695.0, 60)])
    def test_h200_at_its_power_cap_is_ok(self, power_w, temperature_c):
        """688-695 W of a 700 W limit, sw_power_cap only, 59-60 C of 89 C, 99% busy: every GPU check is ok."""
        s = HardwareSampler([StaticProvider({"gpus": [_h200_under_load(power_w, temperature_c)]})])
        checks = {c.name: c for c in s.sample().checks}
        assert {n: c.status for n, c in checks.items()} == {
            f"hardware.gpu0.{k}": "ok" for k in ("temperature", "memory", "power", "ecc", "throttle")}
        assert "at the cap" in checks["hardware.gpu0.power"].reason
        assert "sw_power_cap" in checks["hardware.gpu0.power"].reason

    def test_at_the_cap_with_no_reason_reported_is_ok(self):
        """At the cap with no clock-event reason at all the power check is ok."""
        assert _checks(_gpu(power_w=699.0, clock_event_reasons=[]))["hardware.gpu0.power"].status == "ok"

    @pytest.mark.parametrize("reason", ["sw_thermal_slowdown", "hw_thermal_slowdown", "hw_slowdown",
                                        "hw_power_brake_slowdown"])
    def test_at_the_cap_with_a_slowdown_that_costs_speed_degrades(self, reason):
        """At the cap together with a thermal, hardware or power-brake slowdown the power check is degraded."""
        r = _checks(_h200_under_load(reasons=("sw_power_cap", reason)))["hardware.gpu0.power"]
        assert r.status == "degraded" and reason in r.reason

    def test_a_slowdown_far_below_the_cap_is_the_throttle_checks_business(self):
        """A slowdown reason at low power leaves power ok; the throttle check reports it."""
        c = _checks(_gpu(power_w=200.0, clock_event_reasons=["hw_slowdown"]))
        assert c["hardware.gpu0.power"].status == "ok" and c["hardware.gpu0.throttle"].status == "degraded"

    def test_a_draw_above_the_limit_degrades(self):
        """Drawing more than the enforced limit degrades the power check even with sw_power_cap only."""
        r = _checks(_h200_under_load(power_w=720.0))["hardware.gpu0.power"]
        assert r.status == "degraded" and "not holding" in r.reason

    def test_over_limit_threshold_is_configurable(self):
        """gpu_power_over_limit_percent moves the over-limit mark."""
        t = Thresholds().with_overrides({"gpu_power_over_limit_percent": 105})
        (r,) = [c for c in evaluate({"gpus": [_h200_under_load(power_w=720.0)]}, t) if c.name.endswith(".power")]
        assert r.status == "ok"

    def test_other_checks_are_unchanged_under_load(self):
        """At the cap, memory, temperature, ECC and remapped rows still judge as before."""
        rr = {"correctable": 0, "uncorrectable": 0, "pending": True, "failure": False}
        c = _checks(_h200_under_load(temperature_c=89) | {"memory_used_mb": 143_000.0, "remapped_rows": rr})
        assert c["hardware.gpu0.temperature"].status == "failing"
        assert c["hardware.gpu0.memory"].status == "failing"
        assert c["hardware.gpu0.ecc"].status == "failing"
        assert c["hardware.gpu0.power"].status == "ok"


class TestGpuLatencyCauses:
    def test_h200_under_load_reads_as_gpu_saturation(self):
        """99% utilisation at the cap is GPU saturation, nothing else."""
        s = HardwareSampler([StaticProvider({"gpus": [_h200_under_load()]})])
        assert s.sample().pressure == ("gpu_saturation",)

    def test_memory_pressure_and_thermal_slowdown(self):
        """Nearly full GPU memory and a thermal clock event are causes, the slowdown first."""
        g = _gpu(memory_used_mb=140_000.0, clock_event_reasons=["sw_power_cap", "hw_thermal_slowdown"])
        assert pressure({"gpus": [g]}, Thresholds()) == ("gpu_thermal_slowdown", "gpu_memory_pressure")

    def test_at_the_slowdown_temperature_is_thermal_slowdown(self):
        """A GPU at its own slowdown temperature is a thermal-slowdown cause even before the clock event shows."""
        assert pressure({"gpus": [_gpu(temperature_c=87)]}, Thresholds()) == ("gpu_thermal_slowdown",)

    def test_idle_gpu_is_no_cause(self):
        """A cool, idle GPU is no latency cause."""
        assert pressure({"gpus": [_gpu()]}, Thresholds()) == ()


def test_unsupported_queries_are_unavailable():
    """A consumer card without ECC reports ECC unavailable, not failing."""
    r = _checks(_gpu(ecc_uncorrected_volatile=None, remapped_rows=None))["hardware.gpu0.ecc"]
    assert r.status == "unavailable"


def test_injected_readings_go_through_the_real_sampler():
    """The sampler judges injected GPU readings the same way and puts them on span attributes."""
    s = HardwareSampler([StaticProvider({"gpus": [_gpu(temperature_c=90, ecc_uncorrected_volatile=1)]})])
    snap = s.sample()
    status = {c.name: c.status for c in snap.checks}
    assert status["hardware.gpu0.temperature"] == "failing" and status["hardware.gpu0.ecc"] == "failing"
    assert snap.attributes["guard.hardware.gpu0.temperature_c"] == 90


def test_real_nvml_provider():
    """The real NVML provider returns device readings on a GPU host, else a reason that reads "unavailable"."""
    pytest.importorskip("pynvml", reason="nvidia-ml-py (the gpu extra) is not installed")
    p = NvmlProvider()
    try:
        r = p.readings()
    finally:
        p.close()
    if "gpu_unavailable" in r:
        (c,) = evaluate(r, Thresholds())
        assert c.name == "hardware.gpu" and c.status == "unavailable" and "NVML" in c.reason
        pytest.skip(f"no usable GPU here: {r['gpu_unavailable']}")
    assert r["gpus"] and r["gpus"][0]["memory_total_mb"] > 0
