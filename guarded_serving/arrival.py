"""The request the current call serves: when it arrived, and the response headers the guard adds to it.

A serving integration marks the arrival of each request (``mark_arrival()``, e.g.
:class:`guarded_serving.serving.bentoml.RequestTiming`, an ASGI middleware) in a
context variable; it follows the request into the worker thread or task that runs
the model, where the guard reads it (``arrival_ns()``). The difference between the
call's end and the arrival is the *request time*: the model time plus the queueing
and parsing in front of it.

An integration that can also add headers to the response it sends marks the request
with ``mark_request(headers=[])``: the guard then appends its response headers
(``X-Request-Id``, ``X-Guard-Edge``) to that list as raw ``(name, value)`` byte pairs, and the
integration adds them to the response's start message. That is one list append per header,
where a framework's own response-header objects cost a scan and a copy per header per request
(and BentoML's request context is not needed for them).
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["RequestMark", "arrival_ns", "current_request", "mark_arrival", "mark_asgi_request", "mark_request",
           "reset_arrival"]


class RequestMark:
    """One request as a serving integration marked it: ``arrival_ns`` (``time.perf_counter_ns()``),
    ``headers``, the raw response headers to add (None: the integration cannot add headers), and
    ``claimed``: whether a guarded call already took the header list (the first guarded call of a
    request sends its headers; a guarded function it calls does not replace its request id)."""

    __slots__ = ("arrival_ns", "claimed", "headers")

    def __init__(self, arrival_ns: int, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.arrival_ns = arrival_ns
        self.headers = headers
        self.claimed = False


_REQUEST: ContextVar[RequestMark | None] = ContextVar("guarded_serving_request", default=None)

#: the marked request of the current context, or None outside a serving integration
current_request = _REQUEST.get


def mark_request(t_ns: int | None = None, *, headers: list[tuple[bytes, bytes]] | None = None
                 ) -> Token[RequestMark | None]:
    """Mark the current request: arrived now (or at ``t_ns``), with a list for the response headers the
    guard adds (``headers``; the caller sends them). Returns a reset token."""
    return _REQUEST.set(RequestMark(time.perf_counter_ns() if t_ns is None else t_ns, headers))


def mark_arrival(t_ns: int | None = None) -> Token[RequestMark | None]:
    """Record that a request arrived now (``time.perf_counter_ns()``); returns a reset token."""
    return mark_request(t_ns)


def reset_arrival(token: Token[RequestMark | None]) -> None:
    _REQUEST.reset(token)


def arrival_ns() -> int | None:
    """When the current request arrived (``time.perf_counter_ns()``), or None when none is marked."""
    mark = _REQUEST.get()
    return None if mark is None else mark.arrival_ns


def mark_asgi_request(send: Any) -> tuple[Token[RequestMark | None], Any]:
    """For an ASGI middleware: mark the current request (arrived now, with a header list) and return
    the reset token and the ``send`` to hand on, which adds the guard's headers (as they stand when the
    response starts) to the ``http.response.start`` message."""
    headers: list[tuple[bytes, bytes]] = []

    async def send_with_headers(message: Any) -> None:
        if headers and message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), *headers]}
        await send(message)

    return mark_request(headers=headers), send_with_headers
