"""Shared state for windows that all workers of a host (or of many hosts) pool.

- :class:`~guarded_serving.store.base.WindowStore` -- the interface (append rows,
  read a window, counters); a Redis implementation can fill it for many hosts.
- :class:`~guarded_serving.store.sqlite.SQLiteWindowStore` -- one SQLite file in
  WAL mode, safe for several processes of one host writing at once.
"""

from .base import WindowStore
from .sqlite import SQLiteWindowStore

__all__ = ["SQLiteWindowStore", "WindowStore"]
