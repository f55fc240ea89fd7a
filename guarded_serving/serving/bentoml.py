"""BentoML integration: BentoML's tracer provider, and health wiring for services.

BentoML 1.4 builds its own ``TracerProvider`` (``BentoMLContainer.tracer_provider``)
for its server spans and does not register it globally. Importing this module
registers a resolver (:func:`~guarded_serving.telemetry.tracing.register_provider_resolver`),
so a guard inside a BentoML worker takes that provider and its span nests under
``POST /<api>``. Response headers need nothing from here: the guard sets them on
the ``ctx: bentoml.Context`` the guarded API declares.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Mapping

from ..arrival import mark_asgi_request, reset_arrival
from ..telemetry.tracing import register_provider_resolver

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["FEEDBACK_TOKEN_ENV", "HEALTH_TOKEN_ENV", "RequestTiming", "bentoml_tracer_provider", "feedback_response", "health_app",
           "in_bentoml_worker", "json_safe", "tracing_config_from_env"]

#: Environment variable holding the token the feedback endpoint requires (unset: feedback refused).
FEEDBACK_TOKEN_ENV = "GUARDED_FEEDBACK_TOKEN"
#: Most items one feedback request may carry.
FEEDBACK_MAX_ITEMS = 100_000

_log = logging.getLogger("guarded_serving.serving")
_lookup_failed = False


def in_bentoml_worker() -> bool:
    """Whether this process is a BentoML service worker (``bentoml.server_context``)."""
    import bentoml

    return getattr(bentoml.server_context, "service_type", None) in ("service", "entry_service")


def bentoml_tracer_provider() -> Any | None:
    """BentoML's tracer provider inside a worker, else ``None``.

    BentoML 1.4 has no public accessor for it: it is read from
    ``BentoMLContainer.tracer_provider``. If that lookup fails (BentoML moved it),
    one warning names what to configure instead, and None is returned.
    """
    global _lookup_failed
    if not in_bentoml_worker():
        return None
    try:
        from bentoml._internal.configuration.containers import BentoMLContainer

        return BentoMLContainer.tracer_provider.get()
    except Exception as exc:
        if not _lookup_failed:
            _lookup_failed = True
            _log.warning("could not read BentoML's tracer provider (%s: %s): the guard's spans will not nest "
                         "under BentoML's; pass Guard(tracer_provider=...) to choose a provider",
                         type(exc).__name__, exc)
        return None


register_provider_resolver(bentoml_tracer_provider)


class RequestTiming:
    """ASGI middleware marking each request's arrival, so the guard times what the caller waits for.

    Add it to the service: ``MyService.add_asgi_middleware(RequestTiming)``. The guard then
    reports the request time (arrival to answer: queueing for a worker thread, parsing, the
    model) beside the model time, and holds the latency budget to it (``slo_measure``).
    It also sends the guard's response headers (``X-Request-Id``, ``X-Guard-Edge``): the guard appends
    them to the request's mark and this adds them to the response, so the guarded API needs no
    ``ctx: bentoml.Context`` parameter for them.
    Cost: one ``perf_counter_ns``, one context-variable set and one wrapped ``send`` per request. ``RequestLimits`` (in
    :mod:`guarded_serving.serving.limits`) does the same with ``mark_arrival=True``, sparing a middleware.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        token, send = mark_asgi_request(send)
        try:
            await self.app(scope, receive, send)
        finally:
            reset_arrival(token)


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


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as None and numpy scalars as Python numbers: strict JSON
    (Starlette refuses NaN, and a statistic that is undefined for a window, such as the PSI of the
    joint drift row, must not turn /guard/stats into a 500)."""
    import math

    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return value


def _token_ok(headers: Mapping[str, str], expected: str | None) -> bool:
    import hmac

    if not expected:
        return False
    auth = headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-feedback-token", "")
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def feedback_response(guard: "Guard", body: Any, headers: Mapping[str, str],
                      token: str | None = None) -> tuple[int, dict[str, Any]]:
    """``(HTTP status, JSON body)`` of a feedback request, framework-free.

    ``headers`` (lower-case names) must carry the token (``Authorization: Bearer <token>`` or
    ``X-Feedback-Token``) equal to ``token`` (default ``$GUARDED_FEEDBACK_TOKEN``); without a
    token configured on the server every request is refused (401), so nobody can poison the
    labels. ``body`` is one item ``{"request_id", "label"[, "row"][, "source"]}`` (answered with that
    item's status: 200 recorded or unchanged, 202 pending, 404 unknown, 409 conflict, 410
    expired, 422 wrong label, 400 malformed), or ``{"items": [...]}`` / a list (bulk: 200 when
    every item was kept, else the status the rejected items share, or 422 when they differ;
    the kept items are stored either way and every item's result is listed).
    """
    expected = token if token is not None else os.environ.get(FEEDBACK_TOKEN_ENV)
    if not _token_ok(headers, expected):
        why = ("feedback is refused: the server has no token (set " + FEEDBACK_TOKEN_ENV + ")") if not expected \
            else "a valid feedback token is required (Authorization: Bearer <token>)"
        return 401, {"error": why}
    single = isinstance(body, dict) and "items" not in body
    items = [body] if single else body.get("items") if isinstance(body, dict) else body
    if not isinstance(items, list):
        return 400, {"error": "expected {'request_id': ..., 'label': ...}, {'items': [...]} or a list of items"}
    if len(items) > FEEDBACK_MAX_ITEMS:
        return 413, {"error": f"{len(items)} items in one request: at most {FEEDBACK_MAX_ITEMS}"}
    try:
        results = guard.record_feedback_many(items)
    except Exception as exc:  # the guard has no performance capability, or the store failed
        from ..errors import ConfigError

        return (404 if isinstance(exc, ConfigError) else 503), {"error": f"{type(exc).__name__}: {exc}"}
    out = [r.to_dict() for r in results]
    if single and len(results) == 1:
        return results[0].http_status, json_safe(out[0])
    bad = {r.http_status for r in results if not r.ok}
    code = 200 if not bad else bad.pop() if len(bad) == 1 else 422
    return code, json_safe({"results": out, "kept": sum(r.ok for r in results),
                            "rejected": sum(not r.ok for r in results)})


HEALTH_TOKEN_ENV = "GUARDED_HEALTH_TOKEN"


def health_app(guard: "Guard", *, token: str | None = None, token_env: str = HEALTH_TOKEN_ENV) -> Any:
    """A small ASGI app exposing the guard: ``GET /health``, ``GET /stats`` and ``POST /feedback``.

    Mount it on a service with ``@bentoml.asgi_app(health_app(guard), path="/guard")``.
    ``/health`` answers 200 while the guard is ready and 503 when a
    readiness-gating check is failing. Both describe the worker that answers (state is per process).

    With a token (``token``, else the environment variable ``token_env``, read when a request
    comes), anonymous callers get the status only (``{"status", "ready"}``); the details (check
    reasons, paths, package versions, the worker's pid, per-feature statistics of the traffic)
    need ``Authorization: Bearer <token>`` (or ``X-Guard-Token``). Without a token configured
    the details are public, as in development; set one in production.

    ``/feedback`` records true outcomes by request id (:func:`feedback_response`); it needs its own
    token, ``$GUARDED_FEEDBACK_TOKEN``, and refuses every request (401) when none is set.
    """
    import hmac

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def authorised(request: Any) -> bool:
        secret = token if token is not None else os.environ.get(token_env)
        if not secret:
            return True
        given = request.headers.get("x-guard-token") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), secret.encode())

    async def health(request: Any) -> JSONResponse:
        report = guard.health()
        code = 200 if report["ready"] else 503
        if not authorised(request):
            return JSONResponse({"status": report["status"], "ready": report["ready"]}, status_code=code)
        return JSONResponse(json_safe(report), status_code=code)

    async def stats(request: Any) -> JSONResponse:
        if not authorised(request):
            report = guard.health()
            return JSONResponse({"status": report["status"], "ready": report["ready"]})
        return JSONResponse(json_safe(guard.stats()))

    async def feedback(request: Any) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if not _token_ok(headers, os.environ.get(FEEDBACK_TOKEN_ENV)):
            code, body = feedback_response(guard, None, headers)  # the 401, before reading the body
            return JSONResponse(body, status_code=code)
        try:
            payload = await request.json()
        except ValueError as exc:
            return JSONResponse({"error": f"the body is not JSON: {exc}"}, status_code=400)
        code, body = await run_in_threadpool(feedback_response, guard, payload, headers)
        return JSONResponse(body, status_code=code)

    return Starlette(routes=[Route("/health", health, methods=["GET"]),
                             Route("/stats", stats, methods=["GET"]),
                             Route("/feedback", feedback, methods=["POST"])])
