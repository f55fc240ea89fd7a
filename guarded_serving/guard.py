"""The guard: a decorator around a model's predict path.

::

    guard = Guard(name="cancer", latency_slo_ms=200)

    @bentoml.service
    class Classifier:
        @bentoml.api
        @guard
        def predict(self, inputs: np.ndarray, ctx: bentoml.Context) -> np.ndarray:
            ...

This module holds the request path only. The capabilities (latency SLO,
integrity, operational health, edge cases, drift) are components built from
the configuration's sections by their own factories
(:mod:`guarded_serving.registry`), bound with a read-only
:class:`~guarded_serving.context.GuardContext`, and ordered by the keys they
provide and need. Per call the guard: times the call (monotonic clock),
validates the input matrix, runs the components' request-path hooks, opens
at most one span, and ends it whatever happens (see ``docs/architecture.md``).
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import threading
import time
from typing import Any, Callable, Iterable, TypeVar

import numpy as np
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import health as H
from . import native
from ._version import __version__
from .arrival import current_request as _current_request
from .call import REQUEST_ID_HEADER, Call
from .component import Component
from .config import GuardConfig
from .context import GuardContext
from .errors import ConfigError, InvalidInputError, RejectedInputError, is_client_error
from .keys import FEATURES, INPUT_SCHEMA, SLO_VIOLATED
from .registry import capabilities
from .telemetry import attributes as A
from .telemetry.metrics import GuardMetrics
from .telemetry.tracing import resolve_tracer_provider, sampled_parent_context
from .validation import check_plausible, plausible_limits
from .views import FeatureView, InputView, NumberView, guess_kind

__all__ = ["Guard"]

F = TypeVar("F", bound=Callable[..., Any])
_log = logging.getLogger("guarded_serving")
_MISSING = object()
_F64 = np.dtype(np.float64)
_ALL = np.logical_and.reduce  # ndarray.all() without its Python-level wrapper (numpy._core._methods)


def _within_numpy(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> bool:
    return bool(_ALL((x >= low) & (x <= high), axis=None))


#: every value of a float64 matrix within its column's [low, high] (NaN is not): one compiled call when built
_within = native.kernels.all_within if native.kernels is not None else _within_numpy
_perf_ns = time.perf_counter_ns
_HOOKS = ("before_call", "after_call")


class Guard:
    """Guard a model's predict path: timing, SLO, input checks, health, traces.

    Parameters
    ----------
    config : GuardConfig, optional
        A prebuilt configuration. Keyword arguments build one (or override it).
    tracer_provider : opentelemetry.trace.TracerProvider, optional
        Provider for the guard's spans. Default: the one a serving integration
        supplies (BentoML's inside a BentoML worker, once
        :mod:`guarded_serving.serving.bentoml` is imported), else the global provider.
    meter_provider : opentelemetry.metrics.MeterProvider, optional
        Provider for the latency histogram; default the global one.
    components : iterable of Component
        Components of your own (rules, detectors, health sources). They are placed
        among the built-in ones by the keys they provide and need.
    **settings
        Any :class:`GuardConfig` setting, e.g. ``name="iris", latency_slo_ms=200``.

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
        self._explicit_tracer_provider = tracer_provider
        self.context = GuardContext(config, meter_provider=meter_provider,
                                    tracer_provider_resolver=lambda: resolve_tracer_provider(tracer_provider))
        comps: list[Component] = []
        for cap in capabilities():
            c = cap.from_config(config.section(cap.name), self.context)
            if c is not None:
                comps.append(c)
        for c in components:
            if not isinstance(c, Component):
                raise ConfigError(f"components contains {c!r}: expected guarded_serving.Component instances")
            comps.append(c)
        self._components = _resolve_order(comps)
        for c in self._components:
            c.bind(self.context)
            self.context._publish(c.name, c.resources())
        # components whose attributes go on every recorded span (the rest only on anomalous ones)
        self._span_sources = tuple(c for c in self._components if c.span_scope == "every"
                                   and _overrides(c, "span_attributes"))
        self._before = tuple(c.before_call for c in self._components if _overrides(c, "before_call"))
        self._after = tuple(c.after_call for c in self._components if _overrides(c, "after_call"))
        self._read_input = self._input_reader(config)
        self._sample_ratio = config.trace_sample_ratio
        self._start_lock = threading.Lock()
        self._started = False
        self._tracer: trace.Tracer | None = None
        self._metrics: GuardMetrics | None = None
        self._span_name = f"guard {config.name}"
        # every span names the model; the guard's own span gets the version when it starts; the budget, the
        # deployment's constants, the anomaly markers and the outcome go on anomalous spans, or on every span
        # with span_detail="full" (_annotate); a server span an ordinary call annotates gets the name only
        self._static_attrs = {A.MODEL_NAME: config.name, A.MODEL_VERSION: config.version}
        self._slo_ms = float(config.latency_slo_ms)
        self._component_errors: dict[tuple[str, str], str] = {}
        self._full_spans = config.span_detail == "full"
        # what an ordinary call puts on the server span it annotates (compact: the model's name only)
        self._host_static = self._static_attrs if self._full_spans else {A.MODEL_NAME: config.name}
        self._span_mode = config.span_mode

    # -- components -----------------------------------------------------------------
    @property
    def components(self) -> tuple[Component, ...]:
        """The bound components, in the order their hooks run."""
        return tuple(self._components)

    def component(self, name: str) -> Component:
        """The component called ``name``; KeyError if absent."""
        for c in self._components:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def n_features(self) -> int | None:
        """Columns of the monitored feature matrix (the config's, else the profile's), or None."""
        return self._n_features

    @property
    def view(self) -> InputView | None:
        """The input view that reads a call's input into monitored features, or None
        (numbers read per call when numeric, nothing inspected otherwise)."""
        return self._view

    def _input_reader(self, config: GuardConfig) -> Callable[[Any, str], Any] | None:
        """How a call's input becomes ``call.inputs``: the profile's view, else ``input_kind`` or
        ``features``, else numbers when the input is numeric; None when nothing needs it."""
        schema = self.context.get(INPUT_SCHEMA, None)
        self._n_features = config.n_features if config.n_features is not None else (
            schema.n_features if schema is not None else None)
        explicit = (config.input_kind is not None or config.features is not None or config.n_features is not None
                    or config.allow_nan)
        needed = any(FEATURES in c.needs for c in self._components)
        self._view: InputView | None = None
        if not (needed or explicit):
            return None  # no component reads features: the input is not inspected at all
        self._limits: tuple[Any, Any, float] | None = None  # (low, high, ranges): read once per call
        self._fast_limits: tuple[Any, Any, int, int] | None = None  # (low, high, features, rows): see below
        ranges = config.implausible_ranges
        if (ranges is not None and schema is not None and schema.minimum is not None
                and schema.maximum is not None and schema.view is None):
            self._limits = (*plausible_limits(schema.minimum, schema.maximum, ranges), float(ranges))
            self._limit_names = tuple(schema.feature_names)
        nan_mask = schema.nan_allowed if schema is not None else None
        allow_nan: Any = True if config.allow_nan else (nan_mask if nan_mask is not None else False)
        names = tuple(schema.feature_names) if schema is not None else ()
        if schema is not None and schema.view is not None:
            self._view = schema.view
        elif config.features is not None:
            self._view = FeatureView(config.features)
        elif config.input_kind not in (None, "numbers"):
            raise ConfigError(f"input_kind={config.input_kind!r} needs a reference profile built with that view "
                              f"(guarded-serving profile --kind {config.input_kind}) to learn its settings")
        if self._view is not None:
            return self._view.transform
        numbers = NumberView(n_features=self._n_features, allow_nan=allow_nan, max_rows=config.max_batch_rows,
                             feature_names=names or None)
        limits = self._limits
        if (limits is not None and self._n_features is not None and limits[0].shape == (self._n_features,)
                and np.isfinite(limits[0]).all() and np.isfinite(limits[1]).all()):
            # a float64 matrix (numbers to either reader below) whose every value lies within the finite
            # plausibility limits is finite and plausible: the number view returns it unchanged and
            # check_plausible passes it, so one comparison stands for both (Guard._prepare)
            self._fast_limits = (np.ascontiguousarray(limits[0], dtype=np.float64),
                                 np.ascontiguousarray(limits[1], dtype=np.float64), self._n_features,
                                 config.max_batch_rows)
        if config.input_kind == "numbers" or config.n_features is not None:
            self._view = numbers
            return numbers.transform
        read = numbers.transform

        def numbers_when_numeric(value: Any, field: str) -> Any:
            # no view configured: numeric inputs are checked and monitored, others left alone
            return read(value, field) if guess_kind(value) == "numbers" else None

        return numbers_when_numeric

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
            provider = resolve_tracer_provider(self._explicit_tracer_provider)
            self.context._set_tracer_provider(provider)
            self._tracer = provider.get_tracer("guarded_serving", __version__)
            self._metrics = GuardMetrics(self.config.name, self.config.version, self.context.meter_provider)
            for i, c in enumerate(self._components):
                try:
                    c.start()
                except ConfigError:  # a setting that can never work (a store refusing the password): fail now
                    for done in self._components[:i]:
                        try:
                            done.stop()
                        except Exception:  # pragma: no cover - defensive
                            _log.exception("component %s failed to stop", done.name)
                    raise
                except Exception as exc:  # its background work is missing: health says so, serving goes on
                    self._component_failed(c.name, "start", exc)
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
        input_name, input_index, ctx_name, ctx_index = self._find_arguments(func)
        prepare, finish = self._prepare, self._finish

        def new_call(args: tuple, kwargs: dict, trace_source: Any) -> Call:
            """The call, with where its response headers go (the header list of the request a serving
            middleware marked, else a declared request context) and its request id header."""
            mark = _current_request()
            sink = response = None
            if mark is not None and mark.headers is not None:
                if not mark.claimed:  # the request's first guarded call sends the headers, not one inside it
                    mark.claimed = True
                    sink = mark.headers
            elif ctx_name is not None:
                response = _response_of(args, kwargs, ctx_name, ctx_index)
            call = Call(args, kwargs, None, input_name, input_index, response,
                        trace_source=trace_source, header_sink=sink)
            if mark is not None:
                call.arrival_ns = mark.arrival_ns
            if sink is not None or response is not None:
                call.set_header(REQUEST_ID_HEADER, call.request_id)
            return call

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not self._started:
                    self.start()
                t0 = _perf_ns()
                span, token, host = self._open_span()
                call = new_call(args, kwargs, span if span is not None else host)
                try:
                    prepare(call)
                    if not call.answered:
                        call.result = await func(*call.args, **call.kwargs)
                except Exception as exc:
                    finish(call, exc, t0, span, token, host)
                    raise
                except BaseException:
                    _end_quietly(span, token)
                    raise
                return finish(call, None, t0, span, token, host)

            wrapper: Any = async_wrapper
        else:
            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                if not self._started:
                    self.start()
                t0 = _perf_ns()
                span, token, host = self._open_span()
                call = new_call(args, kwargs, span if span is not None else host)
                try:
                    prepare(call)
                    if not call.answered:
                        call.result = func(*call.args, **call.kwargs)
                except Exception as exc:
                    finish(call, exc, t0, span, token, host)
                    raise
                except BaseException:
                    _end_quietly(span, token)
                    raise
                return finish(call, None, t0, span, token, host)

            wrapper = sync_wrapper
        wrapper.guard = self
        # Frameworks read the signature on every request (BentoML 1.4 calls inspect.signature on
        # the API function per call): a stored one spares unwrapping and rebuilding it each time.
        wrapper.__signature__ = inspect.signature(func)
        return wrapper  # type: ignore[no-any-return]

    def _find_arguments(self, func: Callable[..., Any]) -> tuple[str | None, int | None, str | None, int | None]:
        """The input parameter (name, position) and the request-context parameter, if declared."""
        sig = inspect.signature(func)
        params = list(sig.parameters.values())
        skip = 1 if params and params[0].name in ("self", "cls") else 0
        ctx = next((p for p in params[skip:] if _is_request_context(p)), None)
        ctx_index = params.index(ctx) if ctx is not None and ctx.kind in (ctx.POSITIONAL_ONLY,
                                                                          ctx.POSITIONAL_OR_KEYWORD) else None
        name = self.config.input_arg
        if name is None:
            cands = [p for p in params[skip:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p is not ctx]
            if not cands:
                return None, None, ctx and ctx.name, ctx_index
            name = cands[0].name
        elif name not in sig.parameters:
            raise ConfigError(f"input_arg={name!r} is invalid: {func.__qualname__} has parameters "
                              f"{[p.name for p in params]}")
        p = sig.parameters[name]
        index = params.index(p) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) else None
        return name, index, ctx and ctx.name, ctx_index

    # -- request path -----------------------------------------------------------------
    def _open_span(self) -> tuple[Any, Any, Any]:
        """``(span, context token, host)``: the guard's own span, or (span_mode server) the
        enclosing recording span that ordinary calls annotate instead of adding one."""
        ratio = self._sample_ratio
        if ratio < 1.0 and random.random() >= ratio:
            return None, None, None
        if self._span_mode != "own":
            host = trace.get_current_span()
            if host.is_recording() and (self._span_mode == "server" or getattr(host, "kind", None) is SpanKind.SERVER):
                return None, None, host
        span = self._tracer.start_span(self._span_name, kind=SpanKind.INTERNAL,  # type: ignore[union-attr]
                                       attributes=self._static_attrs)
        if not span.is_recording():
            return None, None, None
        return span, otel_context.attach(trace.set_span_in_context(span)), None

    def _prepare(self, call: Call) -> None:
        """Validate the input matrix into ``call.inputs``, then run the before_call hooks."""
        read = self._read_input
        if read is not None:
            args, kwargs, index, name = call.args, call.kwargs, call._input_index, call.input_name
            value: Any = _MISSING
            if index is not None and len(args) > index:
                value = args[index]
            elif name is not None:
                value = kwargs.get(name, _MISSING)
            fast = self._fast_limits
            if (fast is not None and type(value) is np.ndarray and value.dtype == _F64 and value.ndim == 2
                    and value.shape[1] == fast[2] and 0 < value.shape[0] <= fast[3]
                    and _within(value, fast[0], fast[1])):
                call.inputs = value  # within the limits: what the view and the plausibility check pass as is
            elif value is not _MISSING:
                try:
                    call.inputs = read(value, name or "input")
                except InvalidInputError:
                    raise
                except Exception as exc:  # a view failing on an odd input: serving goes on, unmonitored
                    self._component_failed("view", "transform", exc)
                limits = self._limits
                if limits is not None and call.inputs is not None:
                    check_plausible(call.inputs, limits[0], limits[1], name or "input", limits[2],
                                    self._limit_names)
        for hook in self._before:
            try:
                hook(call)
            except (InvalidInputError, RejectedInputError):
                raise
            except Exception as exc:  # a broken component must not break serving
                self._component_failed(hook.__self__.name, "before_call", exc)

    def _component_failed(self, owner: str, hook: str, exc: BaseException) -> None:
        key = (owner, hook)
        if key not in self._component_errors:
            _log.error("guard component %s raised in %s; serving goes on", owner, hook, exc_info=exc)
        self._component_errors[key] = f"{type(exc).__name__}: {exc}"

    def _finish(self, call: Call, exc: BaseException | None, t0: int, span: Any, token: Any,
                host: Any = None) -> Any:
        """Account and annotate the call; always ends the span and detaches the context. It raises
        only a rejection an after_call hook made (an answer withheld), after all of that."""
        withheld: RejectedInputError | None = None
        try:
            t1 = _perf_ns()
            call.latency_ms = latency_ms = (t1 - t0) / 1e6
            arrived = call.arrival_ns
            if arrived is not None and arrived <= t0:
                call.request_ms = (t1 - arrived) / 1e6
            if exc is None:
                outcome = A.OUTCOME_OK
            elif isinstance(exc, RejectedInputError):
                outcome = A.OUTCOME_REJECTED
            elif isinstance(exc, InvalidInputError) or is_client_error(exc):
                outcome = A.OUTCOME_INVALID  # the caller's doing (a 4xx), never a model error
            else:
                outcome = A.OUTCOME_ERROR
            call.outcome, call.error = outcome, exc
            for hook in self._after:
                try:
                    hook(call)
                except RejectedInputError as rejection:  # an answer withheld (output check, reject policy)
                    if exc is None:
                        exc = withheld = rejection
                        outcome = A.OUTCOME_REJECTED
                        call.outcome, call.error = outcome, rejection
                except Exception as hook_exc:
                    self._component_failed(hook.__self__.name, "after_call", hook_exc)
            violated = call.state.get(SLO_VIOLATED, False)
            anomalous = violated or call.flagged or outcome != A.OUTCOME_OK
            if self._metrics is not None:
                self._metrics.record(latency_ms / 1000.0, outcome)
            # A span can be recording yet not sampled (BentoML's sampler records
            # everything, RECORD_ONLY when sampled out): only a sampled span is exported.
            exported = span is not None and span.get_span_context().trace_flags.sampled
            if exported:
                self._annotate(span, call, exc, outcome, latency_ms, violated, anomalous)
            elif host is not None and not anomalous and host.get_span_context().trace_flags.sampled:
                # an ordinary call under a server span: its attributes (the static ones too, in the same
                # set_attributes call), no span of its own
                self._annotate(host, call, None, outcome, latency_ms, violated, False, self._host_static)
            if anomalous and not exported and self._tracer is not None:
                if span is not None:  # end the unsampled span first: the export's parent is the caller's
                    span, live = None, span
                    self._end_span(live, token)
                self._export_anomaly(call, exc, outcome, latency_ms, violated, t1 - t0)
        except Exception as guard_exc:  # the guard's own failure never costs the caller the result
            self._component_failed("guard", "finish", guard_exc)
        finally:
            if span is not None:
                self._end_span(span, token)
        if withheld is not None:
            raise withheld
        return call.result

    def _end_span(self, span: Any, token: Any) -> None:
        try:
            span.end()
        finally:
            otel_context.detach(token)

    def _annotate(self, span: Any, call: Call, exc: BaseException | None, outcome: str,
                  latency_ms: float, violated: bool, anomalous: bool, static: dict[str, Any] | None = None) -> None:
        # one set_attributes call: the SDK takes its lock and validates once per call, not per attribute
        attrs: dict[str, Any] = {} if static is None else dict(static)
        attrs[A.LATENCY_MS] = latency_ms
        attrs[A.REQUEST_ID] = call.request_id
        full = anomalous or self._full_spans
        # an ordinary call's span (compact) carries the facts only it has: each attribute costs validation on
        # the request path and OTLP encoding in the exporter. Its outcome is "ok" (else it would be anomalous),
        # and on the server span it annotates its request time is that span's duration; both are on anomalous
        # spans, and on every span with span_detail="full"
        on_server_span = static is not None  # the host path (an ordinary call under a server span) passes them
        if call.request_ms is not None and (full or not on_server_span):
            attrs[A.REQUEST_LATENCY_MS] = call.request_ms
        if full:
            attrs[A.OUTCOME] = outcome
            attrs[A.SLO_LATENCY_MS] = self._slo_ms
            attrs[A.SLO_VIOLATED] = violated
            attrs[A.ANOMALOUS] = anomalous
        for c in self._span_sources if not full else self._components:
            try:
                extra = c.span_attributes()
                if extra:
                    attrs.update(extra)
            except Exception as e:
                self._component_failed(c.name, "span_attributes", e)
        if call.inputs is not None:
            attrs[A.BATCH_SIZE] = int(call.inputs.shape[0])
        if call.attributes:
            for key, value in call.attributes.items():  # a callable value is built now (lazy explanations)
                attrs[key] = value() if callable(value) else value
        if exc is not None:
            attrs[A.ERROR_TYPE] = type(exc).__qualname__
            if outcome == A.OUTCOME_INVALID:
                attrs[A.INPUT_PROBLEM] = str(exc)
        span.set_attributes(attrs)
        if exc is not None:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

    def _export_anomaly(self, call: Call, exc: BaseException | None, outcome: str,
                        latency_ms: float, violated: bool, duration_ns: int) -> None:
        """The guard span of an anomalous call that has none yet (sampled out, or span_mode
        server), with the call's real start and end, under the caller's span marked sampled."""
        end_ns = time.time_ns()
        parent_sampled = trace.get_current_span().get_span_context().trace_flags.sampled
        span = self._tracer.start_span(  # type: ignore[union-attr]
            self._span_name, context=sampled_parent_context(), kind=SpanKind.INTERNAL,
            attributes=self._static_attrs, start_time=end_ns - duration_ns)
        try:
            if span.is_recording():
                if not parent_sampled:
                    span.set_attribute(A.FORCED_EXPORT, True)
                self._annotate(span, call, exc, outcome, latency_ms, violated, True)
        finally:
            span.end(end_time=end_ns)

    # -- artifacts ----------------------------------------------------------------------
    def open_artifact(self, path: Any) -> bytes:
        """The bytes of an artifact (the model's pickle), verified by the integrity component:
        load the model from them (``pickle.loads(guard.open_artifact(path))``) so that what is
        deserialised is what was verified. Raises ``IntegrityError`` for a file that does not
        match the manifest, whatever ``integrity_policy`` says; without a manifest it only reads."""
        for c in self._components:
            opener = getattr(c, "open_artifact", None)
            if opener is not None:
                return opener(path)  # type: ignore[no-any-return]
        with open(path, "rb") as fh:
            return fh.read()

    # -- read side --------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters and latency quantiles of this worker (JSON-serialisable)."""
        out: dict[str, Any] = {"model": self.config.name, "version": self.config.version}
        for c in self._components:
            try:
                extra = c.stats()
            except Exception as exc:
                self._component_failed(c.name, "stats", exc)
                extra = {"error": f"stats() raised {type(exc).__name__}: {exc}"}
            if not extra:
                continue
            if c.stats_at_top:
                out.update(extra)
            else:
                out[c.name] = dict(extra)
        return out

    def health(self) -> dict[str, Any]:
        """Overall status and every check: ``{"status", "ready", "checks": {...}}``."""
        results: list[H.CheckResult] = []
        for c in self._components:
            try:
                results.extend(c.checks())
            except Exception as exc:
                self._component_failed(c.name, "checks", exc)
                results.append(H.CheckResult(f"{c.name}", H.DEGRADED,
                                             f"the {c.name} check itself raised {type(exc).__name__}: {exc}"))
        if self._component_errors:
            results.append(H.CheckResult(
                "guard.components", H.DEGRADED,
                "component hooks raised (serving went on): "
                + "; ".join(f"{name}.{hook}: {text}" for (name, hook), text in self._component_errors.items()),
                {"errors": [{"component": name, "hook": hook, "error": text}
                            for (name, hook), text in self._component_errors.items()]},
                affects_readiness=False))
        report = H.aggregate(results, self.config.readiness_checks)
        report["model"] = {"name": self.config.name, "version": self.config.version}
        return report

    def check(self, inputs: Any, *, explain: bool = True) -> list[Any]:
        """Edge-case verdicts for ``inputs`` without calling the model (batch screening, tests).

        ``inputs`` is what the guarded function takes (read and validated the same way: a
        bad input raises :class:`~guarded_serving.errors.InvalidInputError`). Returns one
        :class:`~guarded_serving.edge_cases.RowVerdict` per row: ``p_value`` (every row,
        flagged or not), ``flagged`` (``p_value <= edge_fpr``), ``part_p_values`` and, for
        flagged rows, ``reasons``. Nothing is counted as traffic. Needs a profile.
        """
        try:
            edge = self.component("edge_cases")
        except KeyError:
            raise ConfigError("guard.check needs a reference profile: Guard(profile=...)") from None
        x = self._read_input(inputs, "inputs") if self._read_input is not None else None
        if x is None:
            raise InvalidInputError("inputs", "not readable as the profile's features")
        if getattr(self, "_limits", None) is not None:  # validated exactly like a request: implausible values refused
            check_plausible(x, self._limits[0], self._limits[1], "inputs", self.config.implausible_ranges,
                            self._limit_names)
        return edge.check(x, explain=explain)  # type: ignore[attr-defined, no-any-return]

    # -- feedback ---------------------------------------------------------------------
    def record_feedback(self, request_id: str, label: Any, *, row: int | None = None,
                        source: str | None = None) -> Any:
        """Record the true outcome of a prediction, by its request id (``X-Request-Id``).

        ``label`` is the true class (classifiers) or value (regressors) of row ``row`` (default
        0), or a list with one per row of the request. Returns a
        :class:`~guarded_serving.performance.feedback.FeedbackResult` (``ok``, ``status``,
        ``http_status``, ``message``); idempotent. Needs the performance capability
        (``performance=True`` or ``expectations=...``). ``source`` optionally tags where the
        label came from (``"model"``: it exists because the model acted on its answer;
        ``"exploration"``; ``"organic"`` or any short tag: independent); the feedback-loop check
        reads the share of labels the model's own outputs produced from it.
        """
        return self._performance().record_feedback(request_id, label, row=row, source=source)

    def record_feedback_many(self, items: Iterable[Any]) -> list[Any]:
        """Record many outcomes at once (items ``{"request_id", "label"[, "row"][, "source"]}`` or tuples):
        one :class:`~guarded_serving.performance.feedback.FeedbackResult` per row, in order; a bad
        item never costs the others."""
        return self._performance().record_feedback_many(items)

    def _performance(self) -> Any:
        for c in self._components:
            if c.name == "performance" and hasattr(c, "record_feedback_many"):
                return c
        raise ConfigError("feedback needs the performance capability: build the guard with performance=True "
                          "or expectations={...}")

    def analyze_now(self) -> dict[str, Any]:
        """Run the drift analysis now, in this thread, and return its findings.

        Flushes this worker's buffered rows to the drift store, tests the pooled window (features,
        missing rates, the joint test, predictions), feeds the sequential alarm and runs the skew check
        once due, exactly as one background cycle would; returns
        ``{"status", "drifted", "checks", "sequential", "skew", "pooled_rows", "sampling"}``
        (see :meth:`guarded_serving.drift.DriftComponent.analyze_now`). Raises ``KeyError`` when the
        guard has no drift component (``drift=False``).
        """
        try:
            drift = self.component("drift")
        except KeyError:
            raise KeyError("analyze_now() needs drift monitoring: build the Guard with drift=True") from None
        return drift.analyze_now()  # type: ignore[attr-defined, no-any-return]

    def is_ready(self) -> bool:
        """False when a readiness-gating check is ``failing`` (wire to ``__is_ready__``)."""
        return bool(self.health()["ready"])


