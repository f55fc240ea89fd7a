"""Distribution shift and train-serving skew.

- :mod:`.windows` -- per-feature windowed tests (KS / chi-squared, PSI, Wasserstein, BH).
- :mod:`.joint` -- the window's multivariate test (MMD with random features, permutation p-value).
- :mod:`.predictions` -- the same on the model's outputs.
- :mod:`.sequential` -- anytime-valid conformal test martingales (online ranks of the rows; or given p-values).
- :mod:`.skew` -- startup train-serving skew, and an offline preprocessing comparison.
- :mod:`.component` -- :class:`DriftComponent`, off the request path, pooled through a store.
- :mod:`.capability` -- the ``drift`` configuration section and its factory.

Names are imported on first use (scipy.stats takes about half a second to import),
so building a configuration does not pay for drift statistics it does not run.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ConformalMartingale", "DriftComponent", "JointShiftTest", "OnlineConformalMartingale", "PredictionDrift",
           "SkewCheck", "WindowTest", "benjamini_hochberg", "compare_preprocessing", "conformal_p_values"]

_WHERE = {"ConformalMartingale": "sequential", "OnlineConformalMartingale": "sequential",
          "conformal_p_values": "sequential", "DriftComponent": "component", "JointShiftTest": "joint",
          "PredictionDrift": "predictions", "SkewCheck": "skew", "compare_preprocessing": "skew",
          "WindowTest": "windows", "benjamini_hochberg": "windows"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
