"""Configure the OpenTelemetry SDK for an application that has none.

This is the only module that imports the SDK, and nothing here runs unless an
application calls :func:`configure_telemetry`. Library code never sets the
global providers; pass ``set_global=True`` from *your application* if you want that.
"""

from __future__ import annotations

import os
from typing import Any


def configure_telemetry(
    service_name: str | None = None,
    *,
    exporter: Any = "otlp",
    set_global: bool = False,
    max_queue_size: int | None = None,
) -> Any:
    """Build an SDK ``TracerProvider`` exporting over OTLP/HTTP.

    The exporter reads the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
    ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``).

    Parameters
    ----------
    service_name : str, optional
        ``service.name`` resource attribute; defaults to ``OTEL_SERVICE_NAME``.
    exporter : "otlp", "console", "none" or a SpanExporter, default="otlp"
    set_global : bool, default=False
        Also register the provider globally (an application's choice, never a library's).
    max_queue_size : int, optional
        Span queue size of the batch processor (default: ``OTEL_BSP_MAX_QUEUE_SIZE`` or 2048).

    Returns
    -------
    opentelemetry.sdk.trace.TracerProvider
        Pass it to ``Guard(tracer_provider=...)``; call ``shutdown()`` at exit.

    Notes
    -----
    The sampler is parent-based with an always-on root: the guard applies its
    own ``trace_sample_ratio`` and forces anomalous calls through, so the SDK
    must not drop root spans on its own.
    """
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (BatchSpanProcessor, ConsoleSpanExporter,
                                                SimpleSpanProcessor)
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

    attrs = {}
    name = service_name or os.environ.get("OTEL_SERVICE_NAME")
    if name:
        attrs[SERVICE_NAME] = name
    provider = TracerProvider(resource=Resource.create(attrs), sampler=ParentBased(ALWAYS_ON))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        kw = {} if max_queue_size is None else {"max_queue_size": max_queue_size}
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), **kw))
    elif exporter == "console":
        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "none":
        pass
    elif hasattr(exporter, "export"):
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        raise ValueError(f"exporter={exporter!r} is invalid: expected 'otlp', 'console', 'none' or a SpanExporter")
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
