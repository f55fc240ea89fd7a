"""When the request the current call serves arrived, so the guard can time what the caller waits for.

A serving integration marks the arrival of each request (``mark_arrival()``, e.g.
:class:`guarded_serving.serving.bentoml.RequestTiming`, an ASGI middleware) in a
context variable; it follows the request into the worker thread or task that runs
the model, where the guard reads it (``arrival_ns()``). The difference between the
call's end and the arrival is the *request time*: the model time plus the queueing
and parsing in front of it.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token

__all__ = ["arrival_ns", "mark_arrival", "reset_arrival"]

_ARRIVAL: ContextVar[int | None] = ContextVar("guarded_serving_request_arrival_ns", default=None)


def mark_arrival(t_ns: int | None = None) -> Token[int | None]:
    """Record that a request arrived now (``time.perf_counter_ns()``); returns a reset token."""
    return _ARRIVAL.set(time.perf_counter_ns() if t_ns is None else t_ns)


def reset_arrival(token: Token[int | None]) -> None:
    _ARRIVAL.reset(token)


arrival_ns = _ARRIVAL.get
