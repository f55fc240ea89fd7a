"""Host hardware readings (psutil) and the verdicts drawn from them.

A *provider* is anything with ``readings() -> dict``; the sampler
(:mod:`guarded_serving.operational.sampler`) calls providers in a background
thread and folds their dicts together. The real host provider is
:class:`PsutilProvider`; :class:`StaticProvider` returns readings a test (or
a replay) sets, through the very same interface. :func:`evaluate` turns a
merged readings dict into :class:`~guarded_serving.health.CheckResult` values;
it only judges the sections present, so injected GPU readings are judged by
the same code as real NVML ones (:func:`guarded_serving.operational.gpu.evaluate_gpus`).

Readings layout (every number may be ``None`` when this host cannot read it)::

    {"cpu":     {"percent", "count", "load_1m", "load_per_cpu"},
     "memory":  {"total_mb", "available_mb", "available_percent", "source"},   # source: host | cgroup
     "process": {"rss_mb", "rss_percent", "open_fds", "fd_limit"},
     "disk":    {PATH: {"total_mb", "free_mb", "free_percent"}},
     "temperatures": {"SENSOR/LABEL": {"current_c", "high_c", "critical_c"}},   # {} = no sensors
     "gpus": [...], "gpu_unavailable": "why"}                                   # see gpu.py
"""

from __future__ import annotations

import copy
import dataclasses
import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

from .. import health as H
from ..health import CheckResult

__all__ = ["Provider", "PsutilProvider", "StaticProvider", "Thresholds", "evaluate", "pressure"]

_MB = 1024 * 1024
_MIN_CPU_WINDOW_S = 0.05


class Provider(Protocol):
    """What the sampler calls: one dict of readings per sample."""

    def readings(self) -> dict[str, Any]: ...


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """Verdict thresholds (override any of them with ``GuardConfig.hardware_thresholds``).

    Parameters
    ----------
    cpu_percent_degraded : float, default=95
        Host CPU utilisation (averaged over one sampling interval) that is ``degraded``.
        CPU saturation never makes a check ``failing`` (it slows, it does not break).
    memory_available_percent_degraded, memory_available_percent_failing : float, default=10, 5
        Available memory (cgroup limit when the process runs under one, else the host).
    rss_percent_degraded, rss_percent_failing : float, default=80, 95
        The process's resident memory as a share of that memory limit.
    fd_percent_degraded, fd_percent_failing : float, default=80, 95
        Open file descriptors as a share of the soft ``RLIMIT_NOFILE``.
    disk_free_percent_degraded, disk_free_percent_failing : float, default=10, 3
        Free space on the watched paths (model artifacts, state).
    temperature_degraded_c, temperature_failing_c : float, default=85, 95
        CPU sensor temperatures, used when a sensor reports no ``high`` /
        ``critical`` of its own (its own limits win).
    gpu_temperature_margin_c : float, default=5
        A GPU within this many degrees of its own slowdown threshold is ``degraded``;
        at or above it, ``failing``.
    gpu_memory_percent_degraded, gpu_memory_percent_failing : float, default=95, 99
    gpu_power_percent_degraded : float, default=98
        Power draw (share of the enforced limit) that counts as *at the cap*. At the cap the
        power check is ``degraded`` only together with a clock-event reason that costs speed
        (thermal or hardware slowdown, power brake); ``sw_power_cap`` alone is normal full load.
    gpu_power_over_limit_percent : float, default=100
        A draw above this share of the enforced limit is ``degraded`` on its own (the cap is not holding).
    cpu_saturation_percent, memory_pressure_percent : float, default=90, 10
        Latency root causes: CPU utilisation at or above, or available memory below,
        which a slow call is attributed to CPU saturation / memory pressure.
    gpu_saturation_percent : float, default=95
        Latency root cause: GPU utilisation at or above this is ``gpu_saturation``
        (GPU memory at or above ``gpu_memory_percent_degraded`` is ``gpu_memory_pressure``).
    """

    cpu_percent_degraded: float = 95.0
    memory_available_percent_degraded: float = 10.0
    memory_available_percent_failing: float = 5.0
    rss_percent_degraded: float = 80.0
    rss_percent_failing: float = 95.0
    fd_percent_degraded: float = 80.0
    fd_percent_failing: float = 95.0
    disk_free_percent_degraded: float = 10.0
    disk_free_percent_failing: float = 3.0
    temperature_degraded_c: float = 85.0
    temperature_failing_c: float = 95.0
    gpu_temperature_margin_c: float = 5.0
    gpu_memory_percent_degraded: float = 95.0
    gpu_memory_percent_failing: float = 99.0
    gpu_power_percent_degraded: float = 98.0
    gpu_power_over_limit_percent: float = 100.0
    cpu_saturation_percent: float = 90.0
    memory_pressure_percent: float = 10.0
    gpu_saturation_percent: float = 95.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def with_overrides(self, overrides: Mapping[str, float]) -> "Thresholds":
        return dataclasses.replace(self, **{k: float(v) for k, v in overrides.items()})


# -- providers -----------------------------------------------------------------------

