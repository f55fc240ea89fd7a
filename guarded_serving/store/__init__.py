"""Shared state for windows that all workers of a host (or of many hosts) pool.

- :class:`~guarded_serving.store.base.WindowStore` -- the interface (append rows,
  read a window, counters).
- :class:`~guarded_serving.store.sqlite.SQLiteWindowStore` -- one SQLite file in
  WAL mode, safe for several processes of one host writing at once.
- :class:`~guarded_serving.store.redis.RedisWindowStore` -- Redis, shared by the
  workers of many hosts (needs the ``redis`` extra: ``pip install guarded-serving[redis]``).
- :func:`open_store` -- a store from a target (a store object, a ``redis://`` /
  ``rediss://`` URL, or a SQLite path).
"""

from __future__ import annotations

import os
from .base import WindowStore
from .sqlite import SQLiteWindowStore

__all__ = ["RedisWindowStore", "SQLiteWindowStore", "WindowStore", "is_url", "open_store"]

#: Environment variable with the password of a Redis store whose URL carries none.
PASSWORD_ENV = "GUARDED_STORE_PASSWORD"


def is_url(target: object) -> bool:
    """Whether ``target`` names a Redis store (``redis://`` or ``rediss://``)."""
    return isinstance(target, str) and target.startswith(("redis://", "rediss://"))


def open_store(target: "str | os.PathLike[str] | WindowStore", *, retention: int,
               namespace: str = "default") -> WindowStore:
    """``target`` itself when it is a store; a :class:`RedisWindowStore` for a ``redis://`` or
    ``rediss://`` URL (keys under ``namespace``; the password from the URL, else from
    ``$GUARDED_STORE_PASSWORD``); else a :class:`SQLiteWindowStore` at that path (its directory
    created). Either keeps at least ``retention`` rows per stream. Nothing connects here."""
    if isinstance(target, WindowStore):
        return target
    if not isinstance(target, (str, os.PathLike)) or not str(target):
        raise ValueError(f"store={target!r} is invalid: expected a WindowStore, a redis:// URL "
                         "or the path of a SQLite file")
    if is_url(target):
        from .redis import RedisWindowStore

        return RedisWindowStore(str(target), retention=retention, namespace=namespace,
                                password=os.environ.get(PASSWORD_ENV) or None)
    return SQLiteWindowStore(target, retention=retention)


def __getattr__(name: str) -> object:  # RedisWindowStore without importing redis-py up front
    if name == "RedisWindowStore":
        from .redis import RedisWindowStore

        return RedisWindowStore
    raise AttributeError(name)
