"""Tests for guarded_serving.detectors.tail."""

import numpy as np
import pytest

from guarded_serving.detectors.base import NotFittedError
from guarded_serving.detectors.tail import TailDetector


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(4000, 6))


class TestShape:
    def test_fit_returns_self_and_learns_trailing_underscore_attributes(self, X):
        """fit returns the detector and sets n_features_in_, min_, max_, quantiles_."""
        d = TailDetector()
        assert d.fit(X) is d
        assert d.n_features_in_ == 6 and d.min_.shape == (6,) and d.quantiles_.shape[0] == 6

    def test_score_layers(self, X):
        """score_samples is -outlyingness, decision_function subtracts offset_, predict gives +1/-1."""
        d = TailDetector().fit(X)
        d._set_offset(d.outlyingness(X))
        s = d.score_samples(X[:10])
        np.testing.assert_allclose(s, -d.outlyingness(X[:10]))
        assert set(np.unique(d.predict(X))) <= {-1, 1}

    def test_unfitted_and_wrong_width_are_clear_errors(self, X):
        """Scoring before fit, or with the wrong feature count, raises a clear error."""
        with pytest.raises(NotFittedError, match="fit"):
            TailDetector().score_samples(X)
        with pytest.raises(ValueError, match="6"):
            TailDetector().fit(X).score_samples(X[:, :3])


class TestScores:
    def test_fast_path_equals_contributions(self, X):
        """The vectorised fast path gives the same score as summing per-feature contributions."""
        d = TailDetector().fit(X)
        np.testing.assert_allclose(d.outlyingness(X[:50]), d.contributions(X[:50]).sum(axis=1))
        np.testing.assert_allclose(d.outlyingness(X[:1]), d.contributions(X[:1]).sum(axis=1))

    def test_training_extremes_are_in_range(self, X):
        """A row at the training minimum is scored by the grid, not as out of range."""
        d = TailDetector().fit(X)
        c = d.contributions(X.min(axis=0, keepdims=True))
        assert (c <= d.floor_score_ + 1e-9).all()

    def test_further_out_scores_higher(self, X):
        """A value 1000x outside the range scores above one just outside it."""
        d = TailDetector().fit(X)
        a, b = X[:1].copy(), X[:1].copy()
        a[0, 2] = X[:, 2].max() + 0.01
        b[0, 2] = X[:, 2].max() * 1000
        assert d.outlyingness(b)[0] > d.outlyingness(a)[0] > d.outlyingness(X[:1])[0] - 50

    def test_categorical_frequency_and_unseen(self):
        """A categorical column scores by frequency; an unseen code gets the floor."""
        rng = np.random.default_rng(1)
        X = np.c_[rng.normal(size=3000), rng.choice([0, 1, 2], 3000, p=[0.9, 0.09, 0.01])]
        d = TailDetector(categorical=[1]).fit(X)
        rows = np.array([[0.0, 0.0], [0.0, 2.0], [0.0, 7.0]])
        c = d.contributions(rows)[:, 1]
        assert c[0] < c[1] < c[2] == pytest.approx(d.floor_score_)

    def test_missing_scored_by_missing_rate(self):
        """NaN costs little where training often had it missing, and is infinitely strange where it never was."""
        rng = np.random.default_rng(2)
        X = rng.normal(size=(2000, 2))
        X[::3, 0] = np.nan
        d = TailDetector().fit(X)
        c = d.contributions(np.array([[np.nan, np.nan]]))[0]
        assert c[0] == pytest.approx(-np.log(1 / 3), rel=0.02)
        assert c[1] == np.inf