def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_memory() -> tuple[int, int] | None:
    """(limit, usage) in bytes from cgroup v2 or v1, or None when unlimited / absent."""
    for limit_p, usage_p in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_p), _read_int(usage_p)
        if limit is not None and usage is not None and limit < (1 << 60):
            return limit, usage
    return None


class PsutilProvider:
    """Real host readings through psutil: CPU, memory, this process, disks, temperatures.

    Parameters
    ----------
    disk_paths : iterable of path, default=(".",)
        Where the model and state live; free space is read for each.
    """

    def __init__(self, *, disk_paths: Iterable[str | os.PathLike[str]] = (".",)) -> None:
        import psutil

        self._psutil = psutil
        self.disk_paths = tuple(str(Path(p).resolve()) for p in disk_paths)
        self._proc = psutil.Process()
        self._lock = threading.Lock()
        psutil.cpu_percent(interval=None)  # prime: the next call measures since now
        self._cpu_since = time.monotonic()

    def readings(self) -> dict[str, Any]:
        ps = self._psutil
        with self._lock:
            now = time.monotonic()
            cpu_pct: float | None = ps.cpu_percent(interval=None)
            if now - self._cpu_since < _MIN_CPU_WINDOW_S:  # too short a window to mean anything
                cpu_pct = None
            self._cpu_since = now
        count = ps.cpu_count() or 1
        try:
            load1 = ps.getloadavg()[0]
        except (AttributeError, OSError):
            load1 = None
        vm = ps.virtual_memory()
        cg = _cgroup_memory()
        if cg is not None and cg[0] < vm.total:
            total, avail, source = cg[0], max(cg[0] - cg[1], 0), "cgroup"
        else:
            total, avail, source = vm.total, vm.available, "host"
        with self._proc.oneshot():
            rss = self._proc.memory_info().rss
            try:
                fds: int | None = self._proc.num_fds()
            except (AttributeError, ps.Error):
                fds = None
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        disk = {}
        for p in self.disk_paths:
            try:
                du = ps.disk_usage(p)
                disk[p] = {"total_mb": du.total / _MB, "free_mb": du.free / _MB,
                           "free_percent": 100.0 * du.free / du.total if du.total else None}
            except OSError as exc:
                disk[p] = {"error": f"{type(exc).__name__}: {exc}"}
        temps: dict[str, Any] = {}
        try:
            for chip, entries in (ps.sensors_temperatures() or {}).items():
                for i, e in enumerate(entries):
                    temps[f"{chip}/{e.label or i}"] = {"current_c": e.current, "high_c": e.high,
                                                      "critical_c": e.critical}
        except (AttributeError, OSError):
            pass
        return {
            "cpu": {"percent": cpu_pct, "count": count, "load_1m": load1,
                    "load_per_cpu": None if load1 is None else load1 / count},
            "memory": {"total_mb": total / _MB, "available_mb": avail / _MB,
                       "available_percent": 100.0 * avail / total, "source": source},
            "process": {"rss_mb": rss / _MB, "rss_percent": 100.0 * rss / total, "open_fds": fds,
                        "fd_limit": None if soft == resource.RLIM_INFINITY else soft},
            "disk": disk,
            "temperatures": temps,
        }


class StaticProvider:
    """Readings set by the caller, through the provider interface (tests, replays).

    ``StaticProvider({"gpus": [...]})`` returns a copy of that dict on every
    sample; :meth:`set` swaps it while the sampler runs.
    """

    def __init__(self, readings: Mapping[str, Any] | None = None) -> None:
        self._readings = dict(readings or {})

    def set(self, readings: Mapping[str, Any]) -> None:
        self._readings = dict(readings)

    def readings(self) -> dict[str, Any]:
        return copy.deepcopy(self._readings)


# -- verdicts ------------------------------------------------------------------------

def _low(name: str, value: float | None, degraded: float, failing: float, what: str,
         details: dict[str, Any]) -> CheckResult:
    """Verdict for a reading that is bad when *low* (free memory, free disk)."""
    if value is None:
        return CheckResult(name, H.UNAVAILABLE, f"no {what} reading on this host", details)
    text = f"{what} {value:.1f}%"
    if value < failing:
        return CheckResult(name, H.FAILING, f"{text}, below {failing:g}%", details)
    if value < degraded:
        return CheckResult(name, H.DEGRADED, f"{text}, below {degraded:g}%", details)
    return CheckResult(name, H.OK, text, details)


def _high(name: str, value: float | None, degraded: float, failing: float | None, what: str,
          details: dict[str, Any], unit: str = "%") -> CheckResult:
    """Verdict for a reading that is bad when *high*."""
    if value is None:
        return CheckResult(name, H.UNAVAILABLE, f"no {what} reading on this host", details)
    text = f"{what} {value:.1f}{unit}"
    if failing is not None and value >= failing:
        return CheckResult(name, H.FAILING, f"{text}, at or above {failing:g}{unit}", details)
    if value >= degraded:
        return CheckResult(name, H.DEGRADED, f"{text}, at or above {degraded:g}{unit}", details)
    return CheckResult(name, H.OK, text, details)


