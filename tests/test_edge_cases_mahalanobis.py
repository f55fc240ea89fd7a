"""Tests for guarded_serving.edge_cases.mahalanobis."""

import numpy as np
import pytest

from guarded_serving.edge_cases.mahalanobis import MahalanobisDetector, ledoit_wolf_shrinkage


def test_shrinkage_matches_scikit_learn():
    """The NumPy Ledoit-Wolf intensity equals scikit-learn's on the same centred data."""
    from sklearn.covariance import ledoit_wolf_shrinkage as sk

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))
    Z = X - X.mean(axis=0)
    assert ledoit_wolf_shrinkage(Z) == pytest.approx(sk(Z, assume_centered=True))


def test_distance_catches_broken_correlation():
    """Swapping two strongly correlated features raises the distance even though each value is in range."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=5000)
    X = np.c_[z, 3 * z + 0.1 * rng.normal(size=5000), rng.normal(size=5000)]
    d = MahalanobisDetector().fit(X)
    row = X[:1].copy()
    row[0, :2] = [1.0, -3.0]
    assert d.outlyingness(row)[0] > np.quantile(d.outlyingness(X), 0.999)


def test_contributions_sum_to_distance_and_skip_categorical():
    """Per-feature contributions add up to the squared distance; categorical columns get 0."""
    rng = np.random.default_rng(2)
    X = np.c_[rng.normal(size=(500, 3)), rng.integers(0, 3, 500)]
    d = MahalanobisDetector(categorical=[3]).fit(X)
    c = d.contributions(X[:5])
    np.testing.assert_allclose(c.sum(axis=1), d.outlyingness(X[:5]))
    assert (c[:, 3] == 0).all()


def test_constant_feature_and_nan_do_not_break_it():
    """A constant column gives a finite model; NaN is imputed with the mean."""
    rng = np.random.default_rng(3)
    X = np.c_[rng.normal(size=(300, 2)), np.ones(300)]
    d = MahalanobisDetector().fit(X)
    out = d.outlyingness(np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.0, 0.0, 5.0]]))
    assert np.isfinite(out).all() and out[2] > out[0]
