"""Feature preparation shared by training and serving.

It lives in a module of its own because the deployment manifest fingerprints
it (``services.features:prepare``: its source, bytecode and this file's hash),
so that serving with preprocessing that differs from training's is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def prepare(inputs: Any) -> np.ndarray:
    """Rows of the 30 breast-cancer features as a float64 matrix, columns in training order."""
    return np.asarray(inputs, dtype=np.float64)