def evaluate(readings: Mapping[str, Any], t: Thresholds) -> list[CheckResult]:
    """Checks for every section present in ``readings`` (host and GPU)."""
    out: list[CheckResult] = []
    cpu = readings.get("cpu")
    if cpu is not None:
        r = _high("hardware.cpu", cpu.get("percent"), t.cpu_percent_degraded, None,
                  "CPU utilisation", dict(cpu))
        if cpu.get("percent") is None:
            r = dataclasses.replace(r, reason="no CPU utilisation reading yet (each covers one sampling interval)")
        if r.status != H.UNAVAILABLE and cpu.get("load_per_cpu") is not None:
            r = dataclasses.replace(r, reason=r.reason + f" (load {cpu['load_1m']:.2f} on {cpu['count']} CPUs)")
        out.append(r)
    mem = readings.get("memory")
    if mem is not None:
        out.append(_low("hardware.memory", mem.get("available_percent"), t.memory_available_percent_degraded,
                        t.memory_available_percent_failing, f"available memory ({mem.get('source', 'host')})",
                        dict(mem)))
    proc = readings.get("process")
    if proc is not None:
        out.append(_high("hardware.rss", proc.get("rss_percent"), t.rss_percent_degraded, t.rss_percent_failing,
                         "process resident memory, share of the memory limit:", dict(proc)))
        fds, limit = proc.get("open_fds"), proc.get("fd_limit")
        pct = None if fds is None or not limit else 100.0 * fds / limit
        out.append(_high("hardware.fds", pct, t.fd_percent_degraded, t.fd_percent_failing,
                         f"open file descriptors ({fds} of {limit}):", {"open_fds": fds, "fd_limit": limit}))
    disk = readings.get("disk")
    if disk is not None:
        out.append(_disk(disk, t))
    if "temperatures" in readings:
        out.append(_temperatures(readings["temperatures"] or {}, t))
    if "gpus" in readings or "gpu_unavailable" in readings:
        from .gpu import evaluate_gpus

        out.extend(evaluate_gpus(readings, t))
    return out


def _disk(disk: Mapping[str, Any], t: Thresholds) -> CheckResult:
    worst: CheckResult | None = None
    for path, d in disk.items():
        if "error" in d:
            r = CheckResult("hardware.disk", H.FAILING, f"cannot read free space of {path}: {d['error']}", {})
        else:
            r = _low("hardware.disk", d.get("free_percent"), t.disk_free_percent_degraded,
                     t.disk_free_percent_failing, f"free disk at {path} ({d.get('free_mb', 0):.0f} MB):", {})
        if worst is None or H.worst([r.status, worst.status]) != worst.status:
            worst = r
    if worst is None:
        return CheckResult("hardware.disk", H.UNAVAILABLE, "no disk paths watched", {"paths": {}})
    return dataclasses.replace(worst, details={"paths": {p: dict(d) for p, d in disk.items()}})


def _temperatures(temps: Mapping[str, Any], t: Thresholds) -> CheckResult:
    if not temps:
        return CheckResult("hardware.temperature", H.UNAVAILABLE,
                           "no temperature sensors readable here (usual in containers and VMs)", {"sensors": {}})
    status, worst_txt, hottest = H.OK, "", None
    for name, s in temps.items():
        cur = s.get("current_c")
        if cur is None:
            continue
        hottest = cur if hottest is None else max(hottest, cur)
        crit = s.get("critical_c") or t.temperature_failing_c
        high = s.get("high_c") or t.temperature_degraded_c
        if cur >= crit and status != H.FAILING:
            status, worst_txt = H.FAILING, f"{name} at {cur:.0f} C, at or above its critical {crit:.0f} C"
        elif cur >= high and status == H.OK:
            status, worst_txt = H.DEGRADED, f"{name} at {cur:.0f} C, at or above its high mark {high:.0f} C"
    details = {"sensors": {k: dict(v) for k, v in temps.items()}}
    if hottest is None:
        return CheckResult("hardware.temperature", H.UNAVAILABLE, "sensors report no current temperature", details)
    return CheckResult("hardware.temperature", status,
                       worst_txt or f"hottest sensor {hottest:.0f} C, below its limits", details)


def pressure(readings: Mapping[str, Any], t: Thresholds) -> tuple[str, ...]:
    """Likely latency causes visible in a snapshot.

    GPU causes first (:func:`guarded_serving.operational.gpu.gpu_pressure`: thermal or hardware
    slowdown, memory pressure, saturation), then ``cpu_saturation`` and ``memory_pressure``.
    """
    out: list[str] = []
    if readings.get("gpus"):
        from .gpu import gpu_pressure

        out.extend(gpu_pressure(readings, t))
    cpu = readings.get("cpu") or {}
    pct, lpc = cpu.get("percent"), cpu.get("load_per_cpu")
    if (pct is not None and pct >= t.cpu_saturation_percent) or (lpc is not None and lpc >= 1.5):
        out.append("cpu_saturation")
    mem = readings.get("memory") or {}
    avail = mem.get("available_percent")
    if avail is not None and avail < t.memory_pressure_percent:
        out.append("memory_pressure")
    return tuple(out)
