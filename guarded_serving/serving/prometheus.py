"""Prometheus metrics of a guard, for BentoML's ``/metrics`` (multi-process aware).

A :class:`PrometheusMetrics` component joins the guard like any other
component::

    metrics = PrometheusMetrics()
    guard = Guard(name="cancer", ..., components=[metrics])
    metrics.watch(guard)          # gauges: health checks, burn rate, drift, ...

Inside a BentoML worker the instruments come from ``bentoml.metrics`` (which
imports ``prometheus_client`` only on first use, after BentoML has set
``PROMETHEUS_MULTIPROC_DIR``), so BentoML's ``/metrics`` endpoint merges every
worker's series. Nothing is created at import time or in ``__init__``: the
instruments are created in :meth:`start`, in the worker.

Request path (``after_call``): a handful of O(1) increments on label children
prebuilt at start (calls by outcome, the duration histogram, SLO violations,
edge-case rows, flags and rejections). Background (a
:class:`~guarded_serving.worker.PeriodicWorker`, every ``interval_s``): gauges
read from ``guard.health()`` and ``guard.stats()`` (check status, burn rate,
error rate, drift p-values and effect sizes, the sequential alarm's evidence).

Labels are bounded: ``model``, ``version``, ``outcome`` (4 values),
``window`` (2), ``check`` (the guard's checks), ``feature`` (the input
schema's columns). No label carries a request, a row or a value.

================================================ ======= =====================================
metric                                           type    meaning
================================================ ======= =====================================
guard_calls_total{outcome}                       counter calls by outcome (ok, error,
                                                         invalid_input, rejected)
guard_call_duration_seconds{outcome}             hist.   time of guarded calls as the SLO measures it
                                                         (the request's time with slo_measure
                                                         "request" and RequestTiming, else the
                                                         model call's)
guard_slo_violations_total                       counter calls slower than the latency SLO
guard_slo_latency_seconds                        gauge   the latency SLO
guard_slo_target                                 gauge   the SLO's target share of good calls
guard_slo_burn_rate{window}                      gauge   error-budget burn rate the guard computes
                                                         (worst worker)
guard_error_rate{window}                         gauge   share of calls that raised (worst worker)
guard_check_status{check}                        gauge   0 ok (or unavailable), 1 degraded,
                                                         2 failing (worst worker)
guard_ready                                      gauge   1 ready, 0 not (least ready worker)
guard_worker_calls{pid}                          gauge   calls this worker served (one series
                                                         per live worker)
guard_edge_rows_total                            counter rows scored by the edge-case detector
guard_edge_flagged_rows_total                    counter rows flagged as unlike the training data
guard_edge_flagged_calls_total                   counter calls with a flagged row
guard_edge_rejected_calls_total                  counter calls rejected (policy reject)
guard_edge_expected_flag_rate                    gauge   the detector's target false-positive rate
guard_drift_p_value{feature}                     gauge   latest pooled window's p-value (smallest
                                                         over workers)
guard_drift_effect_size{feature}                 gauge   its effect size (Wasserstein / ref. std)
guard_drift_features_drifted                     gauge   features drifting in that window
guard_drift_window_rows                          gauge   rows in that window
guard_drift_sequential_log10_evidence            gauge   log10 capital of the conformal martingale
guard_drift_sequential_log10_threshold           gauge   log10 of 1/alpha (the alarm level)
guard_drift_sequential_alarm                     gauge   1 once the sequential alarm fired
guard_artifact_verified                          gauge   1 artifacts matched the manifest at the
                                                         last check, 0 not
================================================ ======= =====================================

Every series also carries ``model`` and ``version``. Gauges use
``prometheus_client``'s multi-process modes (``livemax``, ``livemin``,
``liveall``) so that a dead worker's values disappear from the scrape.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
from bisect import bisect_left as _bisect_left
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import health as H
from ..component import Component
from ..keys import EDGE_P_VALUES, EDGE_VERDICT, OUTCOME, SLO_VIOLATED
from ..worker import PeriodicWorker

if TYPE_CHECKING:
    from ..call import Call
    from ..context import GuardContext

__all__ = ["CHECK_STATUS", "DURATION_BUCKETS_S", "PrometheusMetrics", "prometheus_client_module"]

_log = logging.getLogger("guarded_serving.serving")

#: ``guard_check_status`` values: ``unavailable`` (no reading here) counts as ok.
CHECK_STATUS = {H.OK: 0, H.UNAVAILABLE: 0, H.DEGRADED: 1, H.FAILING: 2}
#: Histogram buckets (seconds); the SLO itself is added so ``le="<slo>"`` is exact.
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_OUTCOMES = ("ok", "error", "invalid_input", "rejected")
_BASE = ("model", "version")


def prometheus_client_module() -> Any:
    """``bentoml.metrics`` when BentoML is installed, else ``prometheus_client``.

    ``bentoml.metrics`` forwards to ``prometheus_client`` but imports it on first
    attribute access, after a BentoML worker has set ``PROMETHEUS_MULTIPROC_DIR``
    (BentoML 1.4.x marks the module deprecated; the warning is silenced here).
    """
    try:
        import bentoml.metrics as bm
    except ImportError:  # pragma: no cover - BentoML is a dependency
        import prometheus_client

        return prometheus_client
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in ("Counter", "Gauge", "Histogram"):
            getattr(bm, name)
    return bm


class _Instruments:
    """The metric families, created once per registry and process (shared by guards)."""

    def __init__(self, client: Any, registry: Any, buckets: tuple[float, ...]) -> None:
        kw: dict[str, Any] = {} if registry is None else {"registry": registry}
        C, G = client.Counter, client.Gauge

        def gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livemax") -> Any:
            return G(name, doc, _BASE + labels, multiprocess_mode=mode, **kw)

        self.calls = C("guard_calls_total", "Guarded model calls, by outcome.", _BASE + ("outcome",), **kw)
        self.duration = client.Histogram("guard_call_duration_seconds", "Time of guarded calls, as the latency "
                                         "SLO measures it (request or model call).",
                                         _BASE + ("outcome",), buckets=buckets, **kw)
        self.slo_violations = C("guard_slo_violations_total", "Calls slower than the latency SLO.", _BASE, **kw)
        self.edge_rows = C("guard_edge_rows_total", "Rows scored by the edge-case detector.", _BASE, **kw)
        self.edge_flagged_rows = C("guard_edge_flagged_rows_total",
                                   "Rows flagged as unlike the training data.", _BASE, **kw)
        self.edge_flagged_calls = C("guard_edge_flagged_calls_total", "Calls with at least one flagged row.",
                                    _BASE, **kw)
        self.edge_rejected = C("guard_edge_rejected_calls_total",
                               "Calls rejected as out of distribution (edge policy reject).", _BASE, **kw)
        self.slo_latency = gauge("guard_slo_latency_seconds", "The latency SLO of one call.")
        self.slo_target = gauge("guard_slo_target", "The SLO's target share of calls within the latency budget.")
        self.burn_rate = gauge("guard_slo_burn_rate", "Error-budget burn rate over a window, as the guard "
                               "computes it (worst worker).", ("window",))
        self.error_rate = gauge("guard_error_rate", "Share of calls that raised over a window (worst worker).",
                                ("window",))
        self.check_status = gauge("guard_check_status", "Health check status: 0 ok or unavailable, "
                                  "1 degraded, 2 failing (worst worker).", ("check",))
        self.ready = gauge("guard_ready", "1 when the guard is ready (least ready worker).", mode="livemin")
        self.worker_calls = gauge("guard_worker_calls", "Calls this worker process served.", mode="liveall")
        self.edge_expected = gauge("guard_edge_expected_flag_rate",
                                   "Target false-positive rate of the edge-case flag (the expected flag rate).")
        self.drift_p = gauge("guard_drift_p_value", "Latest pooled window's drift test p-value per feature "
                             "(smallest over workers).", ("feature",), mode="livemin")
        self.drift_effect = gauge("guard_drift_effect_size", "Latest pooled window's effect size per feature "
                                  "(Wasserstein-1 / reference std; total variation if categorical).", ("feature",))
        self.drift_features = gauge("guard_drift_features_drifted", "Features drifting in the latest window.")
        self.drift_rows = gauge("guard_drift_window_rows", "Rows in the latest pooled drift window.")
        self.seq_evidence = gauge("guard_drift_sequential_log10_evidence",
                                  "log10 capital of the conformal test martingale (sequential drift evidence).")
        self.seq_threshold = gauge("guard_drift_sequential_log10_threshold",
                                   "log10(1/alpha): the sequential alarm's level.")
        self.seq_alarm = gauge("guard_drift_sequential_alarm", "1 once the sequential drift alarm fired.")
        self.artifact_verified = gauge("guard_artifact_verified", "1 when the artifacts matched the deployment "
                                       "manifest at the last check.", mode="livemin")


# registry id -> (the registry, its families); the registry is kept so its id is never reused
_instruments: dict[int, tuple[Any, _Instruments]] = {}
_instruments_lock = threading.Lock()


def _instruments_for(registry: Any, buckets: tuple[float, ...]) -> _Instruments:
    """The families on ``registry`` (None: the process registry), created on first use. Guards of one
    process share them (their ``model`` labels differ); the first guard's buckets are kept."""
    with _instruments_lock:
        entry = _instruments.get(id(registry))
        if entry is None or entry[0] is not registry:
            entry = _instruments[id(registry)] = (registry, _Instruments(prometheus_client_module(), registry, buckets))
        return entry[1]


