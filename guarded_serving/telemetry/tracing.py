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

import sys

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

__all__ = ["resolve_tracer_provider", "sampled_parent_context"]

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def resolve_tracer_provider(explicit: trace.TracerProvider | None = None) -> trace.TracerProvider:
    """The provider a guard should use: ``explicit``, else BentoML's inside a
    BentoML server worker (BentoML never registers its provider globally),
    else the global one."""
    if explicit is not None:
        return explicit
    if "bentoml" in sys.modules:
        from ..serving.bentoml import bentoml_tracer_provider

        provider = bentoml_tracer_provider()
        if provider is not None:
            return provider
    return trace.get_tracer_provider()


def sampled_parent_context(ctx: otel_context.Context | None = None) -> otel_context.Context | None:
    """``ctx`` with its current span context marked sampled, for forced export.

    Returns ``ctx`` unchanged when there is no valid parent or it is already sampled.
    """
    sc = trace.get_current_span(ctx).get_span_context()
    if not sc.is_valid or sc.trace_flags.sampled:
        return ctx
    forced = SpanContext(sc.trace_id, sc.span_id, sc.is_remote, _SAMPLED, sc.trace_state)
    return trace.set_span_in_context(NonRecordingSpan(forced), ctx)
