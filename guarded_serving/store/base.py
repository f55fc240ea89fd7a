"""The interface of a shared window store.

A *stream* is an append-only sequence of fixed-width rows (say the feature
rows a model received, its outputs, or per-row p-values). Every row appended
gets a position in a single order shared by all writers: the stream's
``total`` counter after the append. Readers ask for the latest ``n`` rows
(a sliding window), or for the rows after a position (to consume a stream
incrementally, e.g. a sequential test). Retention is bounded: a store keeps
at least the latest ``retention`` rows of each stream and may drop older ones.

A Redis implementation maps naturally: one list (or stream) of batch blobs per
stream, ``INCRBY`` for the total inside a ``MULTI``, ``LTRIM`` for retention.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Sequence

import numpy as np

__all__ = ["Batch", "WindowStore"]

#: One flush: an optional idempotency id and the rows to append to each stream.
Batch = tuple["str | None", Mapping[str, np.ndarray]]


class WindowStore(ABC):
    """Append rows to named streams; read windows and counters back.

    Implementations must be safe for several processes appending to the same
    stream at once, and must never lose or duplicate an appended row.
    """

    @abstractmethod
    def append(self, stream: str, rows: np.ndarray) -> int:
        """Append ``rows`` (2-D, float) atomically; return the stream's total after it."""

    @abstractmethod
    def window(self, stream: str, n: int) -> np.ndarray:
        """The latest ``n`` rows of ``stream`` (fewer if it holds fewer), oldest first.

        Returns an array of shape (k, n_columns); ``(0, 0)`` for an empty stream.
        """

    @abstractmethod
    def rows_after(self, stream: str, position: int, limit: int) -> tuple[np.ndarray, int]:
        """Up to ``limit`` rows appended after ``position`` (a former ``total``).

        Returns ``(rows, new_position)``; rows already dropped by retention are
        skipped (``new_position`` still advances past them).
        """

    @abstractmethod
    def total(self, stream: str) -> int:
        """How many rows were ever appended to ``stream`` (by every writer)."""

    @abstractmethod
    def counter(self, key: str) -> int:
        """The shared counter ``key`` (0 if never set)."""

    def append_batches(self, batches: Sequence[Batch]) -> list[dict[str, int]]:
        """Append several batches (each ``(batch_id, {stream: rows})``); return each batch's totals.

        A store that talks to a server sends them in one round trip. A ``batch_id``
        makes the append idempotent where the store supports it (a retried batch whose
        first attempt was applied but not acknowledged is not appended twice). This
        default appends stream by stream.
        """
        return [{stream: self.append(stream, rows) for stream, rows in streams.items()} for _, streams in batches]

    def describe(self) -> str:
        """What and where the store is, for health messages (never a password)."""
        return type(self).__name__

    def verify(self) -> None:
        """Check the configuration at startup (e.g. credentials); raise ``ConfigError`` when
        it cannot work. Transient trouble (a server that is down) is not an error here."""

    def close(self) -> None:
        """Release connections (idempotent)."""
