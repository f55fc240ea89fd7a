"""The one bounded polling loop: wait for background work, a served process or exported spans."""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["wait_until"]


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, *,
               until: Callable[[Any], Any] | None = None, message: str | None = None) -> Any:
    """Poll ``predicate()`` every ``interval`` seconds until its value is truthy or ``timeout`` seconds
    pass; return the last value (a bounded loop for background work to catch up).

    ``until``: a test applied to each value instead of its truthiness, for probes whose last value is
    wanted whatever it is (``until=lambda r: r.status_code == 503`` returns the last response).
    ``message``: when given, running out of time raises ``AssertionError`` with it and the last value
    instead of returning that value.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if until(value) if until is not None else value:
            return value
        if time.monotonic() > deadline:
            if message is not None:
                raise AssertionError(f"{message} (not within {timeout:g} s; last value: {value!r:.2000})")
            return value
        time.sleep(interval)