class PrometheusMetrics(Component):
    """Export a guard's findings as Prometheus metrics (see the module docstring for the list).

    Parameters
    ----------
    interval_s : float, default=5.0
        How often the gauges are refreshed from ``guard.health()`` / ``guard.stats()``.
    registry : prometheus_client.CollectorRegistry, optional
        Where to register (tests pass a fresh one). Default: the process registry,
        which BentoML's ``/metrics`` serves (merged over workers in multi-process mode).
    """

    name = "prometheus"
    # after the slo and edge-case components, and after any component that may withhold an answer
    needs = (OUTCOME, SLO_VIOLATED, EDGE_P_VALUES, EDGE_VERDICT)
    span_scope = "anomalous"

    def __init__(self, *, interval_s: float = 5.0, registry: Any = None) -> None:
        self.interval_s = interval_s
        self.registry = registry
        self._health: Callable[[], Mapping[str, Any]] | None = None
        self._stats: Callable[[], Mapping[str, Any]] | None = None
        self._worker: PeriodicWorker | None = None
        self._m: _Instruments | None = None
        self._fast: dict[str, tuple[Any, Any, list[float], list[Any]]] | None = None
        self._refreshes = 0
        self._checks_seen: set[str] = set()

    def watch(self, guard: Any) -> PrometheusMetrics:
        """Read gauges from ``guard.health()`` and ``guard.stats()`` (any object with both)."""
        self._health, self._stats = guard.health, guard.stats
        return self

    # -- life cycle -----------------------------------------------------------------------
    def bind(self, context: GuardContext) -> None:
        if not (isinstance(self.interval_s, (int, float)) and self.interval_s > 0):
            from ..errors import ConfigError

            raise ConfigError(f"PrometheusMetrics(interval_s={self.interval_s!r}) is invalid: expected seconds > 0")
        self._labels = (context.model_name, context.model_version)
        slo = context.config.section("slo")
        self._slo_s = float(slo.latency_slo_ms) / 1000.0
        self._slo_target = float(slo.slo_target)
        self._use_request = getattr(slo, "slo_measure", "model") == "request"

    def start(self) -> None:
        if self._m is None:
            buckets = tuple(sorted({*DURATION_BUCKETS_S, round(self._slo_s, 6)}))
            m = _instruments_for(self.registry, buckets)
            lab = self._labels
            self._calls = {o: m.calls.labels(*lab, o) for o in _OUTCOMES}
            self._durations = {o: m.duration.labels(*lab, o) for o in _OUTCOMES}
            self._violations = m.slo_violations.labels(*lab)
            self._edge_rows = m.edge_rows.labels(*lab)
            self._edge_flagged_rows = m.edge_flagged_rows.labels(*lab)
            self._edge_flagged_calls = m.edge_flagged_calls.labels(*lab)
            self._edge_rejected = m.edge_rejected.labels(*lab)
            for c in (self._violations, self._edge_rows, self._edge_flagged_rows, self._edge_flagged_calls,
                      self._edge_rejected, *self._calls.values()):
                c.inc(0)  # every series exists from the start, so rate() sees its first increase
            # the request path increments the children's value objects directly (see _fast_paths)
            self._fast = _fast_paths(self._calls, self._durations)
            # scored rows, on every call with a profile: a counter child laid out like the calls counters
            self._edge_rows_inc = self._edge_rows._value.inc if self._fast is not None else self._edge_rows.inc
            m.slo_latency.labels(*lab).set(self._slo_s)
            m.slo_target.labels(*lab).set(self._slo_target)
            self._m = m
        if self._health is not None and self._worker is None:
            self._worker = PeriodicWorker(f"prometheus-{self._labels[0]}", self.refresh, float(self.interval_s),
                                          run_first=True, weak=True)
            self._worker.start()

    def stop(self) -> None:
        w, self._worker = self._worker, None
        if w is not None:
            w.stop()

    # -- request path: O(1) increments on prebuilt children ------------------------------------
    def after_call(self, call: Call) -> None:
        if self._m is None:
            return
        outcome = call.outcome
        req = call.request_ms  # the caller's time, when the SLO is held to it (and it is known)
        seconds = (req if req is not None and self._use_request else call.latency_ms) / 1000.0
        fast = self._fast
        if fast is not None:
            calls, total, bounds, buckets = fast[outcome]
            calls.inc(1)
            total.inc(seconds)
            # the first bucket whose bound is >= the value, as observe() finds it (the times come from
            # perf_counter_ns: never NaN, which observe() would put in no bucket and bisect in the first)
            buckets[_bisect_left(bounds, seconds)].inc(1)
        else:
            self._calls[outcome].inc()
            self._durations[outcome].observe(seconds)
        state = call.state
        if state.get(SLO_VIOLATED, False):
            self._violations.inc()
        p = state.get(EDGE_P_VALUES)
        if p is not None:
            self._edge_rows_inc(len(p))
        verdict = state.get(EDGE_VERDICT)
        if verdict is not None:
            self._edge_flagged_rows.inc(len(verdict["flagged_rows"]))
            self._edge_flagged_calls.inc()
            # the edge component's own rejection carries its verdict (not an answer withheld later)
            if outcome == "rejected" and getattr(call.error, "details", None) is verdict:
                self._edge_rejected.inc()

    # -- background: gauges ------------------------------------------------------------------
    def refresh(self) -> None:
        """Set the gauges from the watched guard's health and stats (the worker's task)."""
        m = self._m
        if m is None or self._health is None or self._stats is None:
            return
        lab = self._labels
        report = self._health()
        checks = report.get("checks", {})
        for name, check in checks.items():
            m.check_status.labels(*lab, name).set(CHECK_STATUS.get(check.get("status"), 0))
        for name in self._checks_seen - checks.keys():  # a check that is no longer reported is not failing
            m.check_status.labels(*lab, name).set(0)
        self._checks_seen = set(checks)
        m.ready.labels(*lab).set(1 if report.get("ready", True) else 0)
        stats = self._stats()
        m.worker_calls.labels(*lab).set(stats.get("calls", 0))
        for key, gauge in (("burn_rate", m.burn_rate), ("error_rate", m.error_rate)):
            for window, value in (stats.get(key) or {}).items():
                if value is not None:
                    gauge.labels(*lab, window).set(value)
        edge = stats.get("edge_cases")
        if isinstance(edge, Mapping) and edge.get("fpr") is not None:
            m.edge_expected.labels(*lab).set(float(edge["fpr"]))
        integrity = stats.get("integrity")
        if isinstance(integrity, Mapping) and integrity.get("verified") is not None:
            m.artifact_verified.labels(*lab).set(1 if integrity["verified"] else 0)
        drift = stats.get("drift")
        if isinstance(drift, Mapping):
            self._drift(m, lab, drift)
        self._refreshes += 1

    @staticmethod
    def _drift(m: _Instruments, lab: tuple[str, str], drift: Mapping[str, Any]) -> None:
        features = drift.get("features") or {}
        for feature, r in features.items():
            if r.get("p_value") == r.get("p_value"):  # NaN (a constant column) is not exported
                m.drift_p.labels(*lab, feature).set(r["p_value"])
            if r.get("effect") == r.get("effect"):
                m.drift_effect.labels(*lab, feature).set(r["effect"])
        if features:
            m.drift_features.labels(*lab).set(sum(1 for r in features.values() if r.get("drifted")))
            m.drift_rows.labels(*lab).set(drift.get("window_rows", 0))
        seq = drift.get("sequential")
        if isinstance(seq, Mapping) and seq.get("n"):
            m.seq_evidence.labels(*lab).set(seq["log10_capital"])
            m.seq_threshold.labels(*lab).set(seq["threshold_log10"])
            m.seq_alarm.labels(*lab).set(1 if seq.get("alarm") else 0)

    # -- read side ---------------------------------------------------------------------------
    def checks(self) -> Any:
        w = self._worker
        c = None if w is None else w.check("metrics.prometheus", what="refreshing the Prometheus gauges")
        return () if c is None else (c,)

    def stats(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"refreshes": self._refreshes, "pid": os.getpid(), "interval_s": self.interval_s}
        if self._worker is not None:
            out["background"] = self._worker.stats()
        return out


def _fast_paths(calls: Mapping[str, Any], durations: Mapping[str, Any]
                ) -> dict[str, tuple[Any, Any, list[float], list[Any]]] | None:
    """Per outcome, the value objects behind the calls counter and the duration histogram:
    ``(calls value, sum value, upper bounds, bucket values)``, or None when this
    ``prometheus_client`` lays its children out otherwise.

    ``Counter.inc`` and ``Histogram.observe`` check observability and the sign, then scan the
    buckets in Python; the request path spends a third of its Prometheus cost there. These are
    the objects they end up incrementing (``prometheus_client`` 0.x: ``_value``, ``_sum``,
    ``_upper_bounds``, ``_buckets``; thread-safe, and multi-process aware in a BentoML worker),
    so the series are the same either way (``tests/test_serving_prometheus.py`` reads them).
    """
    out: dict[str, tuple[Any, Any, list[float], list[Any]]] = {}
    try:
        for outcome, counter in calls.items():
            h = durations[outcome]
            value, total, bounds, buckets = counter._value, h._sum, list(h._upper_bounds), list(h._buckets)
            if not (callable(value.inc) and callable(total.inc) and len(bounds) == len(buckets) and bounds
                    and bounds[-1] == math.inf and all(callable(b.inc) for b in buckets)):
                return None
            out[outcome] = (value, total, bounds, buckets)
    except (AttributeError, KeyError, TypeError):
        return None
    return out
