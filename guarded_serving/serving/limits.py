"""Bounded requests for a served model: body size, malformed bodies, metric labels, error logs.

``RequestLimits`` is an ASGI middleware (``Service.add_asgi_middleware(RequestLimits, ...)``):

- a body larger than ``max_body_bytes`` is answered ``413`` naming the limit, before the
  framework parses it (``Content-Length`` is checked first; a chunked body is counted as it
  arrives and never buffered past the limit);
- ``multipart/form-data`` without a ``boundary`` is a ``400`` (BentoML answers it with a 500);
- given the guard, a JSON body whose input matrix holds a boolean in a feature the profile does
  not know as a 0/1 flag is a ``400`` naming the row and column (the framework's array parsing
  would silently read ``true`` as ``1.0``); the raw bytes are searched for ``true``/``false``
  first, so ordinary bodies are never parsed twice;
- with ``mark_arrival=True`` it also marks each request's arrival and sends the guard's response
  headers, as ``RequestTiming`` does (one middleware instead of two);
- client errors (4xx) that the framework logs with a traceback are logged in one line, at most
  ``log_burst`` per ``log_window_s`` seconds (then one line counting those left out).

:func:`bound_metric_labels` keeps BentoML's ``/metrics`` from growing with every unknown path
a client requests: the ``endpoint`` label of BentoML's HTTP metrics is the request path, so
6,000 random 404 paths make 6,000 series. After it, paths that are not routes of the service
are labelled ``/<other>``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..arrival import mark_asgi_request as _mark_asgi_request
from ..arrival import reset_arrival as _reset_arrival
from ..errors import is_client_error
from ..keys import INPUT_SCHEMA

if TYPE_CHECKING:
    from ..guard import Guard

__all__ = ["OTHER_PATH", "RequestLimits", "bound_metric_labels", "quiet_client_errors"]

OTHER_PATH = "/<other>"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestLimits:
    """ASGI middleware bounding request bodies (see the module docstring).

    Parameters
    ----------
    max_body_bytes : int, default=8 MiB
        Largest request body accepted.
    guard : Guard, optional
        Its input schema (feature names, 0/1 flags) is used to refuse JSON booleans.
    input_field : str, default="inputs"
        The JSON field holding the input matrix.
    log_burst, log_window_s : int, float, default=10, 10.0
        Client-error log lines allowed per window.
    mark_arrival : bool, default=False
        Also mark each request's arrival for the guard's request time (what
        :class:`guarded_serving.serving.bentoml.RequestTiming` does), sparing a second middleware.

    A body that arrives in one message (the usual case, within the limit) is checked and handed on
    as it came, without a copy; only a body in several messages is gathered (counted as it arrives).
    """

    def __init__(self, app: Any, *, max_body_bytes: int = 8 << 20, guard: Guard | None = None,
                 input_field: str = "inputs", log_burst: int = 10, log_window_s: float = 10.0,
                 mark_arrival: bool = False) -> None:
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise ValueError(f"max_body_bytes={max_body_bytes!r} is invalid: expected an integer >= 1")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.guard = guard
        self.input_field = input_field
        self.mark_arrival = bool(mark_arrival)
        quiet_client_errors(burst=log_burst, window_s=log_window_s)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.mark_arrival:
            await self._bounded(scope, receive, send)
            return
        # RequestTiming's job (the arrival, the guard's response headers), done here to spare a middleware layer
        token, send = _mark_asgi_request(send)
        try:
            await self._bounded(scope, receive, send)
        finally:
            _reset_arrival(token)

    async def _bounded(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("method") not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        # the two headers needed, read from the raw list (no per-request dict of every header)
        length = ctype_raw = None
        for key, value in scope.get("headers", ()):
            key = key.lower()
            if key == b"content-length":
                length = value
            elif key == b"content-type":
                ctype_raw = value
        limit = self.max_body_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _answer(send, 400, f"Content-Length {length.decode('latin-1')[:40]!r} is not a number")
                return
            if declared > limit:
                await _answer(send, 413, f"request body of {declared} bytes exceeds the limit of {limit} bytes "
                                         f"(max_body_bytes)")
                return
        ctype = ctype_raw.decode("latin-1").lower() if ctype_raw is not None else ""
        multipart = ctype.startswith("multipart")
        if multipart and "boundary=" not in ctype:
            await _answer(send, 400, "Content-Type multipart/form-data without a boundary parameter: the body "
                                     "cannot be split into fields")
            return
        first = await receive()
        if first["type"] != "http.request":
            body = b""
        elif not first.get("more_body", False):
            # the usual case: the whole body in one message, checked and handed on as it came (no copy)
            body = first.get("body", b"")
            if len(body) > limit:
                await _answer(send, 413, f"request body exceeds the limit of {limit} bytes (max_body_bytes)")
                return
        else:  # a body in several messages (chunked): counted as it arrives, never buffered past the limit
            body = first.get("body", b"")
            chunks, size = [body], len(body)
            while size <= limit:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            if size > limit:
                await _answer(send, 413, f"request body exceeds the limit of {limit} bytes (max_body_bytes)")
                return
            body = b"".join(chunks)
            first = {"type": "http.request", "body": body, "more_body": False}
        if self.guard is not None and not multipart and (b"true" in body or b"false" in body):
            problem = self._boolean_problem(body)
            if problem is not None:
                await _answer(send, 400, problem)
                return
        await self.app(scope, _Replay(first, receive), send)

    def _boolean_problem(self, body: bytes) -> str | None:
        """A message naming the first boolean in a non-flag feature of the input matrix, or None."""
        try:
            doc = json.loads(body)
        except ValueError:
            return None  # not JSON: the framework's parser answers it
        rows = doc.get(self.input_field) if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            return None
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        schema = self.guard.context.get(INPUT_SCHEMA, None) if self.guard is not None else None
        names = tuple(schema.feature_names) if schema is not None else ()
        flags = schema.boolean if schema is not None else None
        for r, row in enumerate(rows):
            if not isinstance(row, list):
                continue
            for c, v in enumerate(row):
                if isinstance(v, bool) and not (flags is not None and c < len(flags) and flags[c]):
                    name = f" ({names[c]})" if c < len(names) else ""
                    return (f"{self.input_field}: row {r}, column {c}{name} is a boolean ({json.dumps(v)}); the "
                            f"feature is numeric (send a number)")
        return None


class _Replay:
    """An ASGI ``receive`` that returns the already-read body message once, then defers to the server's."""

    __slots__ = ("_first", "_receive")

    def __init__(self, first: Any, receive: Any) -> None:
        self._first, self._receive = first, receive

    async def __call__(self) -> Any:
        first = self._first
        if first is not None:
            self._first = None
            return first
        return await self._receive()


