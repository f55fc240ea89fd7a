"""Parent-death watch: a serving worker whose parent (``bentoml serve``) is gone stops serving.

A worker orphaned by ``kill -9`` of its server process keeps answering and keeps the port, so
the restart cannot bind. The watch compares ``os.getppid()`` with the parent seen at start
every ``interval_s`` (one system call); when the parent changed (the worker was re-parented to
init or a subreaper) it logs once, sends itself ``SIGTERM`` (the server shuts down gracefully
and frees the port) and, if the process is still alive ``grace_s`` later, exits with
``os._exit(1)``. Off by default (``exit_with_parent``): a plain Python process whose parent
shell exits must not die with it; a serving worker turns it on.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from ..worker import PeriodicWorker

__all__ = ["ParentWatch"]

_log = logging.getLogger("guarded_serving.operational")


class ParentWatch:
    """Watch this process's parent; on its death, stop serving and exit.

    Parameters
    ----------
    interval_s : float, default=1.0
        Seconds between checks.
    grace_s : float, default=5.0
        Seconds the graceful shutdown (``SIGTERM`` to this process) gets before ``os._exit(1)``.
    on_orphan : callable, optional
        Replaces the default shutdown (for tests): called once with the old and new parent ids.
    """

    def __init__(self, *, interval_s: float = 1.0, grace_s: float = 5.0,
                 on_orphan: Callable[[int, int], None] | None = None) -> None:
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.on_orphan = on_orphan
        self.parent_pid: int | None = None
        self.orphaned = False
        self._worker: PeriodicWorker | None = None

    def start(self) -> ParentWatch:
        if self._worker is None:
            self.parent_pid = os.getppid()
            self._worker = PeriodicWorker("parent-watch", self.check, self.interval_s, jitter=0.0,
                                          join_timeout_s=2, weak=True).start()
        return self

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.running

    def check(self) -> bool:
        """True when the parent is still the one seen at start; on the first change, shut down."""
        now = os.getppid()
        if self.parent_pid is None or now == self.parent_pid or self.orphaned:
            return not self.orphaned
        self.orphaned = True
        _log.error("parent process %d is gone (now %d): this worker stops serving and exits", self.parent_pid, now)
        if self.on_orphan is not None:
            self.on_orphan(self.parent_pid, now)
            return False
        os.kill(os.getpid(), signal.SIGTERM)
        timer = threading.Timer(self.grace_s, os._exit, args=(1,))
        timer.daemon = True
        timer.start()
        return False
