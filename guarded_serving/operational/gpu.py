"""NVIDIA GPU readings through NVML (``nvidia-ml-py``, the ``gpu`` extra) and their verdicts.

NVML queries cost 0.4 to 3.4 ms each (measured on an H200), so they only run
in the hardware sampler's background thread; spans read the cached snapshot.

Readings layout, one dict per device (a field is ``None`` when the device
does not support the query, e.g. ECC on consumer cards)::

    {"gpus": [{"index", "name", "temperature_c", "slowdown_c", "shutdown_c",
               "memory_used_mb", "memory_total_mb", "utilization_percent",
               "power_w", "power_limit_w", "ecc_uncorrected_volatile",
               "remapped_rows": {"correctable", "uncorrectable", "pending", "failure"},
               "clock_event_reasons": ["sw_thermal_slowdown", ...]}]}

When NVML cannot be used the provider returns ``{"gpu_unavailable": "why"}``,
which the checks report as ``unavailable`` (never unhealthy).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

from .. import health as H
from ..health import CheckResult

__all__ = ["NvmlProvider", "evaluate_gpus", "gpu_pressure", "CLOCK_EVENT_REASONS", "SLOWDOWN_REASONS"]

_MB = 1024 * 1024

#: NVML clock-event reason bit -> (name, verdict when set)
CLOCK_EVENT_REASONS: dict[int, tuple[str, str]] = {
    0x1: ("gpu_idle", H.OK),
    0x2: ("applications_clocks_setting", H.OK),
    0x4: ("sw_power_cap", H.OK),
    0x8: ("hw_slowdown", H.DEGRADED),
    0x10: ("sync_boost", H.OK),
    0x20: ("sw_thermal_slowdown", H.DEGRADED),
    0x40: ("hw_thermal_slowdown", H.DEGRADED),
    0x80: ("hw_power_brake_slowdown", H.DEGRADED),
    0x100: ("display_clock_setting", H.OK),
}
_REASON_VERDICT = {name: verdict for name, verdict in CLOCK_EVENT_REASONS.values()}
#: Clock-event reasons that cost speed (the GPU runs slower than its power cap allows).
SLOWDOWN_REASONS = frozenset(name for name, verdict in CLOCK_EVENT_REASONS.values() if verdict != H.OK)
THERMAL_REASONS = frozenset({"sw_thermal_slowdown", "hw_thermal_slowdown"})


def decode_clock_events(mask: int) -> list[str]:
    """Names of the clock-event (throttle) reason bits set in ``mask``."""
    return [name for bit, (name, _) in CLOCK_EVENT_REASONS.items() if mask & bit]


class NvmlProvider:
    """Real GPU readings through NVML.

    NVML is initialised lazily on the first sample (in the sampler thread),
    never at import. If ``pynvml`` is missing or ``nvmlInit`` fails (no driver,
    no GPU), every sample returns ``{"gpu_unavailable": reason}``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._unavailable: str | None = None
        self._static: list[dict[str, Any]] = []

    def _init(self) -> None:
        try:
            import pynvml
        except ImportError:
            self._unavailable = "nvidia-ml-py is not installed (pip install 'guarded-serving[gpu]')"
            return
        try:
            pynvml.nvmlInit()
            n = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            self._unavailable = f"NVML unavailable: {exc}"
            return
        if n == 0:
            self._unavailable = "NVML found no GPU"
            pynvml.nvmlShutdown()
            return
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(n)]
        for i, h in enumerate(self._handles):
            name = self._try(lambda: pynvml.nvmlDeviceGetName(h))
            self._static.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "slowdown_c": self._try(lambda: pynvml.nvmlDeviceGetTemperatureThreshold(
                    h, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)),
                "shutdown_c": self._try(lambda: pynvml.nvmlDeviceGetTemperatureThreshold(
                    h, pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)),
            })

    def _try(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except self._nvml_error():
            return None

    def _nvml_error(self) -> type[BaseException]:
        import pynvml

        return pynvml.NVMLError

    def readings(self) -> dict[str, Any]:
        with self._lock:
            if self._nvml is None and self._unavailable is None:
                self._init()
            if self._unavailable is not None:
                return {"gpu_unavailable": self._unavailable}
            return {"gpus": [self._device(i, h) for i, h in enumerate(self._handles)]}

    def _device(self, i: int, h: Any) -> dict[str, Any]:
        nv, t = self._nvml, self._try
        d: dict[str, Any] = dict(self._static[i])
        d["temperature_c"] = t(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
        mem = t(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        d["memory_used_mb"] = None if mem is None else mem.used / _MB
        d["memory_total_mb"] = None if mem is None else mem.total / _MB
        util = t(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        d["utilization_percent"] = None if util is None else float(util.gpu)
        mw = t(lambda: nv.nvmlDeviceGetPowerUsage(h))
        lim = t(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h))
        d["power_w"] = None if mw is None else mw / 1000.0
        d["power_limit_w"] = None if lim is None else lim / 1000.0
        d["ecc_uncorrected_volatile"] = t(lambda: nv.nvmlDeviceGetTotalEccErrors(
            h, nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))
        rr = t(lambda: nv.nvmlDeviceGetRemappedRows(h))
        d["remapped_rows"] = None if rr is None else {
            "correctable": int(rr[0]), "uncorrectable": int(rr[1]), "pending": bool(rr[2]), "failure": bool(rr[3])}
        getter = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) \
            or nv.nvmlDeviceGetCurrentClocksThrottleReasons
        mask = t(lambda: getter(h))
        d["clock_event_reasons"] = None if mask is None else decode_clock_events(int(mask))
        return d

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # pragma: no cover - driver went away
                    pass
            self._nvml, self._handles, self._static, self._unavailable = None, [], [], None


def evaluate_gpus(readings: Mapping[str, Any], t: Any) -> list[CheckResult]:
    """Per-device checks ``hardware.gpu<i>.{temperature,memory,power,ecc,throttle}``."""
    if "gpu_unavailable" in readings and not readings.get("gpus"):
        return [CheckResult("hardware.gpu", H.UNAVAILABLE, str(readings["gpu_unavailable"]), {})]
    out: list[CheckResult] = []
    for g in readings.get("gpus") or []:
        p = f"hardware.gpu{g.get('index', len(out))}"
        out += [_temperature(p, g, t), _memory(p, g, t), _power(p, g, t), _ecc(p, g), _throttle(p, g)]
    return out


def _temperature(p: str, g: Mapping[str, Any], t: Any) -> CheckResult:
    cur, slow = g.get("temperature_c"), g.get("slowdown_c")
    details = {"temperature_c": cur, "slowdown_c": slow, "shutdown_c": g.get("shutdown_c")}
    if cur is None:
        return CheckResult(f"{p}.temperature", H.UNAVAILABLE, "the GPU reports no temperature", details)
    if slow is None:
        return CheckResult(f"{p}.temperature", H.OK, f"{cur:.0f} C (no slowdown threshold reported)", details)
    if cur >= slow:
        return CheckResult(f"{p}.temperature", H.FAILING,
                           f"{cur:.0f} C, at or above the device's slowdown threshold {slow:.0f} C", details)
    if cur >= slow - t.gpu_temperature_margin_c:
        return CheckResult(f"{p}.temperature", H.DEGRADED,
                           f"{cur:.0f} C, within {t.gpu_temperature_margin_c:g} C of the slowdown threshold "
                           f"{slow:.0f} C", details)
    return CheckResult(f"{p}.temperature", H.OK, f"{cur:.0f} C, slowdown at {slow:.0f} C", details)


def _memory(p: str, g: Mapping[str, Any], t: Any) -> CheckResult:
    used, total = g.get("memory_used_mb"), g.get("memory_total_mb")
    details = {"memory_used_mb": used, "memory_total_mb": total, "utilization_percent": g.get("utilization_percent")}
    if used is None or not total:
        return CheckResult(f"{p}.memory", H.UNAVAILABLE, "the GPU reports no memory usage", details)
    pct = 100.0 * used / total
    text = f"GPU memory {used:.0f} of {total:.0f} MB used ({pct:.1f}%), utilisation {g.get('utilization_percent')}%"
    if pct >= t.gpu_memory_percent_failing:
        return CheckResult(f"{p}.memory", H.FAILING, text + f", at or above {t.gpu_memory_percent_failing:g}%",
                           details)
    if pct >= t.gpu_memory_percent_degraded:
        return CheckResult(f"{p}.memory", H.DEGRADED, text + f", at or above {t.gpu_memory_percent_degraded:g}%",
                           details)
    return CheckResult(f"{p}.memory", H.OK, text, details)


def _power(p: str, g: Mapping[str, Any], t: Any) -> CheckResult:
    """Power is a reading, not a problem: a GPU at its cap is doing the work it was bought for.

    ``degraded`` only when the draw is above the enforced limit (the cap is not holding), or
    when the draw is near the cap *and* clocks are slowed for a reason that costs speed
    (thermal or hardware slowdown, power brake). ``sw_power_cap`` alone at the cap is ``ok``.
    """
    w, lim = g.get("power_w"), g.get("power_limit_w")
    reasons = g.get("clock_event_reasons") or []
    details = {"power_w": w, "power_limit_w": lim, "clock_event_reasons": g.get("clock_event_reasons")}
    if w is None or not lim:
        return CheckResult(f"{p}.power", H.UNAVAILABLE, "the GPU reports no power draw or limit", details)
    pct = 100.0 * w / lim
    details["percent_of_limit"] = round(pct, 1)
    text = f"drawing {w:.0f} W of an enforced {lim:.0f} W limit ({pct:.0f}%)"
    if pct > t.gpu_power_over_limit_percent:
        return CheckResult(f"{p}.power", H.DEGRADED,
                           text + f", above {t.gpu_power_over_limit_percent:g}% of the limit: the power cap is "
                           "not holding", details)
    costly = [r for r in reasons if r in SLOWDOWN_REASONS]
    if pct >= t.gpu_power_percent_degraded:
        if costly:
            return CheckResult(f"{p}.power", H.DEGRADED,
                               text + ", at the cap with clocks slowed down: " + ", ".join(costly), details)
        capped = " (sw_power_cap: the driver holds clocks to the limit)" if "sw_power_cap" in reasons else ""
        return CheckResult(f"{p}.power", H.OK, text + ", at the cap with no slowdown that costs speed" + capped,
                           details)
    return CheckResult(f"{p}.power", H.OK, text, details)


def _ecc(p: str, g: Mapping[str, Any]) -> CheckResult:
    ecc, rr = g.get("ecc_uncorrected_volatile"), g.get("remapped_rows")
    details = {"ecc_uncorrected_volatile": ecc, "remapped_rows": rr}
    if ecc is None and rr is None:
        return CheckResult(f"{p}.ecc", H.UNAVAILABLE, "ECC and row remapping are not supported on this GPU", details)
    problems, status = [], H.OK
    if ecc:
        problems.append(f"{ecc} uncorrected ECC errors since the driver loaded")
        status = H.FAILING
    if rr:
        if rr.get("failure"):
            problems.append("a row remapping failed (the GPU needs service)")
            status = H.FAILING
        if rr.get("pending"):
            problems.append("row remapping pending (reset the GPU to apply)")
            status = H.FAILING
        if rr.get("uncorrectable") and status == H.OK:
            problems.append(f"{rr['uncorrectable']} rows remapped after uncorrectable errors")
            status = H.DEGRADED
    if not problems:
        return CheckResult(f"{p}.ecc", H.OK, "no uncorrected ECC errors, no pending or failed row remapping",
                           details)
    return CheckResult(f"{p}.ecc", status, "; ".join(problems), details)


def _throttle(p: str, g: Mapping[str, Any]) -> CheckResult:
    reasons = g.get("clock_event_reasons")
    details = {"clock_event_reasons": reasons}
    if reasons is None:
        return CheckResult(f"{p}.throttle", H.UNAVAILABLE, "the GPU reports no clock-event reasons", details)
    bad = [r for r in reasons if _REASON_VERDICT.get(r, H.OK) != H.OK]
    if bad:
        return CheckResult(f"{p}.throttle", H.DEGRADED, "clocks slowed down: " + ", ".join(bad), details)
    return CheckResult(f"{p}.throttle", H.OK,
                       "no thermal or hardware slowdown" + (f" ({', '.join(reasons)})" if reasons else ""), details)


def gpu_pressure(readings: Mapping[str, Any], t: Any) -> tuple[str, ...]:
    """Latency causes visible in the GPU readings, most severe first.

    ``gpu_thermal_slowdown`` (a thermal clock-event reason, or the temperature at the device's
    slowdown threshold), ``gpu_hardware_slowdown`` (``hw_slowdown`` or the power brake),
    ``gpu_memory_pressure`` (memory use at or above ``gpu_memory_percent_degraded``) and
    ``gpu_saturation`` (utilisation at or above ``gpu_saturation_percent``), each named once
    whichever device shows it.
    """
    found: set[str] = set()
    for g in readings.get("gpus") or []:
        reasons = set(g.get("clock_event_reasons") or ())
        cur, slow = g.get("temperature_c"), g.get("slowdown_c")
        if reasons & THERMAL_REASONS or (cur is not None and slow is not None and cur >= slow):
            found.add("gpu_thermal_slowdown")
        if reasons & (SLOWDOWN_REASONS - THERMAL_REASONS):
            found.add("gpu_hardware_slowdown")
        used, total = g.get("memory_used_mb"), g.get("memory_total_mb")
        if used is not None and total and 100.0 * used / total >= t.gpu_memory_percent_degraded:
            found.add("gpu_memory_pressure")
        util = g.get("utilization_percent")
        if util is not None and util >= t.gpu_saturation_percent:
            found.add("gpu_saturation")
    return tuple(c for c in GPU_CAUSES if c in found)


#: GPU latency causes, most severe first.
GPU_CAUSES = ("gpu_thermal_slowdown", "gpu_hardware_slowdown", "gpu_memory_pressure", "gpu_saturation")
