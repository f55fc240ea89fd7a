"""Tests for guarded_serving.edge_cases.conformal."""

import numpy as np
import pytest

from guarded_serving.edge_cases.conformal import ConformalCalibrator


def test_p_value_formula_and_threshold():
    """p = (1 + #{cal >= s}) / (n + 1), and scores above threshold(alpha) are exactly those with p <= alpha."""
    c = ConformalCalibrator(np.arange(99.0))
    assert c.p_values(np.array([98.5]))[0] == pytest.approx(1 / 100)
    assert c.p_values(np.array([-1.0]))[0] == pytest.approx(1.0)
    s = np.linspace(-5, 110, 1000)
    np.testing.assert_array_equal(c.p_values(s) <= 0.05, s > c.threshold(0.05))


def test_uniform_on_exchangeable_data():
    """On data from the calibration distribution the flag rate matches alpha."""
    rng = np.random.default_rng(0)
    c = ConformalCalibrator(rng.normal(size=5000))
    rate = (c.p_values(rng.normal(size=50_000)) <= 0.01).mean()
    assert abs(rate - 0.01) < 0.003


def test_rejects_empty_or_non_finite():
    """Empty or non-finite calibration scores are a clear error."""
    with pytest.raises(ValueError, match="non-empty"):
        ConformalCalibrator([])
    with pytest.raises(ValueError, match="finite"):
        ConformalCalibrator([1.0, np.inf])
