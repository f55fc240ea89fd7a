"""Predictions and their true outcomes (labels), joined by request id.

A *prediction record* is what the guard keeps of one answered row to judge it later: its
request id and row, when it was made, the model version, a segment key the user chose, the
task (``classification`` or ``regression``), the predicted class or value, the output view
(class probabilities, confidence) and optionally the input row. A *label* is the true outcome
of one ``(request_id, row)``, sent later by whoever learns it, optionally with a *source* tag
(a short string, e.g. ``"model"`` when the label exists because the model acted on its answer,
``"organic"`` or ``"exploration"``), kept with it for the feedback-loop check.

The two arrive in any order: a label whose prediction is not stored yet (still in a worker's
buffer) is kept *pending* and joined when the prediction is flushed. Each joined label gets a
sequence number in join order, so a reader can consume the stream of outcomes incrementally
(:meth:`OutcomeStore.outcomes_after`) and every worker sees the same order.

:class:`SQLiteOutcomeStore` keeps them in one SQLite file (WAL): a label is committed before
its feedback call answers, so it survives a restart and a ``kill -9`` of the server. Retention
is by time: predictions older than ``retention_s`` are deleted with their labels; pending
labels older than ``pending_s`` are dropped (and counted). Predictions are stored in arrival
order (a rowid table) with a unique index on ``(request_id, row)``: a request id leads with its
trace id, random when tracing is on, and random keys go into that small index rather than into a
table of 300-byte rows (keyed by them, as a ``WITHOUT ROWID`` table, a flush of 200 records cost
21 us a row growing to 31 over 60,000 rows, against 12 to 16 now: ``load_tests/bench_store.py``).
A file written by an earlier version keeps its ``WITHOUT ROWID`` table, which the same statements
serve. Expiry deletes version by version over the ``(version, ts)`` index. Upgrade every worker
that shares a file together: a worker of an earlier version re-creates the ``ts`` index when it
connects (a full index build under the write lock) and a current one drops it again.
:class:`~guarded_serving.store.outcomes_redis.RedisOutcomeStore` keeps them in Redis, for many hosts.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NamedTuple, Sequence

from ._private import private_file

__all__ = ["LabelOutcome", "OutcomeStore", "PredictionRecord", "SQLiteOutcomeStore"]


class PredictionRecord(NamedTuple):
    """One answered row, as stored for joining with its label later (a tuple in column order: the
    SQLite store writes records as they are, one per answered row, without building anything more)."""

    request_id: str
    row: int
    ts: float                     # unix seconds when it was answered
    version: str
    segment: str
    kind: str                     # "classification" or "regression"
    predicted: float | None       # class index or value; None when the row got no answer
    view: bytes | None = None     # float64 output-view columns (class probabilities, ...)
    inputs: bytes | None = None   # float64 input row, when inputs are kept


@dataclass(frozen=True)
class LabelOutcome:
    """What became of one label sent to :meth:`OutcomeStore.add_labels`.

    ``status`` is ``recorded`` (joined to its prediction), ``pending`` (kept; its prediction
    is not stored yet), ``unchanged`` (the same label again), ``conflict`` (a different label
    was recorded first: ``existing``), ``invalid`` (wrong type for the prediction: ``problem``)
    or ``unknown`` (no prediction, and the caller did not allow pending).
    """

    status: str
    existing: float | None = None
    problem: str | None = None
    kind: str | None = None


class OutcomeStore(ABC):
    """Predictions and labels, joined by ``(request_id, row)``."""

    @abstractmethod
    def add_predictions(self, records: Sequence[PredictionRecord]) -> int:
        """Store records (a record already stored is ignored) and join pending labels; return
        how many labels were joined."""

    @abstractmethod
    def add_labels(self, items: Sequence[tuple],
                   validate: Callable[[str | None, float], str | None], now: float | None = None
                   ) -> list[LabelOutcome]:
        """Record labels ``(request_id, row, label, pending_ok[, source])`` in one transaction
        (``source``: a tag string or None; the first label of a row keeps its tag).

        ``validate(kind, label)`` returns why a label is wrong for a prediction of ``kind``
        (None: fine); it is called with the stored prediction's kind, or with None for a
        pending label. Returns one :class:`LabelOutcome` per item, in order.
        """

    @abstractmethod
    def outcomes_after(self, seq: int, limit: int) -> list[tuple]:
        """Joined outcomes with a sequence number above ``seq``, in join order: tuples
        ``(seq, version, segment, kind, predicted, label, pred_ts, label_ts, view, source, request_id, row)``
        (``source`` None when the label came untagged)."""

    @abstractmethod
    def coverage(self) -> list[tuple]:
        """``(version, segment, predicted class or None, n_predictions, n_labelled)`` over stored predictions
        (regressors: one row per version and segment, predicted None)."""

    @abstractmethod
    def latest(self, version: str, n: int) -> list[tuple]:
        """The latest ``n`` predictions of ``version``: ``(ts, segment, predicted, view, label or None)``."""

    @abstractmethod
    def expire(self, now: float | None = None) -> dict[str, int]:
        """Apply retention; return ``{"predictions": n, "labels": n, "pending_dropped": n}`` removed."""

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """``predictions``, ``labels``, ``pending`` stored now and ``pending_dropped`` ever."""

    def describe(self) -> str:
        return type(self).__name__

    def verify(self) -> None:
        """Raise ``ConfigError`` when the configuration can never work (refused credentials)."""

    def close(self) -> None:
        """Release connections (idempotent)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    ts REAL NOT NULL,
    version TEXT NOT NULL,
    segment TEXT NOT NULL,
    kind TEXT NOT NULL,
    predicted REAL,
    view BLOB,
    inputs BLOB,
    UNIQUE (request_id, row)
);
DROP INDEX IF EXISTS predictions_ts;
CREATE INDEX IF NOT EXISTS predictions_version_ts ON predictions(version, ts);
CREATE TABLE IF NOT EXISTS labels (
    request_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    label REAL NOT NULL,
    ts REAL NOT NULL,            -- when it was received
    seq INTEGER,                 -- join order; NULL while its prediction is not stored (pending)
    source TEXT,                 -- the caller's tag of where the label came from (NULL: untagged)
    PRIMARY KEY (request_id, row)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS labels_seq ON labels(seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# Coverage kept as counts per (version, segment, predicted class), maintained by triggers as rows are
# inserted, joined and deleted (by any writer of the file), so reading it is O(groups), not O(history).
# has_cls = 0: a regressor's row or a row without an answer (class None); cls is then 0.
_KEY = ("{t}.kind = 'classification' AND {t}.predicted IS NOT NULL, "
        "CASE WHEN {t}.kind = 'classification' THEN COALESCE({t}.predicted, 0) ELSE 0 END")
_LABEL_JOINED = ("UPDATE coverage SET n_lab = n_lab {op} 1 WHERE (version, segment, has_cls, cls) IN "
                 "(SELECT p.version, p.segment, " + _KEY.format(t="p") + " FROM predictions p "
                 "WHERE p.request_id = {t}.request_id AND p.row = {t}.row);")
_COVERAGE = [
    ("CREATE TABLE IF NOT EXISTS coverage (version TEXT NOT NULL, segment TEXT NOT NULL, has_cls INTEGER NOT NULL, "
     "cls REAL NOT NULL, n INTEGER NOT NULL, n_lab INTEGER NOT NULL, PRIMARY KEY (version, segment, has_cls, cls)) "
     "WITHOUT ROWID"),
    "DELETE FROM coverage",
    "INSERT INTO coverage(version, segment, has_cls, cls, n, n_lab) SELECT p.version, p.segment, "
    + _KEY.format(t="p") + ", COUNT(*), COUNT(l.seq) FROM predictions p LEFT JOIN labels l ON "
    "l.request_id = p.request_id AND l.row = p.row AND l.seq IS NOT NULL GROUP BY 1, 2, 3, 4",
    "CREATE TRIGGER IF NOT EXISTS coverage_prediction_in AFTER INSERT ON predictions BEGIN "
    "INSERT INTO coverage(version, segment, has_cls, cls, n, n_lab) VALUES (new.version, new.segment, "
    + _KEY.format(t="new") + ", 1, 0) ON CONFLICT(version, segment, has_cls, cls) DO UPDATE SET n = n + 1; END",
    # a prediction deleted before its joined label (expire deletes the labels first) takes the label's count along
    "CREATE TRIGGER IF NOT EXISTS coverage_prediction_out AFTER DELETE ON predictions BEGIN "
    "UPDATE coverage SET n = n - 1, n_lab = n_lab - (SELECT COUNT(*) FROM labels l WHERE l.request_id = "
    "old.request_id AND l.row = old.row AND l.seq IS NOT NULL) WHERE (version, segment, has_cls, cls) = "
    "(old.version, old.segment, " + _KEY.format(t="old") + "); END",
    "CREATE TRIGGER IF NOT EXISTS coverage_label_joined AFTER UPDATE OF seq ON labels "
    "WHEN old.seq IS NULL AND new.seq IS NOT NULL BEGIN " + _LABEL_JOINED.format(op="+", t="new") + " END",
    "CREATE TRIGGER IF NOT EXISTS coverage_label_in AFTER INSERT ON labels WHEN new.seq IS NOT NULL BEGIN "
    + _LABEL_JOINED.format(op="+", t="new") + " END",
    "CREATE TRIGGER IF NOT EXISTS coverage_label_out AFTER DELETE ON labels WHEN old.seq IS NOT NULL BEGIN "
    + _LABEL_JOINED.format(op="-", t="old") + " END",
    "INSERT INTO meta(key, value) VALUES('coverage', 1)",
]


class SQLiteOutcomeStore(OutcomeStore):
    """Predictions and labels in one SQLite file (WAL; safe for the workers of one host).

    Parameters
    ----------
    path : str or Path
        The database file; its directory is created if missing.
    retention_s : float, default=7 days
        Predictions (and their labels) older than this are deleted by :meth:`expire`.
    pending_s : float, default=3600
        How long a label waits for its prediction before it is dropped.
    busy_timeout_ms : int, default=10000
    """

    def __init__(self, path: str | os.PathLike[str], *, retention_s: float = 7 * 86400.0,
                 pending_s: float = 3600.0, busy_timeout_ms: int = 10_000) -> None:
        if not retention_s > 0:
            raise ValueError(f"retention_s={retention_s!r} is invalid: expected seconds > 0")
        self.path = Path(path)
        self.retention_s = float(retention_s)
        self.pending_s = float(pending_s)
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            private_file(self.path)  # 0600 in a 0700 directory (the -wal/-shm files copy its mode)
        except OSError:  # a read-only or missing directory: SQLite's own error follows
            pass
        conn = sqlite3.connect(str(self.path), timeout=self.busy_timeout_ms / 1000.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a killed process
        conn.executescript(_SCHEMA)
        if "source" not in {r[1] for r in conn.execute("PRAGMA table_info(labels)")}:  # a file from before tags
            try:
                conn.execute("ALTER TABLE labels ADD COLUMN source TEXT")
            except sqlite3.OperationalError as exc:  # another worker added it first
                if "duplicate column" not in str(exc):
                    raise
        if conn.execute("SELECT 1 FROM meta WHERE key='coverage'").fetchone() is None:
            conn.execute("BEGIN IMMEDIATE")  # once per file: counts from the rows there, then triggers keep them
            try:
                if conn.execute("SELECT 1 FROM meta WHERE key='coverage'").fetchone() is None:  # no other worker
                    for stmt in _COVERAGE:
                        conn.execute(stmt)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _txn(self, fn: Callable[[sqlite3.Connection], object]) -> object:
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                out = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._connect().execute(sql, args).fetchall()

    @staticmethod
    def _next_seq(conn: sqlite3.Connection, n: int) -> int:
        """Reserve ``n`` sequence numbers; return the first."""
        conn.execute("INSERT INTO meta(key, value) VALUES('seq', ?) ON CONFLICT(key) DO UPDATE SET "
                     "value = value + excluded.value", (n,))
        return int(conn.execute("SELECT value FROM meta WHERE key='seq'").fetchone()[0]) - n + 1

    # -- writes --------------------------------------------------------------------------
    def add_predictions(self, records: Sequence[PredictionRecord]) -> int:
        if not records:
            return 0

        def txn(conn: sqlite3.Connection) -> int:
            conn.executemany(  # records are tuples in column order
                "INSERT OR IGNORE INTO predictions(request_id, row, ts, version, segment, kind, predicted, view, "
                "inputs) VALUES (?,?,?,?,?,?,?,?,?)", records)
            return self._join_pending(conn)

        return int(self._txn(txn))  # type: ignore[arg-type]

    def _join_pending(self, conn: sqlite3.Connection) -> int:
        waiting = conn.execute(
            "SELECT l.request_id, l.row FROM labels l JOIN predictions p USING(request_id, row) "
            "WHERE l.seq IS NULL ORDER BY l.ts").fetchall()
        if not waiting:
            return 0
        first = self._next_seq(conn, len(waiting))
        conn.executemany("UPDATE labels SET seq=? WHERE request_id=? AND row=?",
                         [(first + i, rid, row) for i, (rid, row) in enumerate(waiting)])
        return len(waiting)

    def add_labels(self, items: Sequence[tuple],
                   validate: Callable[[str | None, float], str | None], now: float | None = None
                   ) -> list[LabelOutcome]:
        ts = time.time() if now is None else float(now)

        def txn(conn: sqlite3.Connection) -> list[LabelOutcome]:
            out: list[LabelOutcome] = []
            joined: list[tuple[str, int]] = []
            seen: dict[tuple[str, int], float] = {}
            for item in items:
                rid, row, label, pending_ok = item[:4]
                source = item[4] if len(item) > 4 else None
                key = (rid, row)
                prior = seen.get(key)
                if prior is None:
                    got = conn.execute("SELECT label FROM labels WHERE request_id=? AND row=?", key).fetchone()
                    prior = None if got is None else float(got[0])
                pred = conn.execute("SELECT kind FROM predictions WHERE request_id=? AND row=?", key).fetchone()
                kind = None if pred is None else str(pred[0])
                if pred is None:
                    rows = int(conn.execute("SELECT COUNT(*) FROM predictions WHERE request_id=?",
                                            (rid,)).fetchone()[0])
                    if rows:
                        out.append(LabelOutcome("invalid", problem=f"row {row} does not exist: the request had "
                                                f"{rows} row(s)"))
                        continue
                    if not pending_ok:
                        out.append(LabelOutcome("unknown"))
                        continue
                problem = validate(kind, label)
                if problem is not None:
                    out.append(LabelOutcome("invalid", problem=problem, kind=kind))
                    continue
                if prior is not None:
                    out.append(LabelOutcome("unchanged" if prior == label else "conflict", existing=prior, kind=kind))
                    continue
                conn.execute("INSERT INTO labels(request_id, row, label, ts, seq, source) VALUES (?,?,?,?,NULL,?)",
                             (rid, row, label, ts, source))
                seen[key] = label
                if pred is not None:
                    joined.append(key)
                out.append(LabelOutcome("recorded" if pred is not None else "pending", kind=kind))
            if joined:
                first = self._next_seq(conn, len(joined))
                conn.executemany("UPDATE labels SET seq=? WHERE request_id=? AND row=?",
                                 [(first + i, rid, row) for i, (rid, row) in enumerate(joined)])
            return out

        return self._txn(txn)  # type: ignore[return-value]

    def expire(self, now: float | None = None) -> dict[str, int]:
        t = time.time() if now is None else float(now)

        def txn(conn: sqlite3.Connection) -> dict[str, int]:
            cut = t - self.retention_s
            n_lab = n_pred = 0
            # by version (the coverage counts name every stored one): the (version, ts) index finds the old rows
            for (version,) in conn.execute("SELECT DISTINCT version FROM coverage").fetchall():
                n_lab += conn.execute(
                    "DELETE FROM labels WHERE seq IS NOT NULL AND (request_id, row) IN "
                    "(SELECT request_id, row FROM predictions WHERE version = ? AND ts < ?)", (version, cut)).rowcount
                n_pred += conn.execute("DELETE FROM predictions WHERE version = ? AND ts < ?", (version, cut)).rowcount
            n_pend = conn.execute("DELETE FROM labels WHERE seq IS NULL AND ts < ?", (t - self.pending_s,)).rowcount
            if n_pend:
                conn.execute("INSERT INTO meta(key, value) VALUES('pending_dropped', ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = value + excluded.value", (n_pend,))
            return {"predictions": n_pred, "labels": n_lab, "pending_dropped": n_pend}

        return self._txn(txn)  # type: ignore[return-value]

    # -- reads ---------------------------------------------------------------------------
    def outcomes_after(self, seq: int, limit: int) -> list[tuple]:
        return self._read(
            "SELECT l.seq, p.version, p.segment, p.kind, p.predicted, l.label, p.ts, l.ts, p.view, l.source, "
            "l.request_id, l.row FROM labels l JOIN predictions p USING(request_id, row) WHERE l.seq > ? ORDER BY l.seq LIMIT ?",
            (int(seq), int(limit)))

    def coverage(self) -> list[tuple]:
        # kept by triggers (see _COVERAGE): O(groups), however many predictions are stored
        return self._read(
            "SELECT version, segment, CASE WHEN has_cls THEN cls END, SUM(n), SUM(n_lab) FROM coverage "
            "GROUP BY 1, 2, 3 HAVING SUM(n) > 0")

    def latest(self, version: str, n: int) -> list[tuple]:
        return self._read(
            "SELECT p.ts, p.segment, p.predicted, p.view, l.label FROM "
            "(SELECT * FROM predictions WHERE version=? ORDER BY ts DESC LIMIT ?) p "
            "LEFT JOIN labels l ON l.request_id = p.request_id AND l.row = p.row AND l.seq IS NOT NULL "
            "ORDER BY p.ts", (version, int(n)))

    def counts(self) -> dict[str, int]:
        rows = self._read(
            "SELECT (SELECT COALESCE(SUM(n), 0) FROM coverage), (SELECT COALESCE(SUM(n_lab), 0) FROM coverage), "
            "(SELECT COUNT(*) FROM labels WHERE seq IS NULL), "
            "(SELECT COALESCE(MAX(value), 0) FROM meta WHERE key='pending_dropped')")
        p, lab, pend, dropped = rows[0]
        return {"predictions": int(p), "labels": int(lab), "pending": int(pend), "pending_dropped": int(dropped)}

    def labels(self, request_ids: Iterable[str]) -> dict[tuple[str, int], float]:
        """The stored labels of ``request_ids`` (pending ones included), by ``(request_id, row)``."""
        ids = list(request_ids)
        out: dict[tuple[str, int], float] = {}
        for i in range(0, len(ids), 500):
            part = ids[i:i + 500]
            for rid, row, label in self._read(
                    f"SELECT request_id, row, label FROM labels WHERE request_id IN ({','.join('?' * len(part))})",
                    tuple(part)):
                out[(rid, int(row))] = float(label)
        return out

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
