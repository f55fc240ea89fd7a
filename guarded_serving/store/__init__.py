"""Shared state for windows that all workers of a host (or of many hosts) pool.

- :class:`~guarded_serving.store.base.WindowStore` -- the interface (append rows,
  read a window, counters); a Redis implementation can fill it for many hosts.
- :class:`~guarded_serving.store.sqlite.SQLiteWindowStore` -- one SQLite file in
  WAL mode, safe for several processes of one host writing at once.
- :func:`open_store` -- a store from a target (a store object or a SQLite path).
"""

from __future__ import annotations

import os
from .base import WindowStore
from .sqlite import SQLiteWindowStore

__all__ = ["SQLiteWindowStore", "WindowStore", "open_store"]


def open_store(target: "str | os.PathLike[str] | WindowStore", *, retention: int) -> WindowStore:
    """``target`` itself when it is a store, else a :class:`SQLiteWindowStore` at that path
    (its directory created) keeping at least ``retention`` rows per stream."""
    if isinstance(target, WindowStore):
        return target
    if not isinstance(target, (str, os.PathLike)) or not str(target):
        raise ValueError(f"store={target!r} is invalid: expected a WindowStore or the path of a SQLite file")
    return SQLiteWindowStore(target, retention=retention)
