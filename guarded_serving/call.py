"""Per-call state: fresh for every call, so a guard is safe across threads and tasks."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Call"]


class Call:
    """One guarded call as components see it.

    Attributes
    ----------
    args, kwargs : tuple, dict
        The arguments the model will be called with (after ``set_input``).
    inputs : ndarray of shape (n_rows, n_features) or None
        The validated feature matrix (float64), or ``None`` when the guard
        has no input argument to inspect.
    input_name : str or None
        Name of the input parameter, for messages.
    attributes : dict
        Span attributes this call adds (set by components).
    flagged : bool
        A detector flagged this call; it is anomalous and always exported.
    result : object
        The model's return value (after the call), or a component's answer.
    error : BaseException or None
        What the model raised, if anything.
    latency_ms : float
        Filled in when the call ends.
    """

    __slots__ = ("args", "kwargs", "inputs", "input_name", "_input_index", "attributes",
                 "flagged", "result", "error", "latency_ms", "answered", "state")

    def __init__(self, args: tuple, kwargs: dict, inputs: np.ndarray | None,
                 input_name: str | None, input_index: int | None) -> None:
        self.args = args
        self.kwargs = kwargs
        self.inputs = inputs
        self.input_name = input_name
        self._input_index = input_index
        self.attributes: dict[str, Any] = {}
        self.flagged = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.latency_ms = 0.0
        self.answered = False
        self.state: dict[str, Any] = {}

    def flag(self, **attributes: Any) -> None:
        """Mark the call anomalous (always exported) and add span attributes."""
        self.flagged = True
        if attributes:
            self.attributes.update(attributes)

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
