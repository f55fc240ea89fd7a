"""ML performance: delayed labels joined by request id, expectations, label-free estimates.

- :mod:`.confseq` -- an anytime-valid confidence sequence for a mean in [0, 1] (pure numpy).
- :mod:`.estimate` -- label-free accuracy estimates: :class:`CBPE` and :class:`ATC`.
- :mod:`.realised` -- realised metrics and the expectations' bounds per version and segment.
- :mod:`.feedback` -- feedback items and :class:`FeedbackResult`.
- :mod:`.component` -- :class:`PerformanceComponent` (buffer on the request path, judge in the background).
- :mod:`.capability` -- the ``performance`` configuration section and its factory.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ATC", "CBPE", "EmpiricalBernsteinCS", "FeedbackResult", "PerformanceComponent", "Tally", "bounds_path"]

_WHERE = {"ATC": "estimate", "CBPE": "estimate", "EmpiricalBernsteinCS": "confseq", "bounds_path": "confseq",
          "FeedbackResult": "feedback", "PerformanceComponent": "component", "Tally": "realised"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
