"""Tracer resolution and the "never drop an anomaly" export rule.

How sampling works
------------------
A normal call gets a span only when (a) the guard's own ``trace_sample_ratio``
draw says so and (b) the tracer provider's sampler records it (inside
BentoML: ``tracing.sample_rate``, parent-based).

An anomalous call (model error, SLO breach, invalid or rejected input, or a
detector's flag) is always exported: when the call ends, if its span was not
recorded, the guard emits the span afterwards with the call's real start and
end times, under a copy of the current parent context whose *sampled* flag is
set. A parent-based sampler (the SDK default, and BentoML's) then records it,
so the anomaly reaches the exporter with the request's trace id and its parent
span id (Jaeger shows it as a child of the request even when the server span
itself was sampled out, flagging the missing parent). The span carries
``guard.forced_export=true``. With no SDK installed nothing is recorded and
the rule costs nothing.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, ProxyTracerProvider, SpanContext, TraceFlags

__all__ = ["register_provider_resolver", "resolve_tracer_provider", "sampled_parent_context"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_log = logging.getLogger("guarded_serving.telemetry")
_resolvers: list[Callable[[], "trace.TracerProvider | None"]] = []
_warned = threading.Event()


def register_provider_resolver(resolver: Callable[[], "trace.TracerProvider | None"]) -> None:
    """Let a serving integration supply its framework's provider (e.g. BentoML's, which
    BentoML never registers globally). ``resolver()`` returns a provider or None."""
    if resolver not in _resolvers:
        _resolvers.append(resolver)


def resolve_tracer_provider(explicit: trace.TracerProvider | None = None) -> trace.TracerProvider:
    """The provider a guard should use: ``explicit``, else the first a registered
    serving integration supplies (:func:`register_provider_resolver`; importing
    :mod:`guarded_serving.serving.bentoml` registers BentoML's), else the global one.

    Inside a BentoML process with no resolver that answers and no global SDK
    provider, the guard's spans would go nowhere: that is logged once, naming
    what to configure.
    """
    if explicit is not None:
        return explicit
    for resolver in _resolvers:
        try:
            provider = resolver()
        except Exception as exc:
            _warn_once(f"the tracer provider lookup {getattr(resolver, '__qualname__', resolver)} raised "
                       f"{type(exc).__name__}: {exc}; pass Guard(tracer_provider=...) to choose one")
            continue
        if provider is not None:
            return provider
    provider = trace.get_tracer_provider()
    if isinstance(provider, ProxyTracerProvider) and _in_bentoml_worker():
        _warn_once("no tracer provider found for the guard inside a BentoML process (BentoML keeps its own "
                   "provider and never sets the global one): import guarded_serving.serving.bentoml in the "
                   "service module, or pass Guard(tracer_provider=...); the guard's spans are not recorded")
    return provider


def _in_bentoml_worker() -> bool:
    # read, never imported: only a process that already runs BentoML can be one of its workers
    bentoml = sys.modules.get("bentoml")
    ctx = getattr(bentoml, "server_context", None)
    return getattr(ctx, "service_type", None) in ("service", "entry_service")


def _warn_once(text: str) -> None:
    if not _warned.is_set():
        _warned.set()
        _log.warning(text)


def sampled_parent_context(ctx: otel_context.Context | None = None) -> otel_context.Context | None:
    """``ctx`` with its current span context marked sampled, for forced export.

    Returns ``ctx`` unchanged when there is no valid parent or it is already sampled.
    """
    sc = trace.get_current_span(ctx).get_span_context()
    if not sc.is_valid or sc.trace_flags.sampled:
        return ctx
    forced = SpanContext(sc.trace_id, sc.span_id, sc.is_remote, _SAMPLED, sc.trace_state)
    return trace.set_span_in_context(NonRecordingSpan(forced), ctx)
