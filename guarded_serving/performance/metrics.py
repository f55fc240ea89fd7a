"""The metrics an expectation may name, and which way each is better."""

from __future__ import annotations

import re

__all__ = ["METRICS", "is_metric", "metric_direction"]

#: Metrics an expectation may name: higher is better for accuracy and recall, lower for errors.
METRICS = ("accuracy", "recall:<class>", "mae", "rmse")
_METRIC = re.compile(r"^(accuracy|mae|rmse|recall:-?\d+)$")


def is_metric(name: object) -> bool:
    return isinstance(name, str) and bool(_METRIC.match(name))


def metric_direction(metric: str) -> str:
    """``"at_least"`` for accuracy and recall, ``"at_most"`` for errors."""
    return "at_most" if metric in ("mae", "rmse") else "at_least"
