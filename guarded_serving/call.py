"""Per-call state: fresh for every call, so a guard is safe across threads and tasks."""

from __future__ import annotations

import itertools
import os
import re
import time
from typing import Any, TypeVar

import numpy as np

from .keys import StateKey

__all__ = ["REQUEST_ID_HEADER", "Call", "new_request_id", "request_id_time"]

T = TypeVar("T")

#: The response header that carries a call's request id.
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{32}$")
_REQUEST_ID_TRACE_FIRST = re.compile(r"^[0-9a-f]{32}-[0-9a-f]{16}$")  # the earlier form
_counter = itertools.count()
_process_part = os.urandom(16).hex()


def _new_process_part() -> None:  # a forked worker must not mint its parent's fallback ids
    global _process_part
    _process_part = os.urandom(16).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_process_part)


def new_request_id(trace_id: int = 0) -> str:
    """A request id: ``<issue time in ms, 11 hex><counter, 5 hex>-<trace id, 32 hex>``.

    The first part tells when the id was issued (:func:`request_id_time`), so feedback can tell an
    expired id from one whose prediction is not stored yet, and makes ids of one trace distinct.
    The second part is the call's trace id (search for it in the tracing backend), or a random
    per-process part when tracing is off (``trace_id`` 0). Time comes first so that ids sort in
    the order they were issued: a store's index on them (the outcome store's ``(request_id, row)``)
    grows at its right edge; led by a random trace id, every insert landed on a random page of an
    index that grows for the whole retention (``load_tests/bench_store.py``, part 3). About 1 us.
    """
    tail = f"{trace_id:032x}" if trace_id else _process_part
    return f"{time.time_ns() // 1_000_000 & 0xFFFFFFFFFFF:011x}{next(_counter) & 0xFFFFF:05x}-{tail}"


def request_id_time(request_id: str) -> float | None:
    """When ``request_id`` was issued (unix seconds), or None if it is not an id of this form.

    Ids of the earlier form (``<trace id>-<time><counter>``, issued by earlier versions) are read
    too: their feedback stays valid for the retention period after an upgrade.
    """
    if not isinstance(request_id, str):
        return None
    if _REQUEST_ID.match(request_id):
        return int(request_id[:11], 16) / 1000.0
    if _REQUEST_ID_TRACE_FIRST.match(request_id):
        return int(request_id[33:44], 16) / 1000.0
    return None


class Call:
    """One guarded call as components see it.

    Attributes
    ----------
    args, kwargs : tuple, dict
        The arguments the model will be called with (after ``set_input``).
    inputs : ndarray of shape (n_rows, n_features) or None
        The validated feature matrix (float64), or ``None`` when the guard
        has no input argument to inspect or the input was refused.
    input_name : str or None
        Name of the input parameter, for messages.
    attributes : dict
        Span attributes this call adds (set by components).
    flagged : bool
        A component flagged this call; it is anomalous and always exported.
    result : object
        The model's return value (after the call), or a component's answer.
    error : BaseException or None
        What the model (or a before_call hook) raised, if anything.
    outcome : str
        ``ok``, ``error``, ``invalid_input`` or ``rejected`` (set when the call ends).
    latency_ms : float
        The model time: from the guard's entry to the call's end (filled in when it ends).
    request_ms : float or None
        The request time: from the request's arrival (marked by a serving integration) to
        the call's end, queueing included; None outside such an integration.
    arrival_ns : int or None
        When the request arrived (``time.perf_counter_ns()``), as the serving integration marked it
        (:mod:`guarded_serving.arrival`); None outside such an integration.
    state : dict of StateKey to object
        Data components hand to each other (see :mod:`guarded_serving.keys`).
    headers : dict of str to str
        Response headers components set with :meth:`set_header` (empty until one is set).
    request_id : str
        The call's request id (:func:`new_request_id`, made on first use from the trace of the
        call's recorded span): sent back in the ``X-Request-Id`` header, put on the span, and the
        key under which feedback (the true outcome) joins it.
    """

    __slots__ = ("args", "kwargs", "inputs", "input_name", "_input_index", "attributes",
                 "flagged", "result", "error", "outcome", "latency_ms", "request_ms", "arrival_ns", "answered", "state",
                 "_headers", "_response", "_sink", "_request_id", "_trace_source")

    def __init__(self, args: tuple, kwargs: dict, inputs: np.ndarray | None,
                 input_name: str | None, input_index: int | None, response: Any = None,
                 request_id: str | None = None, trace_source: Any = None,
                 header_sink: list[tuple[bytes, bytes]] | None = None) -> None:
        self.args = args
        self.kwargs = kwargs
        self.inputs = inputs
        self.input_name = input_name
        self._input_index = input_index
        self._response = response
        self.attributes: dict[str, Any] = {}
        self.flagged = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.outcome = "ok"
        self.latency_ms = 0.0
        self.request_ms: float | None = None
        self.arrival_ns: int | None = None
        self.answered = False
        self.state: dict[StateKey[Any], Any] = {}
        self._headers: dict[str, str] | None = None
        self._sink = header_sink  # raw response headers a serving integration sends (arrival.mark_request)
        self._request_id = request_id
        self._trace_source = trace_source  # the recorded span whose trace id ends the request id

    @property
    def request_id(self) -> str:
        """The call's request id, made on first use (about 1 us; calls nobody asks about pay nothing)."""
        rid = self._request_id
        if rid is None:
            src = self._trace_source
            rid = self._request_id = new_request_id(src.get_span_context().trace_id if src is not None else 0)
        return rid

    @request_id.setter
    def request_id(self, value: str) -> None:
        self._request_id = value

    @property
    def headers(self) -> dict[str, str]:
        """Response headers set on this call (a copy-free view; empty when none)."""
        return self._headers if self._headers is not None else {}

    def flag(self, **attributes: Any) -> None:
        """Mark the call anomalous (always exported) and add span attributes."""
        self.flagged = True
        if attributes:
            self.attributes.update(attributes)

    def get(self, key: StateKey[T], default: Any = None) -> T | Any:
        """``state[key]``, or ``default`` when no component set it on this call."""
        return self.state.get(key, default)

    @property
    def sends_headers(self) -> bool:
        """Whether headers set on this call go back to the caller (the request was marked with a header
        list, or the guarded API declared a request context): worth building a costly one only then."""
        return self._sink is not None or self._response is not None

    def set_header(self, name: str, value: str) -> None:
        """Add a response header: kept in ``headers`` and sent with the response, by the serving
        integration that marked the request with a header list (:func:`guarded_serving.arrival.mark_request`,
        e.g. ``RequestTiming``), else through the request context the guarded API declared
        (``ctx: bentoml.Context``). Setting a header again replaces it."""
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
        headers[name] = value
        sink = self._sink
        if sink is not None:
            key = name.lower().encode("latin-1")
            if sink:  # the last value set wins, also over another guarded call in the same request
                sink[:] = [kv for kv in sink if kv[0] != key]
            sink.append((key, value.encode("latin-1")))
        elif self._response is not None:
            self._response.headers[name] = value

    def set_input(self, value: Any) -> None:
        """Call the model with ``value`` in place of the original input argument."""
        if self._input_index is not None and len(self.args) > self._input_index:
            args = list(self.args)
            args[self._input_index] = value
            self.args = tuple(args)
        elif self.input_name is not None:
            self.kwargs = {**self.kwargs, self.input_name: value}
        else:
            raise RuntimeError("this guard has no input argument to replace")

    def answer(self, result: Any) -> None:
        """Answer the call without running the model (e.g. every row went to a fallback)."""
        self.result = result
        self.answered = True
