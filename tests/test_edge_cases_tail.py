"""Tests for guarded_serving.edge_cases.tail."""

import numpy as np
import pytest

from guarded_serving.edge_cases.base import NotFittedError
from guarded_serving.edge_cases.tail import TailDetector


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


def _grid_scores(d, X):
    """The grid score by a search over each feature's distinct quantiles (no lookup table)."""
    c = d.contributions(X).copy()
    for j in range(X.shape[1]):
        qj = np.clip(d.quantiles_[j], d.min_[j], d.max_[j])
        vals, first = np.unique(qj, return_index=True)
        last = np.searchsorted(qj, vals, side="right") - 1
        tail = np.minimum(d.levels_[last], 1 - d.levels_[first])
        sc = -np.log(np.maximum(tail, 1 / (d.n_samples_fit_ + 1)))
        x = X[:, j]
        ok = (x >= d.min_[j]) & (x <= d.max_[j])
        c[ok, j] = sc[np.searchsorted(vals, x[ok], side="right") - 1]
    return c


class TestLookupTable:
    def test_discrete_features_score_exactly_like_the_grid(self):
        """Integer-valued features (values at least a cell apart) get exactly the grid score, ties included."""
        rng = np.random.default_rng(3)
        X = np.c_[rng.poisson(4, 5000), rng.integers(-300, 300, 5000), rng.binomial(16, 0.2, 5000)].astype(float)
        d = TailDetector().fit(X[:4000])
        np.testing.assert_allclose(d.contributions(X[4000:]), _grid_scores(d, X[4000:]))

    def test_continuous_features_within_one_grid_step(self, X):
        """On continuous data a value differs from the grid score by at most one step of the grid, rarely."""
        d = TailDetector().fit(X[:3000])
        diff = np.abs(d.contributions(X[3000:]) - _grid_scores(d, X[3000:]))
        assert diff.max() < np.log(2.5) and (diff < 1e-12).mean() > 0.9

    def test_batch_single_row_and_contributions_agree(self, X):
        """The blocked batch path, the single-row path and the contributions all give one score."""
        d = TailDetector().fit(X)
        rows = np.r_[X, X[:1000], X.max(axis=0, keepdims=True), X.min(axis=0, keepdims=True)]
        rows[7, 1] = np.nan
        rows[9, 2] = 1e6
        batch = d.outlyingness(rows)
        np.testing.assert_allclose(batch, d.contributions(rows).sum(axis=1))
        for i in (0, 7, 9, len(rows) - 2, len(rows) - 1):
            assert d.outlyingness_one(rows[i:i + 1]) == pytest.approx(batch[i])
        assert np.isinf(batch[7]) and batch[9] > d.floor_score_


class TestThreshold:
    def test_contributions_are_clipped_excess_over_threshold(self, X):
        """With a threshold t each feature contributes max(c - t, 0), out-of-range and missing values included."""
        rows = np.r_[X[:200], [[np.nan, 1e6, -1e6, 0, 0, 0]]]
        X2 = np.r_[X, [[np.nan] * 6]]
        plain = TailDetector().fit(X2).contributions(rows)
        t = np.log(100)
        d = TailDetector(threshold=t).fit(X2)
        np.testing.assert_allclose(d.contributions(rows), np.maximum(plain - t, 0))
        np.testing.assert_allclose(d.outlyingness(rows), np.maximum(plain - t, 0).sum(axis=1))

    def test_tail_probability_needs_no_threshold(self, X):
        """tail_probability refuses a thresholded detector (its contributions are no longer -log p)."""
        with pytest.raises(ValueError, match="threshold"):
            TailDetector(threshold=1.0).fit(X).tail_probability(X[:1])
