"""SQLiteWindowStore: shared windows in one SQLite file."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pytest

from guarded_serving.store import SQLiteWindowStore, WindowStore


def _writer(path: str, wid: int, batches: int) -> None:
    store = SQLiteWindowStore(path, retention=10**7, busy_timeout_ms=200, retries=200)
    for b in range(batches):
        n = 1 + (b % 3)
        rows = np.column_stack([np.full(n, wid), np.arange(n) + b * 10]).astype(float)
        store.append("s", rows)
    store.close()


class TestBasics:
    def test_is_a_window_store(self, tmp_path):
        """The SQLite store implements the abstract interface."""
        assert isinstance(SQLiteWindowStore(tmp_path / "w.sqlite"), WindowStore)

    def test_wal_mode(self, tmp_path):
        """The database runs in WAL mode."""
        s = SQLiteWindowStore(tmp_path / "w.sqlite")
        s.append("s", np.ones((1, 2)))
        mode = sqlite3.connect(tmp_path / "w.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"

    def test_window_returns_latest_rows_in_order(self, tmp_path):
        """window(n) gives the last n rows, oldest first, across batch boundaries."""
        s = SQLiteWindowStore(tmp_path / "w.sqlite")
        for i in range(5):
            s.append("s", np.arange(i * 4, i * 4 + 4, dtype=float).reshape(2, 2))
        assert s.total("s") == 10
        w = s.window("s", 3)
        assert w[:, 0].tolist() == [14.0, 16.0, 18.0]
        assert s.window("other", 5).shape == (0, 0)

    def test_rows_after_consumes_incrementally(self, tmp_path):
        """rows_after returns exactly the rows after a position, limited, and the new position."""
        s = SQLiteWindowStore(tmp_path / "w.sqlite")
        s.append("s", np.arange(5, dtype=float)[:, None])
        s.append("s", np.arange(5, 10, dtype=float)[:, None])
        rows, pos = s.rows_after("s", 2, limit=4)
        assert rows[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0] and pos == 6
        rows, pos = s.rows_after("s", pos, limit=100)
        assert rows[:, 0].tolist() == [6.0, 7.0, 8.0, 9.0] and pos == 10

    def test_retention_is_bounded(self, tmp_path):
        """Old batches beyond the retention are deleted; the total still counts them."""
        s = SQLiteWindowStore(tmp_path / "w.sqlite", retention=10)
        for i in range(50):
            s.append("s", np.full((2, 1), float(i)))
        assert s.total("s") == 100
        assert len(s.window("s", 1000)) <= 12
        n = sqlite3.connect(tmp_path / "w.sqlite").execute("SELECT SUM(n) FROM batches").fetchone()[0]
        assert n <= 12

    def test_counters(self, tmp_path):
        """counter reads the shared integer counters: 0 if never set; a stream's total is one."""
        s = SQLiteWindowStore(tmp_path / "w.sqlite")
        assert s.counter("k") == 0
        s.append("s", np.ones((3, 1)))
        s.append("s", np.ones((1, 1)))
        assert s.counter("total:s") == s.total("s") == 4

    def test_rejects_non_2d_rows(self, tmp_path):
        """Appending a 1-D array is an error naming the shape."""
        with pytest.raises(ValueError, match="2-D"):
            SQLiteWindowStore(tmp_path / "w.sqlite").append("s", np.ones(3))


class TestConcurrency:
    def test_several_processes_lose_no_rows(self, tmp_path):
        """Four processes appending at once: every row stored exactly once, total exact."""
        path = str(tmp_path / "w.sqlite")
        SQLiteWindowStore(path).append("init", np.ones((1, 1)))
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_writer, args=(path, w, 60)) for w in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        s = SQLiteWindowStore(path)
        expected = 4 * sum(1 + (b % 3) for b in range(60))
        assert s.total("s") == expected
        rows = s.window("s", 10**6)
        assert len(rows) == expected
        assert len({(a, b) for a, b in rows.tolist()}) == expected


def test_unwritable_directory_is_diagnosed(tmp_path):
    """After a failed write the store names why the state directory cannot be written, or nothing if it can."""
    from guarded_serving.store.sqlite import _unwritable

    assert _unwritable(tmp_path) is None and not list(tmp_path.iterdir())  # the probe is removed
    reason = _unwritable(tmp_path / "gone")
    assert reason is not None and "cannot write to the state directory" in reason and "No such file" in reason
