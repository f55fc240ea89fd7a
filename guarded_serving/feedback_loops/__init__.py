"""Degenerate feedback loops: a system whose outputs shape its future inputs and labels.

- :mod:`.measures` -- concentration of exposure on counts (Gini, entropy, coverage, top share,
  popularity lift, Jaccard of successive lists).
- :mod:`.alarm` -- the sequential rank test that concentration keeps rising, with a
  false-alarm bound (test martingale, Ville's inequality).
- :mod:`.holdout` -- the random-exposure holdout comparison.
- :mod:`.coupling` -- outcome coupling: click-through by rank, label coverage by predicted class,
  the share of labels the model's own outputs produced.
- :mod:`.simulations` -- a popularity-reinforcing recommender and an Ensign et al. allocation loop,
  each with a control.
- :mod:`.component` -- :class:`LoopComponent`, pooled across workers through a store.
- :mod:`.capability` -- the ``feedback_loops`` configuration section and its factory.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ConcentrationAlarm", "HoldoutComparison", "LoopComponent", "OutcomeCoupling", "TrendAlarm",
           "holdout_comparison", "summarise", "windowed_holdout_comparison"]

_WHERE = {"ConcentrationAlarm": "alarm", "TrendAlarm": "alarm", "HoldoutComparison": "holdout",
          "holdout_comparison": "holdout", "LoopComponent": "component", "OutcomeCoupling": "coupling",
          "summarise": "measures", "windowed_holdout_comparison": "holdout"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
