"""Operational health as one guard component: hardware, dependencies, downstream, GC pauses.

:class:`OperationalHealth` owns three background workers (the hardware
sampler, the dependency checker, the downstream prober) and a GC monitor.
On the request path it does O(1) work in ``after_call``: the call's latency
goes into the latency-trend ring (:mod:`.trend`), a call that breached the
latency SLO gets the causes that explain its time over budget, by share
(:mod:`.causes`: ``gc_pause`` when the collections during it account for a
material share, ``latency_trend`` when the model itself is getting slower,
GPU and host pressure from the cached hardware snapshot), and pending health
transitions are attached as span events to the next recorded span. The trend
test runs on the hardware sampler's tick. ``checks()`` and
``span_attributes()`` only read caches.

Health transitions (a check going ok -> degraded -> failing and back) are
detected in the background threads when verdicts change, logged at once on
the ``guarded_serving.health`` logger (WARNING when worse, INFO when better)
and queued as ``guard.health.transition`` span events.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from opentelemetry import trace

from .. import health as H
from ..component import Component
from ..errors import ConfigError
from ..health import CheckResult
from ..keys import PINNED_PACKAGES, SLO_VIOLATED
from ..telemetry import attributes as A
from ..worker import PeriodicWorker
from .parent import ParentWatch
from .causes import UNKNOWN, explain
from .dependencies import DependencyChecker
from .downstream import DownstreamProber, Probe
from .gc_monitor import GcMonitor
from .hardware import Provider, PsutilProvider, Thresholds
from .sampler import HardwareSampler, HardwareSnapshot
from .trend import LatencyTrend

if TYPE_CHECKING:
    from ..call import Call
    from ..context import GuardContext

__all__ = ["DEFAULT_READINESS_POLICY", "OperationalHealth"]

_log = logging.getLogger("guarded_serving.health")
_perf_ns = time.perf_counter_ns
_SEVERITY = {H.OK: 0, H.UNAVAILABLE: 0, "unknown": 0, H.DEGRADED: 1, H.FAILING: 2}

#: Checks whose ``failing`` does not make the service not ready unless configured otherwise:
#: CPU saturation slows a replica but taking it out of rotation only moves the load.
DEFAULT_READINESS_POLICY: dict[str, bool] = {"hardware.cpu": False, "hardware.sampler": False, "runtime.gc": False,
                                             "runtime.latency_trend": False}


class OperationalHealth(Component):
    """Hardware, dependency and downstream health, and latency root causes.

    Parameters
    ----------
    hardware_interval_s : float or None, default=5.0
        Sampling interval of the hardware sampler; ``None`` turns it off.
    providers : sequence of Provider, optional
        Hardware providers; default :class:`~.hardware.PsutilProvider` plus
        :class:`~.gpu.NvmlProvider` unless ``gpu=False``.
    disk_paths : sequence of path, default=(".",)
    gpu : bool or None, default=None
        ``None``: use NVML when it works, report ``unavailable`` otherwise; ``False``: no GPU checks.
    thresholds : Thresholds or mapping, optional
    dependencies : mapping or list of names, optional
        ``None``: the packages the deployment manifest pinned (published by the
        integrity component as ``PINNED_PACKAGES``), when there is one.
    dependency_interval_s : float, default=300
    import_timeout_s : float, default=30
    probes : sequence of dict or Probe
    probe_backoff_max_s : float, default=60
    gc_tracking : bool, default=True
    readiness_policy : mapping of str to bool, optional
        Check name (or prefix, e.g. ``"hardware"``) -> whether its ``failing``
        makes the service not ready; merged over :data:`DEFAULT_READINESS_POLICY`.
    gc_cause_share : float, default=0.5
        A slow call's GC pauses are named as its cause only when they account for at
        least this share of its time over the budget.
    trend_window : int or None, default=1024
        Recent call latencies kept for the latency-trend test (run on the hardware
        sampler's tick); ``None`` turns the test off.
    trend_alpha : float, default=0.001
        False-alarm level of one trend test (:class:`~.trend.LatencyTrend`).
    trend_min_rise : float, default=0.05
        Smallest fitted rise across the window, as a share of the latency budget, that
        makes a significant trend a ``degraded`` verdict (smaller ones are reported only).
    """

    name = "operational"
    span_scope = "anomalous"  # context for anomalous spans (all spans with span_detail="full")
    needs = (SLO_VIOLATED, PINNED_PACKAGES)

    def __init__(self, *, hardware_interval_s: float | None = 5.0, providers: Sequence[Provider] | None = None,
                 disk_paths: Sequence[str] = (".",), gpu: bool | None = None,
                 thresholds: Thresholds | Mapping[str, float] | None = None, dependencies: Any = None,
                 dependency_interval_s: float = 300.0, import_timeout_s: float = 30.0,
                 probes: Sequence[Any] = (), probe_backoff_max_s: float = 60.0, gc_tracking: bool = True,
                 readiness_policy: Mapping[str, bool] | None = None, gc_cause_share: float = 0.5,
                 trend_window: int | None = 1024, trend_alpha: float = 0.001, trend_min_rise: float = 0.05,
                 exit_with_parent: bool = False) -> None:
        if thresholds is None or isinstance(thresholds, Mapping):
            thresholds = Thresholds().with_overrides(thresholds or {})
        self.thresholds = thresholds
        self.parent_watch = ParentWatch() if exit_with_parent else None
        self.hardware_interval_s = hardware_interval_s
        self._providers = providers
        self.disk_paths = tuple(disk_paths)
        self.gpu = gpu
        self.dependency_interval_s = float(dependency_interval_s)
        self.readiness_policy = {**DEFAULT_READINESS_POLICY, **dict(readiness_policy or {})}
        self.sampler: HardwareSampler | None = None
        self._dependency_spec = dependencies
        self._import_timeout_s = import_timeout_s
        self.dependencies: DependencyChecker | None = None
        self.prober = DownstreamProber(probes, backoff_max_s=probe_backoff_max_s, on_change=self._publish) \
            if probes else None
        self.gc = GcMonitor() if gc_tracking else None
        if not 0.0 < gc_cause_share <= 1.0:
            raise ConfigError(f"gc_cause_share={gc_cause_share!r} is invalid: expected a share of the time over "
                              "budget in (0, 1]")
        self.gc_cause_share = float(gc_cause_share)
        if not 0.0 <= trend_min_rise <= 10.0:
            raise ConfigError(f"trend_min_rise={trend_min_rise!r} is invalid: expected a share of the latency budget "
                              "in [0, 10]")
        self.trend_min_rise = float(trend_min_rise)
        try:
            self.trend = LatencyTrend(window=trend_window, alpha=trend_alpha) if trend_window else None
        except ValueError as exc:
            raise ConfigError(f"latency trend settings are invalid: {exc}") from None
        self._gc_slow: tuple[float, float] = (0.0, 0.0)  # pause and excess (ms) of the last gc_pause call
        self._slo_ms = float("inf")
        self._slo_measure = "model"
        self._pending: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        self._transitions: collections.deque[dict[str, Any]] = collections.deque(maxlen=32)
        self._last: dict[str, str] = {}
        self._publish_lock = threading.Lock()
        self._attrs: Mapping[str, Any] = {}
        self._pressure: tuple[str, ...] = ()
        self._dep_worker: PeriodicWorker | None = None
        self._trend_worker: PeriodicWorker | None = None
        self._started = False
        self.slow_calls = 0
        self._gc_slow_at = float("-inf")
        self.slow_calls_by_cause: dict[str, int] = {}
        self.transitions = 0

    @classmethod
    def from_settings(cls, cfg: Any) -> "OperationalHealth":
        """Build from the ``operational`` configuration section."""
        return cls(hardware_interval_s=cfg.hardware_interval_s, disk_paths=cfg.disk_paths or (".",), gpu=cfg.gpu,
                   thresholds=cfg.hardware_thresholds, dependencies=cfg.dependencies,
                   dependency_interval_s=cfg.dependency_interval_s, import_timeout_s=cfg.import_timeout_s,
                   probes=[p if isinstance(p, Probe) else
                           {"timeout_s": cfg.probe_timeout_s, "interval_s": cfg.probe_interval_s, **p}
                           for p in cfg.probes],
                   probe_backoff_max_s=cfg.probe_backoff_max_s, gc_tracking=cfg.gc_tracking,
                   readiness_policy=cfg.readiness_policy, gc_cause_share=cfg.gc_cause_share,
                   trend_window=cfg.trend_window, trend_alpha=cfg.trend_alpha, trend_min_rise=cfg.trend_min_rise,
                   exit_with_parent=cfg.exit_with_parent)

    # -- lifecycle ----------------------------------------------------------------------
    def bind(self, context: "GuardContext") -> None:
        self._slo_ms = float(context.config.latency_slo_ms)
        self._slo_measure = getattr(context.config, "slo_measure", "model")
        spec = self._dependency_spec
        if spec is None:  # no explicit list: the packages the manifest pinned at training time
            spec = context.get(PINNED_PACKAGES, None) or None
        if spec:
            self.dependencies = DependencyChecker(spec, import_timeout_s=self._import_timeout_s)

    def _default_providers(self) -> list[Provider]:
        providers: list[Provider] = [PsutilProvider(disk_paths=self.disk_paths)]
        if self.gpu is not False:
            from .gpu import NvmlProvider

            providers.append(NvmlProvider())
        return providers

    def start(self) -> None:
        self._started = True
        if self.parent_watch is not None:
            self.parent_watch.start()
        if self.gc is not None:
            self.gc.install()
        if self.hardware_interval_s is not None and (self.sampler is None or not self.sampler.running):
            providers = self._providers if self._providers is not None else self._default_providers()
            self.sampler = HardwareSampler(providers, thresholds=self.thresholds,
                                           interval_s=self.hardware_interval_s, on_sample=self._on_sample)
            self.sampler.start()
        if self.dependencies is not None and self._dep_worker is None:
            self.dependencies.check(imports=False)  # installed / pinned: fast, before the first request
            self._dep_worker = PeriodicWorker("dependency-checker", self._check_dependencies,
                                              self.dependency_interval_s, run_first=True, join_timeout_s=5, weak=True).start()
        if self.prober is not None:
            self.prober.start()
        if self.trend is not None and self.sampler is None and self._trend_worker is None:
            # no sampler to tick the trend test: it gets a worker of its own
            self._trend_worker = PeriodicWorker("latency-trend", self._update_trend, 5.0, weak=True).start()
        self._publish()

    def _update_trend(self) -> None:
        assert self.trend is not None
        self.trend.update()
        self._publish()

    def stop(self) -> None:
        self._started = False
        if self.parent_watch is not None:
            self.parent_watch.stop()
        if self._trend_worker is not None:
            self._trend_worker.stop()
            self._trend_worker = None
        if self.gc is not None:
            self.gc.uninstall()
        if self.sampler is not None:
            self.sampler.stop()
        if self._dep_worker is not None:
            self._dep_worker.stop()
            self._dep_worker = None
        if self.prober is not None:
            self.prober.stop()

    def _check_dependencies(self) -> None:
        assert self.dependencies is not None
        # the first round runs while the server starts, with the model's packages just imported by this
        # process: those count as importable without a child interpreter each (about a second of CPU
        # apiece, taken from the first requests); later rounds import in a child, at low priority
        self.dependencies.check(imports=True, trust_loaded=self.dependencies.rounds <= 1)
        self._publish()

    def _on_sample(self, snap: HardwareSnapshot) -> None:
        self._pressure = snap.pressure
        if self.trend is not None:
            self.trend.update()
        self._publish()

    # -- request path ---------------------------------------------------------------------
    def after_call(self, call: "Call") -> None:
        if self._pending:
            self._emit_events()
        latency = call.latency_ms
        trend = self.trend
        if trend is not None and call.error is None and not call.answered:
            trend.append(latency)
        if not call.state.get(SLO_VIOLATED):
            return
        # the time the budget was held to: the request's (queueing included) when it is known
        waited = call.request_ms if call.request_ms is not None and self._slo_measure == "request" else latency
        paused = 0.0
        if self.gc is not None:
            t1 = _perf_ns()
            paused = self.gc.overlap_ms(t1 - int(latency * 1e6), t1)
            if paused > 0.0:
                call.attributes[A.GC_PAUSE_MS] = round(paused, 3)
        tr = None if trend is None else trend.result  # read once: the sampler thread may swap it
        since = 0 if tr is None else trend.calls - tr.at_call  # type: ignore[union-attr]
        found = explain(waited, self._slo_ms, gc_pause_ms=paused, gc_share=self.gc_cause_share, trend=tr,
                        calls_since_trend=since, snapshot=self._pressure, queue_ms=max(waited - latency, 0.0))
        cause = found[0][0] if found else UNKNOWN
        call.attributes[A.LATENCY_CAUSE] = cause
        if found:
            call.attributes[A.LATENCY_CAUSES] = [c for c, _ in found]
            call.attributes[A.LATENCY_CAUSE_SHARES] = [round(sh, 3) for _, sh in found]
            for c, _ in found:
                if c == "gc_pause":
                    self._gc_slow_at = time.monotonic()
                    self._gc_slow = (paused, waited - self._slo_ms)
                elif c == "latency_trend" and tr is not None:
                    call.attributes[A.LATENCY_TREND] = round(tr.slope_ms_per_100_calls or 0.0, 3)
        self.slow_calls += 1
        self.slow_calls_by_cause[cause] = self.slow_calls_by_cause.get(cause, 0) + 1

    def _emit_events(self) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        while self._pending:
            try:
                ev = self._pending.popleft()
            except IndexError:  # another thread took it
                return
            span.add_event(A.HEALTH_TRANSITION_EVENT, ev["attributes"], timestamp=ev["time_ns"])

    # -- read side -----------------------------------------------------------------------
    def _collect(self) -> list[CheckResult]:
        out: list[CheckResult] = []
        if self.sampler is not None:
            out.extend(self.sampler.checks())
        if self.dependencies is not None:
            out.extend(self.dependencies.checks())
            if self._dep_worker is not None:
                broken = self._dep_worker.check("dependencies.checker", what="the dependency check")
                if broken is not None:
                    out.append(broken)
        if self.prober is not None:
            out.extend(self.prober.checks())
        if self.gc is not None:
            out.append(self._gc_check())
        if self.trend is not None:
            out.append(self._trend_check())
        return [self._apply_policy(r) for r in out]

    def _apply_policy(self, r: CheckResult) -> CheckResult:
        best, gates = -1, None
        for sel, allowed in self.readiness_policy.items():
            if (r.name == sel or r.name.startswith(sel + ".")) and len(sel) > best:
                best, gates = len(sel), allowed
        if gates is None or gates == r.affects_readiness:
            return r
        return dataclasses.replace(r, affects_readiness=bool(gates))

    def _gc_check(self) -> CheckResult:
        g = self.gc
        assert g is not None
        recent = [p for p in g.recent() if p["ago_s"] <= 60.0]
        worst = max((p["pause_ms"] for p in recent), default=0.0)
        details = {**g.stats(), "pauses_last_60s": len(recent), "max_pause_last_60s_ms": round(worst, 3),
                   "slow_calls_by_cause": dict(self.slow_calls_by_cause), "gc_cause_share": self.gc_cause_share}
        ago = time.monotonic() - self._gc_slow_at
        if ago <= 60.0:
            paused, excess = self._gc_slow
            return CheckResult("runtime.gc", H.DEGRADED, f"GC pauses explain a slow call {ago:.0f} s ago: "
                               f"{paused:.1f} ms of its {excess:.1f} ms over the {self._slo_ms:g} ms budget "
                               f"({self.slow_calls_by_cause.get('gc_pause', 0)} such calls in all; longest pause in "
                               f"the last 60 s {worst:.1f} ms)", details, False)
        return CheckResult("runtime.gc", H.OK, f"{len(recent)} GC pauses in the last 60 s, longest {worst:.2f} ms; "
                           f"no slow call in the last 60 s owed {self.gc_cause_share:.0%} or more of its time over "
                           "budget to them", details, False)

    def _trend_check(self) -> CheckResult:
        """``runtime.latency_trend``: degraded while the last trend test says the model's latency is rising
        by a material amount (at least ``trend_min_rise`` of the budget across the window)."""
        t = self.trend
        assert t is not None
        r = t.result
        floor = self.trend_min_rise * self._slo_ms
        material = r.rising and r.rise_ms >= floor
        details = {**r.as_dict(), "window": t.window, "tests": t.tests, "slo_ms": self._slo_ms,
                   "rise_ms": r.rise_ms, "min_rise_ms": floor, "material": material}
        reason = t.describe()
        if material:
            over = r.end_ms is not None and r.end_ms > self._slo_ms
            where = f"; the latest calls are fitted at {r.end_ms:.1f} ms, over the {self._slo_ms:g} ms budget" \
                if over else f"; still within the {self._slo_ms:g} ms budget"
            return CheckResult("runtime.latency_trend", H.DEGRADED, reason + where, details, False)
        if r.rising:  # significant, but too small to matter to anyone waiting for the answer
            reason += (f"; a rise of {r.rise_ms:.3g} ms across the window, under {self.trend_min_rise:.0%} of the "
                       f"{self._slo_ms:g} ms budget ({floor:.3g} ms): reported, not a problem")
        return CheckResult("runtime.latency_trend", H.OK if r.calls else H.UNAVAILABLE, reason, details, False)

    def checks(self) -> Iterable[CheckResult]:
        if not self._started:  # no readings before start(): nothing to report yet
            return ()
        return self._collect()

    def span_attributes(self) -> Mapping[str, Any]:
        return self._attrs

    def stats(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"transitions": self.transitions, "recent_transitions": list(self._transitions),
                               "slow_calls_by_cause": dict(self.slow_calls_by_cause)}
        if self.sampler is not None:
            snap = self.sampler.snapshot
            out["hardware"] = {"samples": self.sampler.samples, "last_sample_ms": round(snap.sample_ms, 3),
                               "pressure": list(snap.pressure)}
        if self.gc is not None:
            out["gc"] = self.gc.stats()
        if self.trend is not None:
            out["latency_trend"] = self.trend.result.as_dict()
        if self.dependencies is not None:
            out["dependency_rounds"] = self.dependencies.rounds
        return out

    # -- transitions ---------------------------------------------------------------------
    def _publish(self) -> None:
        """Diff current verdicts against the last seen; log and queue transitions; refresh span attributes."""
        with self._publish_lock:
            results = self._collect()
            for r in results:
                old = self._last.get(r.name)
                if _SEVERITY.get(old or "unknown", 0) == _SEVERITY[r.status]:
                    self._last[r.name] = r.status
                    continue
                self._last[r.name] = r.status
                self._transition(r, old or "unknown")
            attrs = dict(self.sampler.snapshot.attributes) if self.sampler is not None else {}
            attrs[A.HEALTH_OPERATIONAL] = H.worst(r.status for r in results)
            self._attrs = attrs

    def _transition(self, r: CheckResult, old: str) -> None:
        self.transitions += 1
        worse = _SEVERITY.get(r.status, 0) > _SEVERITY.get(old, 0)
        _log.log(logging.WARNING if worse else logging.INFO, "health transition %s: %s -> %s: %s",
                 r.name, old, r.status, r.reason,
                 extra={"guard_check": r.name, "guard_from": old, "guard_to": r.status, "guard_reason": r.reason})
        rec = {"check": r.name, "from": old, "to": r.status, "reason": r.reason, "at": time.time()}
        self._transitions.append(rec)
        self._pending.append({"time_ns": time.time_ns(), "attributes": {
            A.HEALTH_CHECK: r.name, A.HEALTH_FROM: old, A.HEALTH_TO: r.status, A.HEALTH_REASON: r.reason}})
