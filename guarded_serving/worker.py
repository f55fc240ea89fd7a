"""One periodic background worker, used by every background loop of the guard.

Hardware sampling, dependency checks, downstream probes, integrity re-checks
and drift analysis all run a task every so often in a daemon thread. They
share one implementation, so they share its guarantees:

- **interval and jitter**: the wait is ``interval_s`` (a number, or a callable
  read before each wait, e.g. "until the next probe is due") times a random
  factor in ``[1 - jitter, 1 + jitter]``, so the workers of many processes
  do not wake in step;
- **exception isolation**: a task that raises is logged (once per distinct
  error, then every ``log_every`` repeats), counted (``errors``,
  ``consecutive_errors``, ``last_error``) and retried after a backoff that
  doubles per consecutive failure up to ``backoff_max_s``; the thread never
  dies of it, and :meth:`check` turns it into a health verdict;
- **weak ownership** (``weak=True``): a task that is a bound method is held
  weakly, so an owner dropped without ``stop()`` is collected and its thread
  ends (the guard's own components use it);
- **stop with a join timeout**: :meth:`stop` sets an event, runs ``on_stop``
  in the worker thread (closing connections it owns) and joins for at most
  ``join_timeout_s``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import weakref
from typing import Any, Callable

from . import health as H
from .health import CheckResult

__all__ = ["PeriodicWorker"]

_log = logging.getLogger("guarded_serving.worker")


class PeriodicWorker:
    """Run ``task()`` every ``interval_s`` seconds in a daemon thread.

    Parameters
    ----------
    name : str
        Thread name and the subject of log lines and of :meth:`check`.
    task : callable
        ``task() -> object``.
    interval_s : float or callable returning float
    jitter : float, default=0.1
        Relative spread of each wait (0 disables).
    backoff_max_s : float, optional
        Longest wait after consecutive failures (default: ``8 * interval``).
    run_first : bool, default=False
        Run the task once as soon as the thread starts, before the first wait.
    on_stop : callable, optional
        Run in the worker thread when it ends (e.g. close a connection it owns).
    join_timeout_s : float, default=5.0
    weak : bool, default=False
        Hold a bound-method ``task`` weakly: when its object is collected the thread ends.
    """

    def __init__(self, name: str, task: Callable[[], Any], interval_s: float | Callable[[], float], *,
                 jitter: float = 0.1, backoff_max_s: float | None = None, run_first: bool = False,
                 on_stop: Callable[[], Any] | None = None, join_timeout_s: float = 5.0,
                 log_every: int = 100, weak: bool = False) -> None:
        if not callable(interval_s) and not (isinstance(interval_s, (int, float)) and interval_s > 0):
            raise ValueError(f"interval_s={interval_s!r} is invalid: expected seconds > 0 or a callable")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter={jitter!r} is invalid: expected a fraction in [0, 1)")
        self.name = name
        if weak and not (hasattr(task, "__self__") and hasattr(task, "__func__")):
            raise ValueError(f"weak=True needs a bound method as task, got {task!r}")
        self._task_ref: Callable[[], Any] = weakref.WeakMethod(task) if weak else (lambda: task)  # type: ignore[arg-type]
        self.interval_s = interval_s
        self.jitter = float(jitter)
        self.backoff_max_s = backoff_max_s
        self.run_first = run_first
        self.on_stop = on_stop
        self.join_timeout_s = float(join_timeout_s)
        self.log_every = max(1, int(log_every))
        self.runs = 0
        self.errors = 0
        self.consecutive_errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_run_at: float | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- control ------------------------------------------------------------------------
    def start(self) -> "PeriodicWorker":
        """Start the thread (idempotent)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._stop = threading.Event()
            self._wake.clear()
            self._thread = threading.Thread(target=_loop, args=(weakref.ref(self), self._stop),
                                            name=f"guard-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to end and join it; True when it ended within the timeout."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        self._thread = None
        if t is None or t is threading.current_thread():
            return True
        t.join(self.join_timeout_s if timeout is None else timeout)
        if t.is_alive():
            _log.warning("background worker %s did not stop within %.1f s", self.name,
                         self.join_timeout_s if timeout is None else timeout)
            return False
        return True

    def wake(self) -> None:
        """Run the task now instead of at the end of the current wait."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- one run ----------------------------------------------------------------------
    def run_once(self) -> bool:
        """Run the task once in the calling thread, isolating its exception; True if it succeeded."""
        task = self._task_ref()
        if task is None:
            return False
        try:
            task()
        except Exception as exc:
            self._failed(exc)
            return False
        finally:
            del task
        self.runs += 1
        self.last_run_at = time.time()
        if self.consecutive_errors:
            _log.info("background worker %s recovered after %d failed runs", self.name, self.consecutive_errors)
        self.consecutive_errors = 0
        return True

    def _failed(self, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        self.errors += 1
        self.consecutive_errors += 1
        repeat = text == self.last_error
        self.last_error, self.last_error_at = text, time.time()
        if not repeat or self.consecutive_errors % self.log_every == 0:
            _log.error("background worker %s raised (run %d in a row; it goes on): %s", self.name,
                       self.consecutive_errors, text, exc_info=not repeat)

    def next_wait(self) -> float:
        base = float(self.interval_s() if callable(self.interval_s) else self.interval_s)
        if self.consecutive_errors:
            cap = self.backoff_max_s if self.backoff_max_s is not None else 8.0 * base
            base = min(base * 2.0 ** (self.consecutive_errors - 1), max(cap, base))
        if self.jitter:
            base *= 1.0 + random.uniform(-self.jitter, self.jitter)
        return max(0.001, base)

    # -- health -------------------------------------------------------------------------
    def check(self, name: str, *, what: str | None = None) -> CheckResult | None:
        """A ``degraded`` verdict named ``name`` while the latest run failed, else None."""
        if not self.consecutive_errors:
            return None
        return CheckResult(name, H.DEGRADED, f"{what or self.name} failed {self.consecutive_errors} time(s) in a row "
                           f"({self.errors} in all; it keeps retrying): {self.last_error}",
                           {"errors": self.errors, "consecutive_errors": self.consecutive_errors,
                            "last_error": self.last_error, "last_error_at": self.last_error_at,
                            "runs": self.runs}, affects_readiness=False)

    def stats(self) -> dict[str, Any]:
        return {"runs": self.runs, "errors": self.errors, "last_error": self.last_error}


def _loop(ref: "weakref.ref[PeriodicWorker]", stop: threading.Event) -> None:
    # Holds the worker only weakly between runs: a worker (or, with weak=True, a task owner)
    # dropped without stop() (common in tests) is collected and its thread ends.
    w = ref()
    if w is None:
        return
    first = w.run_first
    del w
    while True:
        w = ref()
        if w is None or stop.is_set():
            break
        if not first:
            wait, wake = w.next_wait(), w._wake
            del w
            wake.wait(wait)
            wake.clear()
            if stop.is_set():
                break
            w = ref()
            if w is None:
                return
        first = False
        if w.run_once() is False and w._task_ref() is None:
            return
        del w
    w = ref()
    if w is not None and w.on_stop is not None:
        try:
            w.on_stop()
        except Exception:  # pragma: no cover - defensive
            _log.exception("background worker %s: on_stop raised", w.name)
