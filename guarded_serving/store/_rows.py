"""Rows stored as batches: each batch is ``(pos_end, n, ncols, float64 bytes)``, where ``pos_end``
is the stream's total after the batch. Shared by the SQLite and Redis stores."""

from __future__ import annotations

from typing import Iterable

import numpy as np

__all__ = ["as_rows", "concat", "rows_after_batches", "stack"]


def as_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    if rows.ndim != 2:
        raise ValueError(f"rows must be 2-D (n_rows, n_columns), got shape {rows.shape}")
    return rows


def concat(parts: list[np.ndarray]) -> np.ndarray:
    widths = {p.shape[1] for p in parts}
    if len(widths) > 1:  # the schema changed (e.g. a new model): keep the latest width only
        w = parts[-1].shape[1]
        parts = [p for p in parts if p.shape[1] == w]
    return np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0].copy()


def stack(got: list[tuple], keep_last: int) -> np.ndarray:
    """The latest ``keep_last`` rows of batches in order, oldest first (``(0, 0)`` if none)."""
    if not got:
        return np.empty((0, 0))
    parts = [np.frombuffer(data, dtype=np.float64).reshape(n, ncols) for _, n, ncols, data in got]
    a = concat(parts)
    return a[-keep_last:] if len(a) > keep_last else a


def rows_after_batches(got: Iterable[tuple], position: int, limit: int) -> tuple[np.ndarray, int]:
    """Up to ``limit`` rows after ``position`` from batches ordered by ``pos_end`` (all ending after it)."""
    out, pos, taken = [], int(position), 0
    for pos_end, n, ncols, data in got:
        a = np.frombuffer(data, dtype=np.float64).reshape(n, ncols)
        start = max(0, n - (pos_end - pos))  # skip rows at or before `position`
        a = a[start:]
        room = limit - taken
        if len(a) > room:
            a = a[:room]
            out.append(a)
            pos = pos_end - n + start + room
            taken += room
            break
        out.append(a)
        taken += len(a)
        pos = pos_end
    if not out:
        return np.empty((0, 0)), pos
    return concat(out), pos