def _resolve_order(components: list[Component]) -> list[Component]:
    """Components in hook order: providers of a key before the components that need it,
    otherwise as given. A duplicate name or a cycle of needs is a ConfigError."""
    seen: dict[str, Component] = {}
    for c in components:
        if c.name in seen:
            raise ConfigError(f"two components are named {c.name!r} ({type(seen[c.name]).__name__} and "
                              f"{type(c).__name__}): component names must be unique within a guard")
        seen[c.name] = c
    providers: dict[Any, list[Component]] = {}
    for c in components:
        for k in c.provides:
            providers.setdefault(k, []).append(c)
    placed: list[Component] = []
    pending = list(components)
    while pending:
        for c in pending:
            deps = {p.name for k in c.needs for p in providers.get(k, ()) if p is not c}
            if deps <= {p.name for p in placed}:
                placed.append(c)
                pending.remove(c)
                break
        else:
            raise ConfigError("components need each other in a cycle: " + ", ".join(
                f"{c.name} needs {[k.name for k in c.needs]}" for c in pending))
    return placed


def _is_request_context(p: inspect.Parameter) -> bool:
    """A parameter through which the framework passes the request context (``ctx: bentoml.Context``)."""
    ann = p.annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__qualname__", "")
    return (isinstance(text, str) and text.rsplit(".", 1)[-1] == "Context") or (
        ann is inspect.Parameter.empty and p.name in ("ctx", "context"))


def _response_of(args: tuple, kwargs: dict, name: str, index: int | None) -> Any:
    ctx = kwargs.get(name) if index is None or len(args) <= index else args[index]
    return getattr(ctx, "response", None)



def _overrides(component: Component, method: str) -> bool:
    return getattr(type(component), method) is not getattr(Component, method)


def _end_quietly(span: Any, token: Any) -> None:
    if span is not None:
        span.end()
        otel_context.detach(token)
