"""GPU verdicts from injected NVML-shaped readings, and the real NVML provider where it can run."""

from __future__ import annotations

import pytest

from guarded_serving.operational.gpu import NvmlProvider, decode_clock_events
from guarded_serving.operational.hardware import StaticProvider, Thresholds, evaluate
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


def test_power_at_the_enforced_limit_degrades():
    """Drawing the enforced power limit degrades the power check."""
    assert _checks(_gpu(power_w=699.0))["hardware.gpu0.power"].status == "degraded"


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
