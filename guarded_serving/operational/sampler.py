"""The hardware sampler: a background thread that reads providers and caches verdicts.

Every ``interval_s`` a :class:`~guarded_serving.worker.PeriodicWorker` calls each provider's ``readings()``, merges
the dicts, judges them (:func:`guarded_serving.operational.hardware.evaluate`)
and swaps in a new immutable :class:`HardwareSnapshot`. The request path
only ever reads ``sampler.snapshot`` (one attribute load); nothing here runs
on it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .. import health as H
from ..health import CheckResult
from ..worker import PeriodicWorker
from .hardware import Provider, Thresholds, evaluate, pressure

__all__ = ["HardwareSampler", "HardwareSnapshot", "span_attributes_of"]

_log = logging.getLogger("guarded_serving.operational")


@dataclass(frozen=True)
class HardwareSnapshot:
    """One sample: readings, verdicts, span attributes, latency-cause hints."""

    taken_at: float  # time.time()
    readings: Mapping[str, Any]
    checks: tuple[CheckResult, ...]
    attributes: Mapping[str, Any]
    pressure: tuple[str, ...] = ()
    sample_ms: float = 0.0
    errors: Mapping[str, str] = field(default_factory=dict)


EMPTY = HardwareSnapshot(0.0, {}, (), {})


def span_attributes_of(readings: Mapping[str, Any]) -> dict[str, Any]:
    """The compact ``guard.hardware.*`` attributes attached to spans."""
    a: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if value is not None:
            a[f"guard.hardware.{key}"] = round(float(value), 2)

    cpu, mem, proc = readings.get("cpu") or {}, readings.get("memory") or {}, readings.get("process") or {}
    put("cpu_percent", cpu.get("percent"))
    put("load_per_cpu", cpu.get("load_per_cpu"))
    put("memory_available_percent", mem.get("available_percent"))
    put("rss_mb", proc.get("rss_mb"))
    put("open_fds", proc.get("open_fds"))
    for g in readings.get("gpus") or []:
        i = g.get("index", 0)
        put(f"gpu{i}.temperature_c", g.get("temperature_c"))
        put(f"gpu{i}.memory_used_mb", g.get("memory_used_mb"))
        put(f"gpu{i}.utilization_percent", g.get("utilization_percent"))
        put(f"gpu{i}.power_w", g.get("power_w"))
        reasons = [r for r in (g.get("clock_event_reasons") or []) if r not in ("gpu_idle",)]
        if reasons:
            a[f"guard.hardware.gpu{i}.clock_event_reasons"] = reasons
    return a


class HardwareSampler:
    """Sample hardware providers in a background thread and cache the verdicts.

    Parameters
    ----------
    providers : sequence of Provider
        Objects with ``readings() -> dict`` (:class:`~.hardware.PsutilProvider`,
        :class:`~.gpu.NvmlProvider`, or a :class:`~.hardware.StaticProvider` in tests).
    thresholds : Thresholds, optional
    interval_s : float, default=5.0
    on_sample : callable, optional
        Called in the sampler thread with each new snapshot (health transitions).
    """

    def __init__(self, providers: Sequence[Provider], *, thresholds: Thresholds | None = None,
                 interval_s: float = 5.0, on_sample: Callable[[HardwareSnapshot], None] | None = None) -> None:
        self.providers = list(providers)
        self.thresholds = thresholds or Thresholds()
        self.interval_s = float(interval_s)
        self.on_sample = on_sample
        self.snapshot: HardwareSnapshot = EMPTY
        self.samples = 0
        self._worker: PeriodicWorker | None = None

    def sample(self) -> HardwareSnapshot:
        """Take one sample now (the thread calls this; tests may too) and cache it."""
        t0 = time.perf_counter()
        merged: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for p in self.providers:
            try:
                merged.update(p.readings())
            except Exception as exc:  # a broken provider is reported, never fatal
                errors[type(p).__name__] = f"{type(exc).__name__}: {exc}"
        try:
            checks = evaluate(merged, self.thresholds)
            attrs, hints = span_attributes_of(merged), pressure(merged, self.thresholds)
        except Exception as exc:  # malformed readings: reported, never fatal to the sampling thread
            errors["evaluate"] = f"{type(exc).__name__}: {exc}"
            checks, attrs, hints = [], {}, ()
        if errors:
            reason = "hardware sampling raised (serving goes on): " + "; ".join(f"{k}: {v}" for k, v in errors.items())
            checks.append(CheckResult("hardware.sampler", H.DEGRADED, reason, dict(errors), affects_readiness=False))
        snap = HardwareSnapshot(time.time(), merged, tuple(checks), attrs, hints,
                                (time.perf_counter() - t0) * 1000.0, errors)
        self.snapshot = snap
        self.samples += 1
        if self.on_sample is not None:
            try:
                self.on_sample(snap)
            except Exception:  # pragma: no cover - defensive
                _log.exception("hardware on_sample callback raised")
        return snap

    def start(self) -> None:
        """Take a first sample synchronously, then sample every ``interval_s`` in the background."""
        if self._worker is not None and self._worker.running:
            return
        self.sample()
        self._worker = PeriodicWorker("hardware-sampler", self.sample, self.interval_s, join_timeout_s=5,
                                      weak=True).start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        for p in self.providers:
            close = getattr(p, "close", None)
            if close is not None:
                close()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.running

    def checks(self) -> Iterable[CheckResult]:
        return self.snapshot.checks