async def _answer(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# -- client-error logging --------------------------------------------------------------------
class _ClientErrorFilter(logging.Filter):
    """Client errors (4xx) logged by the framework with a traceback become one rate-limited line."""

    def __init__(self, burst: int, window_s: float) -> None:
        super().__init__("guarded_serving.client_errors")
        self.burst, self.window_s = burst, window_s
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not is_client_error(exc):
            return True
        now = time.monotonic()
        with self._lock:
            if now - self._window_start >= self.window_s:
                self._window_start, self._in_window = now, 0
            if self._in_window >= self.burst:
                self._suppressed += 1
                return False
            self._in_window += 1
            suppressed, self._suppressed = self._suppressed, 0
        try:
            where = record.getMessage().replace("Exception on ", "", 1)
        except Exception:  # noqa: BLE001  # pragma: no cover - a malformed record
            where = str(record.msg)
        text = " ".join(str(exc).split())[:300]
        record.msg = "client error on %s: %s: %s%s"
        record.args = (where, type(exc).__name__, text,
                       f" ({suppressed} more client errors not logged)" if suppressed else "")
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True



_filters: dict[str, _ClientErrorFilter] = {}
_LOGGERS = ("bentoml._internal.server.http_app", "bentoml.serve")


def quiet_client_errors(*, burst: int = 10, window_s: float = 10.0, loggers: Iterable[str] = _LOGGERS) -> None:
    """Install the one-line, rate-limited client-error filter on BentoML's request loggers (idempotent)."""
    for name in loggers:
        if name not in _filters:
            f = _filters[name] = _ClientErrorFilter(burst, window_s)
            logging.getLogger(name).addFilter(f)


# -- bounded metric labels -------------------------------------------------------------------
def bound_metric_labels(service: Any, *, extra_prefixes: Iterable[str] = ()) -> None:
    """Label BentoML's HTTP metrics of paths that are not routes of ``service`` as ``/<other>``.

    Call it once in the service module, after the service class is defined (the worker builds
    its middleware afterwards). BentoML 1.4 labels ``bentoml_service_request_total`` and its
    duration histogram with the raw request path and offers no setting to bound it; this swaps
    its metrics middleware for a subclass that passes the framework a bounded label and the
    application the real path. Known: the service's API routes, its mounted apps, and
    BentoML's own endpoints (``/docs``, ``/metrics``, ``/livez``, ``/readyz``, ...).
    """
    from bentoml._internal.server.http import instruments

    base = getattr(instruments.RunnerTrafficMetricsMiddleware, "_guarded_base",
                   instruments.RunnerTrafficMetricsMiddleware)
    routes = {getattr(m, "route", None) or f"/{name}" for name, m in getattr(service, "apis", {}).items()}
    prefixes = tuple({*(f"{p.rstrip('/')}/" for _app, p, _n in getattr(service, "mount_apps", ()) if p),
                      *extra_prefixes, "/docs", "/static", "/schema.json", "/metrics", "/livez", "/readyz",
                      "/healthz", "/"})
    exact = frozenset(routes | {"/", "/docs.json", "/schema.json", "/metrics", "/livez", "/readyz", "/healthz"})

    def known(path: str) -> bool:
        return path in exact or any(path.startswith(p) for p in prefixes if p != "/")

    class BoundedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        _guarded_base = base

        def __init__(self, app: Any, **kwargs: Any) -> None:
            async def real_path(scope: Any, receive: Any, send: Any) -> None:
                path = scope.get("guarded_serving.path")
                if path is not None:
                    scope = {**scope, "path": path}
                await app(scope, receive, send)

            super().__init__(real_path, **kwargs)

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope.get("type") == "http" and not known(scope.get("path", "")):
                scope = {**scope, "path": OTHER_PATH, "guarded_serving.path": scope.get("path", "")}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedTrafficMetrics
