"""Distribution shift and train-serving skew.

- :mod:`.windows` -- per-feature windowed tests (KS / chi-squared, PSI, Wasserstein, BH).
- :mod:`.joint` -- the window's multivariate test (MMD with random features, permutation p-value).
- :mod:`.predictions` -- the same on the model's outputs.
- :mod:`.sequential` -- anytime-valid conformal test martingales (online ranks of the rows; or given p-values).
- :mod:`.skew` -- startup train-serving skew, and an offline preprocessing comparison.
- :mod:`.component` -- :class:`DriftComponent`, off the request path, pooled through a store.
"""

from .component import DriftComponent
from .joint import JointShiftTest
from .predictions import PredictionDrift
from .sequential import ConformalMartingale, OnlineConformalMartingale, conformal_p_values
from .skew import SkewCheck, compare_preprocessing
from .windows import WindowTest, benjamini_hochberg

__all__ = ["ConformalMartingale", "DriftComponent", "JointShiftTest", "OnlineConformalMartingale", "PredictionDrift",
           "SkewCheck", "WindowTest", "benjamini_hochberg", "compare_preprocessing", "conformal_p_values"]
