"""Edge cases: a reference profile from training data and per-request out-of-distribution verdicts.

- :class:`TailDetector`, :class:`MahalanobisDetector`, :class:`KNNDetector`,
  :class:`CopulaDetector`, :class:`CombinedDetector` -- scikit-learn-shaped detectors.
- :class:`ConformalCalibrator` -- scores to calibrated p-values.
- :class:`Profile`, :func:`load_profile`, :func:`build_profile` -- the profile file.
- :class:`EdgeCaseComponent` -- the guard component (``GuardConfig(profile=...)``).
"""

from .builder import ProfileBuilder, build_profile
from .combined import CombinedDetector
from .component import EdgeCaseComponent, RowVerdict, merge_rows
from .conformal import ConformalCalibrator
from .copula import CopulaDetector
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector, ledoit_wolf_shrinkage
from .profile import FORMAT, Profile, ProfileError, load_profile
from .tail import TailDetector

__all__ = [
    "FORMAT",
    "CombinedDetector",
    "ConformalCalibrator",
    "CopulaDetector",
    "EdgeCaseComponent",
    "KNNDetector",
    "MahalanobisDetector",
    "Profile",
    "ProfileBuilder",
    "ProfileError",
    "RowVerdict",
    "TailDetector",
    "build_profile",
    "ledoit_wolf_shrinkage",
    "load_profile",
    "merge_rows",
]
