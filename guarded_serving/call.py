"""Per-call state: fresh for every call, so a guard is safe across threads and tasks."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from .keys import StateKey

__all__ = ["Call"]

T = TypeVar("T")


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
    state : dict of StateKey to object
        Data components hand to each other (see :mod:`guarded_serving.keys`).
    headers : dict of str to str
        Response headers components set with :meth:`set_header` (empty until one is set).
    """

    __slots__ = ("args", "kwargs", "inputs", "input_name", "_input_index", "attributes",
                 "flagged", "result", "error", "outcome", "latency_ms", "request_ms", "answered", "state",
                 "_headers", "_response")

    def __init__(self, args: tuple, kwargs: dict, inputs: np.ndarray | None,
                 input_name: str | None, input_index: int | None, response: Any = None) -> None:
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
        self.answered = False
        self.state: dict[StateKey[Any], Any] = {}
        self._headers: dict[str, str] | None = None

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

    def set_header(self, name: str, value: str) -> None:
        """Add a response header: kept in ``headers`` and, when the guarded API declared a
        request context (``ctx: bentoml.Context``), set on its response."""
        if self._headers is None:
            self._headers = {}
        self._headers[name] = value
        if self._response is not None:
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
