"""A :class:`~guarded_serving.store.base.WindowStore` in one SQLite file.

Several processes (BentoML workers of one host) open the same file. It runs in
WAL mode (readers never block the writer), with a ``busy_timeout`` so a writer
waits for the lock instead of failing, and every append is one
``BEGIN IMMEDIATE`` transaction that bumps the stream's total and inserts the
batch together: a row is stored exactly once, with a position no other writer
can take. A ``database is locked`` that outlasts the timeout is retried with
backoff, a bounded number of times, and then raised (never silently dropped).

Rows are stored per appended batch, as one float64 blob, so writes cost one
insert per batch, not per row. Retention keeps the latest ``retention`` rows
of each stream (whole batches; a little more may be kept).

The connection is guarded by a lock: one store object may be shared by the
threads of a process.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path

from ._private import private_file
from typing import Sequence

import numpy as np

from ._rows import as_rows as _as_rows, rows_after_batches, stack as _stack
from .base import Batch, WindowStore

__all__ = ["SQLiteWindowStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    stream TEXT NOT NULL,
    pos_end INTEGER NOT NULL,      -- the stream's total after this batch
    n INTEGER NOT NULL,
    ncols INTEGER NOT NULL,
    data BLOB NOT NULL,
    ts REAL NOT NULL,
    PRIMARY KEY (stream, pos_end)
);
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SQLiteWindowStore(WindowStore):
    """Shared windows in a SQLite file (WAL, busy timeout, bounded retention).

    Parameters
    ----------
    path : str or Path
        The database file; its directory is created if missing.
    retention : int, default=200_000
        Rows kept per stream (older batches are deleted on append).
    busy_timeout_ms : int, default=5000
        How long a writer waits for another's lock before retrying.
    retries : int, default=20
        Retries of a transaction that still finds the database locked.
    """

    def __init__(self, path: str | os.PathLike[str], *, retention: int = 200_000,
                 busy_timeout_ms: int = 5000, retries: int = 20) -> None:
        if not isinstance(retention, int) or retention < 1:
            raise ValueError(f"retention={retention!r} is invalid: expected an integer >= 1")
        self.path = Path(path)
        self.retention = retention
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.retries = int(retries)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    # -- connection ----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross fork(): reopen in a child process.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            private_file(self.path)  # 0600 in a 0700 directory, before SQLite writes a row
        except OSError:  # a read-only or missing directory: SQLite's own error (and its reason) follows
            pass
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_ms / 1000.0,
                               isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
        conn.execute("PRAGMA synchronous=NORMAL")
        self._retry(lambda: conn.executescript(_SCHEMA))
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry(self, fn):  # type: ignore[no-untyped-def]
        delay = 0.005
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == self.retries:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    def _write(self, fn):  # type: ignore[no-untyped-def]
        """Run ``fn(conn)`` inside one BEGIN IMMEDIATE transaction, with retries."""
        with self._lock:
            try:
                conn = self._connect()

                def txn():  # type: ignore[no-untyped-def]
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        out = fn(conn)
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return out

                return self._retry(txn)
            except sqlite3.OperationalError as exc:
                # SQLite says "disk I/O error" or "readonly database"; say why, when the directory tells.
                why = _unwritable(self.path.parent)
                if why is None:
                    raise
                raise sqlite3.OperationalError(f"{exc} ({why})") from exc

    def _read(self, sql: str, args: tuple) -> list[tuple]:
        with self._lock:
            conn = self._connect()
            return self._retry(lambda: conn.execute(sql, args).fetchall())  # type: ignore[no-any-return]

    # -- WindowStore -----------------------------------------------------------------
    def append(self, stream: str, rows: np.ndarray) -> int:
        rows = _as_rows(rows)
        if rows.shape[0] == 0:
            return self.total(stream)
        return int(self._write(lambda conn: self._append_in(conn, stream, rows)))

    def append_batches(self, batches: Sequence[Batch]) -> list[dict[str, int]]:
        """Every batch in one transaction (the batch ids are not needed: SQLite answers for sure)."""
        prepared = [{stream: _as_rows(rows) for stream, rows in streams.items()} for _, streams in batches]
        if not any(r.shape[0] for streams in prepared for r in streams.values()):
            return [{stream: self.total(stream) for stream in streams} for streams in prepared]

        def txn(conn: sqlite3.Connection) -> list[dict[str, int]]:
            return [{stream: self._append_in(conn, stream, rows) for stream, rows in streams.items()}
                    for streams in prepared]

        return self._write(txn)  # type: ignore[no-any-return]

    def _append_in(self, conn: sqlite3.Connection, stream: str, rows: np.ndarray) -> int:
        key = "total:" + stream
        n, ncols = rows.shape
        if n == 0:
            got = conn.execute("SELECT value FROM counters WHERE key=?", (key,)).fetchone()
            return int(got[0]) if got else 0
        conn.execute("INSERT INTO counters(key, value) VALUES(?, ?) "
                     "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value", (key, n))
        total = int(conn.execute("SELECT value FROM counters WHERE key=?", (key,)).fetchone()[0])
        conn.execute("INSERT INTO batches(stream, pos_end, n, ncols, data, ts) VALUES(?,?,?,?,?,?)",
                     (stream, total, n, ncols, rows.tobytes(), time.time()))
        conn.execute("DELETE FROM batches WHERE stream=? AND pos_end <= ?", (stream, total - self.retention))
        return total

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def total(self, stream: str) -> int:
        return self.counter("total:" + stream)

    def counter(self, key: str) -> int:
        got = self._read("SELECT value FROM counters WHERE key=?", (key,))
        return int(got[0][0]) if got else 0

    def window(self, stream: str, n: int) -> np.ndarray:
        if n <= 0:
            return np.empty((0, 0))
        # One consistent snapshot: read the total and the batches in one statement.
        got = self._read(
            "SELECT b.pos_end, b.n, b.ncols, b.data FROM batches b "
            "WHERE b.stream=? AND b.pos_end > "
            "(SELECT COALESCE(MAX(value), 0) FROM counters WHERE key=?) - ? ORDER BY b.pos_end",
            (stream, "total:" + stream, n))
        return _stack(got, keep_last=n)

    def rows_after(self, stream: str, position: int, limit: int) -> tuple[np.ndarray, int]:
        got = self._read("SELECT pos_end, n, ncols, data FROM batches WHERE stream=? AND pos_end > ? "
                         "ORDER BY pos_end", (stream, int(position)))
        return rows_after_batches(got, int(position), limit)

    def batches(self, stream: str, limit_rows: int | None = None) -> list[tuple[float, np.ndarray]]:
        """``(unix time appended, rows)`` of each retained batch of ``stream``, oldest first (the
        latest ``limit_rows`` rows at most); for reports, not for the request path."""
        got = self._read("SELECT ts, n, ncols, data FROM batches WHERE stream=? ORDER BY pos_end", (stream,))
        out = [(float(ts), np.frombuffer(data, dtype=np.float64).reshape(n, ncols)) for ts, n, ncols, data in got]
        if limit_rows is not None:
            kept, rows = [], 0
            for ts, a in reversed(out):
                if rows >= limit_rows:
                    break
                kept.append((ts, a))
                rows += len(a)
            out = kept[::-1]
        return out

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def _unwritable(directory: Path) -> str | None:
    """Why files cannot be written in ``directory`` (read-only filesystem, permissions, full disk), or None.

    Called only after a write failed: it creates and removes one probe file.
    """
    probe = directory / f".write-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0")
        probe.unlink()
    except OSError as exc:
        return f"cannot write to the state directory {directory}: {exc.strerror or exc}"
    return None
