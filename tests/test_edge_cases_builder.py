"""Tests for guarded_serving.edge_cases.builder: streaming build and calibrated flag rates."""

import numpy as np
import pytest

from guarded_serving.edge_cases import ProfileBuilder, build_profile
from guarded_serving.errors import ConfigError

from tests._edge_data import shuttle


def _flag_rate(prof, X, alpha=0.01):
    return float((prof.calibrator().p_values(prof.detector().outlyingness(X)) <= alpha).mean())


class TestCalibratedFlagRate:
    def test_shuttle_held_out(self):
        """On held-out in-distribution Shuttle rows the flag rate is close to the 1% target."""
        X, y = shuttle()
        normal = X[y == 0]
        idx = np.random.default_rng(0).permutation(len(normal))
        prof = build_profile(normal[idx[:25000]], calibration_fraction=0.3)
        assert 0.004 <= _flag_rate(prof, normal[idx[25000:]]) <= 0.016

    def test_gaussian_with_categories_and_missing(self):
        """With a categorical column and missing values the held-out flag rate stays near 1%."""
        rng = np.random.default_rng(1)
        n = 60000
        X = np.c_[rng.normal(size=(n, 5)) @ rng.normal(size=(5, 5)), rng.choice(4, n, p=[.4, .3, .2, .1])]
        X[rng.random(n) < 0.05, 2] = np.nan
        prof = build_profile(X[:30000], categorical=[5], calibration_fraction=0.3)
        assert 0.005 <= _flag_rate(prof, X[30000:]) <= 0.015

    def test_digits_held_out(self):
        """On held-out digits (classes 0-4) the flag rate is at most the target plus sampling noise."""
        from sklearn.datasets import load_digits

        d = load_digits()
        X = d.data[d.target < 5]
        idx = np.random.default_rng(2).permutation(len(X))
        prof = build_profile(X[idx[:600]], calibration_fraction=0.3)
        assert _flag_rate(prof, X[idx[600:]]) <= 0.035


class TestStreaming:
    def test_chunked_equals_exact_statistics(self):
        """Chunked streaming gives the exact mean, min, max and missing rate of the fitting rows."""
        rng = np.random.default_rng(3)
        X = rng.normal(size=(20000, 4))
        X[::7, 1] = np.nan
        b = ProfileBuilder(4, calibration_fraction=0.2, seed=0)
        for i in range(0, len(X), 3000):
            b.update(X[i:i + 3000])
        assert b.n_rows + b._cal.rows.shape[0] == len(X)
        prof = b.finish()
        assert prof.arrays["missing_rate"][1] == pytest.approx(1 / 7, abs=0.01)
        assert prof.arrays["minimum"][0] >= X[:, 0].min() and prof.arrays["maximum"][0] <= X[:, 0].max()

    def test_memory_is_bounded_by_sample_sizes(self):
        """However many rows stream in, the kept samples never exceed their sizes."""
        b = ProfileBuilder(3, sample_size=1000, calibration_size=300, reference_size=200)
        rng = np.random.default_rng(4)
        for _ in range(20):
            b.update(rng.normal(size=(10000, 3)))
        assert len(b._fit.rows) == 1000 and len(b._cal.rows) == 300
        assert len(b.finish().reference) == 200

    def test_predictions_follow_their_rows(self):
        """Reference predictions are the predictions of exactly the reference rows."""
        X = np.random.default_rng(5).normal(size=(3000, 2))
        prof = build_profile(X, predictions=X[:, 0] * 2, chunk_rows=700)
        np.testing.assert_allclose(prof.reference_predictions, prof.reference[:, 0] * 2)

    def test_bad_input_is_clear(self):
        """Infinite values, wrong widths and bad categorical indices are clear errors."""
        b = ProfileBuilder(2)
        with pytest.raises(ConfigError, match="infinite"):
            b.update(np.array([[1.0, np.inf]]))
        with pytest.raises(ConfigError, match="2 features"):
            b.update(np.zeros((3, 5)))
        with pytest.raises(ConfigError, match="categorical"):
            ProfileBuilder(2, categorical=[4])
