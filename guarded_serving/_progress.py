"""A progress bar on stderr for long command-line work (``profile``, ``report``)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``label [#########-----------]  45.0% detail, 3.2 s`` redrawn in place (at most twice a second).

    Parameters
    ----------
    total : float, optional
        Units of the whole job; None draws no bar, only the detail and the time.
    label : str
    quiet : bool, default=False
        Draw nothing. Without a total, nothing is drawn when stderr is not a terminal either.
    width : int, default=30
    """

    def __init__(self, total: float | None, label: str, *, quiet: bool = False, width: int = 30,
                 stream: TextIO | None = None) -> None:
        self.total, self.label, self.width = total, label, width
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet or (total is None and not self.stream.isatty())
        self.t0 = time.monotonic()
        self.last = -1.0
        self.drawn = False

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def update(self, done: float, detail: str = "", *, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last < 0.5):
            return
        self.last = now
        parts = [self.label]
        if self.total:
            frac = min(max(done / self.total, 0.0), 1.0)
            fill = int(round(frac * self.width))
            parts.append(f"[{'#' * fill}{'-' * (self.width - fill)}] {100.0 * frac:5.1f}%")
        if detail:
            parts.append(detail + ",")
        parts.append(f"{now - self.t0:.1f} s")
        self.stream.write("\r" + " ".join(parts))
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
