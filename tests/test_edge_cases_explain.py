"""Tests for guarded_serving.edge_cases.explain."""

import numpy as np
import pytest

from guarded_serving.edge_cases import build_profile
from guarded_serving.edge_cases.explain import explain_rows


@pytest.fixture(scope="module")
def prof():
    rng = np.random.default_rng(0)
    n = 5000
    z = rng.normal(size=n)
    X = np.c_[np.abs(rng.normal(5, 1, n)), z, 2 * z + 0.05 * rng.normal(size=n), rng.choice(3, n), rng.normal(size=n)]
    X[rng.random(n) < 0.002, 4] = np.nan
    return build_profile(X, feature_names=["petal_length", "x", "y", "colour", "income"], categorical=[3])


def test_out_of_range_names_feature_value_and_max(prof):
    """A value above the range says so, with the training max and the ratio."""
    row = np.array([[prof.arrays["maximum"][0] * 10, 0, 0, 1, 0]])
    [reasons] = explain_rows(prof, row, np.array([0]))
    assert "petal_length=" in reasons[0] and "above every training value (max" in reasons[0] and "x the maximum" in reasons[0]


def test_negative_where_positive(prof):
    """A sign flip on a positive feature is explained as a negative value."""
    [reasons] = explain_rows(prof, np.array([[-5.0, 0, 0, 1, 0]]), np.array([0]))
    assert "below every training value" in reasons[0] and "negative" in reasons[0]


def test_unseen_category_and_rare_missing(prof):
    """An unseen code lists the seen ones; a rarely missing feature says how rare."""
    [reasons] = explain_rows(prof, np.array([[5.0, 0, 0, 7, np.nan]]), np.array([0]))
    text = " ".join(reasons)
    assert "colour=7 is a category never seen in training (seen: 0, 1, 2)" in text
    assert "income is missing, which happened in only" in text


def test_combination(prof):
    """Values each in range but inconsistent together are explained by the Mahalanobis distance."""
    [reasons] = explain_rows(prof, np.array([[5.0, 1.5, -3.0, 1, 0]]), np.array([0]))
    assert "combination is unusual" in reasons[0] and ("x" in reasons[0] or "y" in reasons[0])
