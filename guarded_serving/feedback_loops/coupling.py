"""Outcome coupling: how the feedback a model gets depends on what the model did.

Three readings, each from outcomes joined to predictions by request id:

- **click-through by exposure rank** per window (:meth:`OutcomeCoupling.ctr_by_rank`): a loop
  steepens it (the first slot, always the same favourites, takes more and more of the clicks);
- **label coverage by predicted class** (:meth:`OutcomeCoupling.coverage_by_class`): labels seen
  only where the model said yes (a loan repaid or not is known only when it was granted) make
  every later model learn from its own decisions;
- **the share of labels the model's own outputs produced** (:meth:`OutcomeCoupling.source_shares`),
  when the caller tags each label's source (``"model"``: it exists because the model acted;
  ``"exploration"``: from the random slice; anything else: independent).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ..sources import source_problem

__all__ = ["SOURCES", "OutcomeCoupling", "check_source", "source_code"]

SOURCES = ("unknown", "model", "exploration", "independent")


def check_source(source: object) -> None:
    """Raise ``ValueError`` naming ``source`` unless it is None or a short tag (1-32 letters,
    digits, ``_ . : -``), as the feedback endpoint requires."""
    problem = source_problem(source)  # the rule of the feedback endpoint (guarded_serving/sources.py)
    if problem is not None:
        raise ValueError(problem)


def source_code(source: str | None) -> int:
    """0 unknown (None), 1 ``"model"``, 2 ``"exploration"``, 3 any other tag."""
    if source is None:
        return 0
    return {"model": 1, "exploration": 2}.get(str(source), 3)


class OutcomeCoupling:
    """Counters of outcomes joined to predictions (per window for click-through).

    Parameters
    ----------
    max_rank : int, default=20
    history : int, default=50
        Windows of click-through kept.
    """

    def __init__(self, *, max_rank: int = 20, history: int = 50) -> None:
        self.max_rank = max_rank
        self.history = history
        self.windows_: deque[dict[str, Any]] = deque(maxlen=history)
        self.predicted_ = np.zeros(0)        # predictions per class
        self.labelled_ = np.zeros(0)         # labelled predictions per class
        self.sources_ = np.zeros(len(SOURCES))

    # -- click-through ----------------------------------------------------------------
    def add_window(self, window: int, lists: int, clicks_by_rank: np.ndarray) -> None:
        """Close a window: ``lists`` model lists served, ``clicks_by_rank[r]`` clicks at rank r+1."""
        c = np.asarray(clicks_by_rank, dtype=float)[: self.max_rank]
        self.windows_.append({"window": int(window), "lists": int(lists), "clicks": c})

    def ctr_by_rank(self, last: int = 1) -> np.ndarray:
        """Clicks per list at each rank over the ``last`` windows (NaN before any window)."""
        ws = list(self.windows_)[-last:]
        n = sum(w["lists"] for w in ws)
        if not ws or n == 0:
            return np.full(self.max_rank, np.nan)
        return np.sum([w["clicks"] for w in ws], axis=0) / n

    def top_rank_share(self) -> list[float]:
        """Per window, the share of its clicks taken by rank 1 (NaN without clicks)."""
        return [float(w["clicks"][0] / w["clicks"].sum()) if w["clicks"].sum() > 0 else float("nan")
                for w in self.windows_]

    # -- labels -----------------------------------------------------------------------
    def add_predictions(self, classes: np.ndarray) -> None:
        self._bump("predicted_", classes)

    def add_labels(self, predicted_classes: np.ndarray, sources: np.ndarray) -> None:
        """Labels joined to predictions of ``predicted_classes``, with their source codes."""
        self._bump("labelled_", predicted_classes)
        s = np.asarray(sources, dtype=int)
        self.sources_ += np.bincount(np.clip(s, 0, len(SOURCES) - 1), minlength=len(SOURCES))

    def _bump(self, name: str, classes: np.ndarray) -> None:
        c = np.asarray(classes, dtype=float)
        c = c[np.isfinite(c) & (c >= 0)].astype(int)
        if not len(c):
            return
        counts = np.bincount(c)
        cur = getattr(self, name)
        n = max(len(cur), len(counts), len(self.predicted_), len(self.labelled_))
        self.predicted_ = np.pad(self.predicted_, (0, n - len(self.predicted_)))
        self.labelled_ = np.pad(self.labelled_, (0, n - len(self.labelled_)))
        getattr(self, name)[: len(counts)] += counts

    def coverage_by_class(self) -> dict[int, float]:
        """Per predicted class, the share of its predictions that got a label."""
        return {c: float(self.labelled_[c] / self.predicted_[c]) for c in range(len(self.predicted_))
                if self.predicted_[c] > 0}

    def source_shares(self) -> dict[str, float]:
        """Share of labels by source tag (only tagged labels, when any are tagged)."""
        tagged = self.sources_[1:].sum()
        if tagged <= 0:
            return {}
        return {SOURCES[i]: float(self.sources_[i] / tagged) for i in range(1, len(SOURCES))}
