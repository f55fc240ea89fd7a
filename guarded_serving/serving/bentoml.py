"""BentoML integration: BentoML's tracer provider, and health wiring for services.

BentoML 1.4 builds its own ``TracerProvider`` (``BentoMLContainer.tracer_provider``)
for its server spans and does not register it globally. A guard inside a
BentoML worker takes that provider so its span nests under ``POST /<api>``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["bentoml_tracer_provider", "health_app", "in_bentoml_worker", "tracing_config_from_env"]


def in_bentoml_worker() -> bool:
    """Whether this process is a BentoML service worker (set by ``bentoml serve``)."""
    try:
        from bentoml._internal.context import server_context
    except Exception:  # pragma: no cover - bentoml internals moved
        return False
    return server_context.service_type in ("service", "entry_service")


def bentoml_tracer_provider() -> Any | None:
    """BentoML's tracer provider inside a worker, else ``None``."""
    if not in_bentoml_worker():
        return None
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return BentoMLContainer.tracer_provider.get()
    except Exception:  # pragma: no cover - bentoml internals moved
        return None


def tracing_config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """BentoML ``tracing`` service config from the standard OpenTelemetry variables.

    Use as ``@bentoml.service(tracing=tracing_config_from_env())``. Reads
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (OTLP over HTTP; ``/v1/traces`` is appended to the generic one) and the
    sample rate from ``OTEL_TRACES_SAMPLER_ARG`` (default 1.0). With no
    endpoint it returns ``{}``: BentoML records nothing, and the guard costs
    almost nothing for tracing.
    """
    env = os.environ if environ is None else environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not endpoint and env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    if not endpoint:
        return {}
    rate = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
    return {"exporter_type": "otlp", "sample_rate": rate, "timeout": 5,
            "otlp": {"protocol": "http", "endpoint": endpoint}}


def health_app(guard: "Guard") -> Any:
    """A small ASGI app exposing the guard: ``GET /health`` and ``GET /stats``.

    Mount it on a service with ``@bentoml.asgi_app(health_app(guard), path="/guard")``.
    ``/health`` answers 200 while the guard is ready and 503 when a
    readiness-gating check is failing, with the full report as JSON either way.
    Both describe the worker that answers (state is per process).
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request: Any) -> JSONResponse:
        report = guard.health()
        return JSONResponse(report, status_code=200 if report["ready"] else 503)

    async def stats(request: Any) -> JSONResponse:
        return JSONResponse(guard.stats())

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/stats", stats, methods=["GET"])])
