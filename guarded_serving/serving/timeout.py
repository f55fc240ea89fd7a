"""BentoML's request timeout without its memory cost: :func:`release_request_timers`.

BentoML 1.4's ``TimeoutMiddleware`` (``traffic={"timeout": ...}``, default 60 s) arms
``loop.call_later(timeout, ...)`` for every request and never cancels it. The timer handle
captures a copy of the request's context variables, and with them BentoML's server span
(``POST /<api>``, with its HTTP attributes and the guard's), so every request's span and
context stay in memory until the timer fires, ``timeout`` seconds after the request arrived,
long after the response went out. RSS then climbs for ``timeout`` seconds of traffic and
levels off at about ``rate x timeout x 6-8 KB`` (measured on the example: about 6 KB per call
with tracing off, 8 KB with the collector down; at 99 calls/s and a 30 s timeout it levelled off
28 MB up, ``load_tests/outage_rss.py``). That is a bound, not a leak, but a large one, and it
moves with the request rate.

:func:`release_request_timers` swaps in :class:`ReleasingTimeoutMiddleware` (BentoML's
middleware with two changes: the timer runs in an empty context, and it is cancelled when the
request ends), so what a request holds goes when the request does. Timeouts behave as before
(a 504 naming the limit). It changes the process's BentoML (a module attribute that BentoML's
app factory reads when it builds the app), so it is the application's call, like
``configure_telemetry(set_global=True)``: call it in the service module, before BentoML builds
the app. Without it, the traffic timeout bounds the memory: lower it to lower the plateau.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["RELEASE_TIMERS_ENV", "release_request_timers", "release_request_timers_from_env",
           "releasing_timeout_middleware"]

#: ``0`` in this environment variable keeps BentoML's own timeout middleware (:func:`release_request_timers_from_env`).
RELEASE_TIMERS_ENV = "GUARDED_RELEASE_TIMERS"

_log = logging.getLogger("guarded_serving.serving")
_cls: type | None = None


def releasing_timeout_middleware() -> type:
    """The :class:`ReleasingTimeoutMiddleware` class (a subclass of BentoML's ``TimeoutMiddleware``,
    built on first use so that importing this module does not import BentoML)."""
    global _cls
    if _cls is not None:
        return _cls
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    class ReleasingTimeoutMiddleware(TimeoutMiddleware):  # type: ignore[misc, valid-type]
        """BentoML's ``TimeoutMiddleware`` whose timer holds nothing of the request once it ends:
        armed in an empty context, cancelled in ``finally``."""

        __guarded_releasing__ = True

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] not in ("http", "websocket"):
                return await self.app(scope, receive, send)
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            # an empty context: the callback only fails the waiter, it needs none of the request's
            timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=contextvars.Context())

            async def _send(message: Any) -> None:
                if not waiter.done():
                    waiter.set_result(None)
                await send(message)

            fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
            try:
                await waiter
            except TimeoutError:  # asyncio.TimeoutError is TimeoutError on 3.11+
                if fut.cancel():
                    from starlette.responses import JSONResponse

                    resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                        status_code=504)
                    await resp(scope, receive, send)
            else:
                await fut
            finally:
                timer.cancel()  # drops the callback and the waiter now, not `timeout` seconds from now
            return None

    ReleasingTimeoutMiddleware.__module__ = __name__
    _cls = ReleasingTimeoutMiddleware
    return _cls


def release_request_timers_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """:func:`release_request_timers`, unless ``GUARDED_RELEASE_TIMERS=0`` keeps BentoML's own middleware
    (then nothing changes and it returns False): the example services' one call."""
    env = os.environ if environ is None else environ
    if env.get(RELEASE_TIMERS_ENV, "1") == "0":
        return False
    return release_request_timers()


def release_request_timers() -> bool:
    """Make BentoML's request timeout release each request's memory when the request ends.

    Replaces ``bentoml._internal.server.http.traffic.TimeoutMiddleware`` (which BentoML's app factory
    looks up when it builds the app) with :class:`ReleasingTimeoutMiddleware`. Idempotent. Call it in
    the service module (the worker imports it before building the app).

    Returns
    -------
    bool
        True when installed (or already installed). False, with one warning, when the installed BentoML
        does not have the middleware this replaces (a BentoML that moved or changed it): nothing is
        changed then, and ``traffic.timeout`` bounds the memory as described in the module docstring.
    """
    try:
        from bentoml._internal.server.http import traffic
    except ImportError as exc:
        _log.warning("release_request_timers: BentoML's traffic middleware is not importable (%s); nothing "
                     "changed: the request timeout's timers keep each request's context until they fire", exc)
        return False
    current = getattr(traffic, "TimeoutMiddleware", None)
    if getattr(current, "__guarded_releasing__", False):
        return True
    if not (isinstance(current, type) and callable(getattr(current, "_set_timer_out", None))):
        _log.warning("release_request_timers: this BentoML's TimeoutMiddleware is not the one this replaces "
                     "(no _set_timer_out); nothing changed")
        return False
    traffic.TimeoutMiddleware = releasing_timeout_middleware()
    return True
