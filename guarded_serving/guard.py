"""The guard: a decorator around a model's predict path.

::

    guard = Guard(name="cancer", latency_slo_ms=200)

    @bentoml.service
    class Classifier:
        @bentoml.api
        @guard
        def predict(self, inputs: np.ndarray) -> np.ndarray:
            ...

Per call, on the request path, the guard: times the call (monotonic clock),
validates the input matrix, runs its components' request-path hooks, opens
at most one span, and accounts latency, SLO, errors and outcome in O(1).
Everything slower runs in components' background threads.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import threading
import time
from typing import Any, Callable, Iterable, Mapping, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import health as H
from ._version import __version__
from .call import Call
from .component import Component
from .config import GuardConfig
from .errors import ConfigError, InvalidInputError, RejectedInputError
from .operational.latency import LatencyTracker
from .telemetry import attributes as A
from .telemetry.metrics import GuardMetrics
from .telemetry.tracing import resolve_tracer_provider, sampled_parent_context
from .validation import as_feature_matrix

__all__ = ["Guard"]

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("guarded_serving")
_MISSING = object()
_perf_ns = time.perf_counter_ns


class Guard:
    """Guard a model's predict path: timing, SLO, input checks, health, traces.

    Parameters
    ----------
    config : GuardConfig, optional
        A prebuilt configuration. Keyword arguments build one (or override it).
    tracer_provider : opentelemetry.trace.TracerProvider, optional
        Provider for the guard's spans. Default: BentoML's inside a BentoML
        worker, else the global provider (no-op until an application sets one).
    meter_provider : opentelemetry.metrics.MeterProvider, optional
        Provider for the latency histogram; default the global one.
    components : iterable of Component
        Extra components (detectors, health sources) to run with this guard.
    **settings
        Any :class:`GuardConfig` field, e.g. ``name="iris", latency_slo_ms=200``.

    Notes
    -----
    State (counters, quantiles, windows) is per process. BentoML runs one
    process per worker; shared state lives in a store (see ``guarded_serving.store``).
    """

    def __init__(self, config: GuardConfig | None = None, /, *, tracer_provider: Any = None,
                 meter_provider: Any = None, components: Iterable[Component] = (),
                 **settings: Any) -> None:
        if config is None:
            config = GuardConfig(**settings)
        elif settings:
            config = config.replace(**settings)
        self.config = config
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracker = LatencyTracker(slo_ms=config.latency_slo_ms, slo_target=config.slo_target,
                                      windows_s=config.burn_rate_windows_s,
                                      quantile_window=config.latency_window)
        self._components: list[Component] = [*components, *self._default_components()]
        for c in self._components:
            if not isinstance(c, Component):
                raise ConfigError(f"components contains {c!r}: expected guarded_serving.Component instances")
            c.bind(self)
        self._before = [c.before_call for c in self._components if _overrides(c, "before_call")]
        self._after = [c.after_call for c in self._components if _overrides(c, "after_call")]
        self._start_lock = threading.Lock()
        self._started = False
        self._tracer: trace.Tracer | None = None
        self._metrics: GuardMetrics | None = None
        self._span_name = f"guard {config.name}"
        self._static_attrs = {A.MODEL_NAME: config.name, A.MODEL_VERSION: config.version,
                              A.SLO_LATENCY_MS: float(config.latency_slo_ms)}
        self._component_errors: dict[str, str] = {}
        self._full_spans = config.span_detail == "full"

    # -- components -----------------------------------------------------------------
    def _default_components(self) -> list[Component]:
        """Components built from the config (operational health, integrity, edge cases, drift)."""
        cfg = self.config
        comps: list[Component] = []
        # deployment integrity: manifest, signature, permissions, artifact hashes
        if cfg.manifest is not None or cfg.writable_dirs:
            from .integrity.component import IntegrityGuard

            comps.append(IntegrityGuard.from_config(cfg))
        # operational health: hardware sampler, dependencies, downstream probes, GC-pause causes
        if cfg.operational:
            from .operational.component import OperationalHealth

            op_cfg = cfg
            if cfg.dependencies is None and cfg.manifest is not None:
                # no explicit list: check the packages the manifest pinned at training time
                # (an unreadable manifest is the integrity component's to report)
                from .integrity.manifest import Manifest

                try:
                    pins = dict(Manifest.load(cfg.manifest).packages)
                except Exception:
                    pins = {}
                op_cfg = cfg.replace(dependencies=pins) if pins else cfg
            comps.append(OperationalHealth.from_config(op_cfg))
        # edge cases: reference profile, out-of-distribution scores, policies
        if cfg.profile is not None:
            from .edge_cases.component import EdgeCaseComponent

            comps.append(EdgeCaseComponent(cfg.profile, policy=cfg.edge_policy, fpr=cfg.edge_fpr,
                                           fallback=cfg.edge_fallback, detector=cfg.edge_detector))
        # distribution shift and skew
        if cfg.drift:
            from .drift.component import DriftComponent

            comps.append(DriftComponent.from_config(cfg))
        return comps

    @property
    def components(self) -> tuple[Component, ...]:
        return tuple(self._components)

    def component(self, name: str) -> Component:
        """The component called ``name``; KeyError if absent."""
        for c in self._components:
            if c.name == name:
                return c
        raise KeyError(name)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> "Guard":
        """Resolve telemetry providers and start components' background work.

        Called automatically on the first call; call it from your service's
        ``__init__`` so health is meaningful before the first request.
        """
        if self._started:
            return self
        with self._start_lock:
            if self._started:
                return self
            provider = resolve_tracer_provider(self._tracer_provider)
            self._tracer = provider.get_tracer("guarded_serving", __version__)
            self._metrics = GuardMetrics(self.config.name, self.config.version, self._meter_provider)
            for c in self._components:
                c.start()
            self._started = True
        return self

    def stop(self) -> None:
        """Stop components' background work (idempotent)."""
        for c in self._components:
            try:
                c.stop()
            except Exception:  # pragma: no cover - defensive
                _log.exception("component %s failed to stop", c.name)
        self._started = False

    # -- decoration -----------------------------------------------------------------
    def __call__(self, func: F) -> F:
        return self.wrap(func)

    def wrap(self, func: F) -> F:
        """Wrap ``func`` (function or method, sync or async), keeping its signature."""
        if not callable(func):
            raise TypeError(f"@guard expects a function, got {type(func).__name__}")
        input_name, input_index = self._find_input(func)
        prepare, finish = self._prepare, self._finish

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not self._started:
                    self.start()
                t0 = _perf_ns()
                span, token = self._open_span()
                call = None
                try:
                    call = prepare(args, kwargs, input_name, input_index)
                    if not call.answered:
                        call.result = await func(*call.args, **call.kwargs)
                except Exception as exc:
                    finish(call, exc, t0, span, token)
                    raise
                except BaseException:
                    _end_quietly(span, token)
                    raise
                return finish(call, None, t0, span, token)

            wrapper: Any = async_wrapper
        else:
            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not self._started:
                    self.start()
                t0 = _perf_ns()
                span, token = self._open_span()
                call = None
                try:
                    call = prepare(args, kwargs, input_name, input_index)
                    if not call.answered:
                        call.result = func(*call.args, **call.kwargs)
                except Exception as exc:
                    finish(call, exc, t0, span, token)
                    raise
                except BaseException:
                    _end_quietly(span, token)
                    raise
                return finish(call, None, t0, span, token)

            wrapper = sync_wrapper
        wrapper.guard = self
        return wrapper  # type: ignore[no-any-return]

    def _find_input(self, func: Callable[..., Any]) -> tuple[str | None, int | None]:
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        skip = 1 if params and params[0].name in ("self", "cls") else 0
        name = self.config.input_arg
        if name is None:
            cands = [p for p in params[skip:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if not cands:
                return None, None
            name = cands[0].name
        elif name not in sig.parameters:
            raise ConfigError(f"input_arg={name!r} is invalid: {func.__qualname__} has parameters "
                              f"{[p.name for p in params]}")
        p = sig.parameters[name]
        index = params.index(p) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) else None
        return name, index

    # -- request path -----------------------------------------------------------------
    def _open_span(self) -> tuple[Any, Any]:
        ratio = self.config.trace_sample_ratio
        if ratio < 1.0 and random.random() >= ratio:
            return None, None
        span = self._tracer.start_span(self._span_name, kind=SpanKind.INTERNAL,  # type: ignore[union-attr]
                                       attributes=self._static_attrs)
        if not span.is_recording():
            return None, None
        return span, otel_context.attach(trace.set_span_in_context(span))

    def _prepare(self, args: tuple, kwargs: dict, input_name: str | None, input_index: int | None) -> Call:
        value: Any = _MISSING
        if input_index is not None and len(args) > input_index:
            value = args[input_index]
        elif input_name is not None:
            value = kwargs.get(input_name, _MISSING)
        inputs = None
        if value is not _MISSING:
            cfg = self.config
            inputs = as_feature_matrix(value, input_name or "input", n_features=cfg.n_features,
                                       max_rows=cfg.max_batch_rows, allow_nan=cfg.allow_nan)
        call = Call(args, kwargs, inputs, input_name, input_index)
        for hook in self._before:
            self._run_hook(hook, call)
        return call

    def _run_hook(self, hook: Callable[[Call], None], call: Call) -> None:
        try:
            hook(call)
        except (InvalidInputError, RejectedInputError):
            raise
        except Exception as exc:  # a broken detector must not break serving
            owner = getattr(hook, "__self__", None)
            name = getattr(owner, "name", repr(owner))
            if name not in self._component_errors:
                _log.exception("guard component %s raised; serving goes on", name)
            self._component_errors[name] = f"{type(exc).__name__}: {exc}"

    def _finish(self, call: Call | None, exc: BaseException | None, t0: int, span: Any, token: Any) -> Any:
        t1 = _perf_ns()
        latency_ms = (t1 - t0) / 1e6
        if exc is None:
            outcome = A.OUTCOME_OK
        elif isinstance(exc, InvalidInputError):
            outcome = A.OUTCOME_INVALID
        elif isinstance(exc, RejectedInputError):
            outcome = A.OUTCOME_REJECTED
        else:
            outcome = A.OUTCOME_ERROR
        if call is not None:
            call.latency_ms = latency_ms
            call.error = exc
            for hook in self._after:
                self._run_hook(hook, call)
        flagged = call is not None and call.flagged
        violated = self.tracker.record(latency_ms, outcome, flagged)
        anomalous = violated or flagged or outcome != A.OUTCOME_OK
        if self._metrics is not None:
            self._metrics.record(latency_ms / 1000.0, outcome)
        # A span can be recording yet not sampled (BentoML's sampler records
        # everything, RECORD_ONLY when sampled out): only a sampled span is exported.
        exported = span is not None and span.get_span_context().trace_flags.sampled
        if span is not None:
            if exported:
                self._annotate(span, call, exc, outcome, latency_ms, violated, anomalous)
            span.end()
            otel_context.detach(token)
        if anomalous and not exported and self._tracer is not None:
            self._export_anomaly(call, exc, outcome, latency_ms, violated, t1 - t0)
        return None if call is None else call.result

    def _annotate(self, span: Any, call: Call | None, exc: BaseException | None, outcome: str,
                  latency_ms: float, violated: bool, anomalous: bool) -> None:
        span.set_attribute(A.LATENCY_MS, latency_ms)
        span.set_attribute(A.SLO_VIOLATED, violated)
        span.set_attribute(A.OUTCOME, outcome)
        span.set_attribute(A.ANOMALOUS, anomalous)
        full = anomalous or self._full_spans
        for c in self._components:
            if full or c.span_scope == "every":
                attrs = c.span_attributes()
                if attrs:
                    span.set_attributes(attrs)
        if call is not None:
            if call.inputs is not None:
                span.set_attribute(A.BATCH_SIZE, int(call.inputs.shape[0]))
            if call.attributes:
                span.set_attributes(call.attributes)
        if exc is not None:
            span.set_attribute(A.ERROR_TYPE, type(exc).__qualname__)
            if outcome == A.OUTCOME_INVALID:
                span.set_attribute(A.INPUT_PROBLEM, str(exc))
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    def _export_anomaly(self, call: Call | None, exc: BaseException | None, outcome: str,
                        latency_ms: float, violated: bool, duration_ns: int) -> None:
        end_ns = time.time_ns()
        span = self._tracer.start_span(  # type: ignore[union-attr]
            self._span_name, context=sampled_parent_context(), kind=SpanKind.INTERNAL,
            attributes=self._static_attrs, start_time=end_ns - duration_ns)
        if span.is_recording():
            span.set_attribute(A.FORCED_EXPORT, True)
            self._annotate(span, call, exc, outcome, latency_ms, violated, True)
        span.end(end_time=end_ns)

    # -- read side --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and latency quantiles of this worker (JSON-serialisable)."""
        s = self.tracker.snapshot()
        short, long_ = self.config.burn_rate_windows_s
        out: dict[str, Any] = {
            "model": self.config.name,
            "version": self.config.version,
            "calls": s.calls,
            "ok": s.calls - s.errors - s.invalid_inputs - s.rejected,
            "errors": s.errors,
            "invalid_inputs": s.invalid_inputs,
            "rejected": s.rejected,
            "flagged": s.flagged,
            "slo_violations": s.slo_violations,
            "latency_ms": {"p50": s.p50_ms, "p95": s.p95_ms, "p99": s.p99_ms, "max": s.max_ms,
                           "slo": self.config.latency_slo_ms},
            "burn_rate": {f"{short}s": s.burn_rates[0], f"{long_}s": s.burn_rates[1]},
            "error_rate": {f"{short}s": s.error_rates[0], f"{long_}s": s.error_rates[1]},
        }
        for c in self._components:
            extra = c.stats()
            if extra:
                out[c.name] = dict(extra)
        return out

    def health(self) -> dict[str, Any]:
        """Overall status and every check: ``{"status", "ready", "checks": {...}}``."""
        s = self.tracker.snapshot()
        results: list[H.CheckResult] = [self._latency_check(s), self._error_check(s)]
        for c in self._components:
            try:
                results.extend(c.checks())
            except Exception as exc:
                results.append(H.CheckResult(f"{c.name}", H.DEGRADED,
                                             f"the {c.name} check itself raised {type(exc).__name__}: {exc}"))
        if self._component_errors:
            results.append(H.CheckResult(
                "guard.components", H.DEGRADED,
                "component hooks raised on the request path (serving went on): "
                + "; ".join(f"{k}: {v}" for k, v in self._component_errors.items()),
                affects_readiness=False))
        report = H.aggregate(results, self.config.readiness_checks)
        report["model"] = {"name": self.config.name, "version": self.config.version}
        return report

    def is_ready(self) -> bool:
        """False when a readiness-gating check is ``failing`` (wire to ``__is_ready__``)."""
        return bool(self.health()["ready"])

    def _latency_check(self, s: Any) -> H.CheckResult:
        cfg = self.config
        (short, long_), (b_s, b_l) = cfg.burn_rate_windows_s, s.burn_rates
        details = {"slo_ms": cfg.latency_slo_ms, "target": cfg.slo_target,
                   "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                   "burn_rate_short": b_s, "burn_rate_long": b_l,
                   "window_calls_short": s.window_calls[0], "window_violations_short": s.window_violations[0]}
        if s.window_calls[0] < cfg.min_window_calls:
            return H.CheckResult("latency_slo", H.OK, f"{s.window_calls[0]} calls in the last {short} s, "
                                 f"fewer than {cfg.min_window_calls} needed to judge the SLO", details)
        budget_txt = (f"{s.window_violations[0]} of {s.window_calls[0]} calls in the last {short} s took longer "
                      f"than {cfg.latency_slo_ms:g} ms; error budget burning at {b_s:.1f}x")
        if b_s is not None and b_l is not None and b_s >= cfg.burn_rate_failing and b_l >= cfg.burn_rate_failing \
                and s.window_calls[1] >= cfg.min_window_calls:
            return H.CheckResult("latency_slo", H.FAILING, budget_txt + f" (>= {cfg.burn_rate_failing:g}x over "
                                 f"both {short} s and {long_} s)", details)
        if b_s is not None and b_s >= cfg.burn_rate_degraded:
            return H.CheckResult("latency_slo", H.DEGRADED, budget_txt + f" (>= {cfg.burn_rate_degraded:g}x)", details)
        return H.CheckResult("latency_slo", H.OK, budget_txt, details)

    def _error_check(self, s: Any) -> H.CheckResult:
        cfg = self.config
        short = cfg.burn_rate_windows_s[0]
        n, e, rate = s.window_calls[0], s.window_errors[0], s.error_rates[0]
        details = {"window_s": short, "window_calls": n, "window_errors": e, "error_rate": rate,
                   "errors_total": s.errors}
        if n < cfg.min_window_calls:
            return H.CheckResult("model_errors", H.OK, f"{e} errors in {n} calls in the last {short} s "
                                 f"(fewer than {cfg.min_window_calls} calls: not judged)", details)
        text = f"{e} of {n} calls in the last {short} s raised ({rate:.1%})"
        if rate >= cfg.error_rate_failing:
            return H.CheckResult("model_errors", H.FAILING, text, details)
        if rate >= cfg.error_rate_degraded:
            return H.CheckResult("model_errors", H.DEGRADED, text, details)
        return H.CheckResult("model_errors", H.OK, text, details)


def _overrides(component: Component, method: str) -> bool:
    return getattr(type(component), method) is not getattr(Component, method)


def _end_quietly(span: Any, token: Any) -> None:
    if span is not None:
        span.end()
        otel_context.detach(token)
