"""Tests for guarded_serving.edge_cases.copula: Mahalanobis distance on per-feature normal scores."""

import numpy as np
import pytest

from guarded_serving import GuardConfig
from guarded_serving.edge_cases import (
    CombinedDetector,
    ConformalCalibrator,
    CopulaDetector,
    MahalanobisDetector,
    ProfileError,
    build_profile,
    load_profile,
)
from guarded_serving.edge_cases.base import NotFittedError
from guarded_serving.edge_cases.explain import explain_rows
from guarded_serving.errors import ConfigError


def _skewed(rng, n):
    """Three correlated features, one of them log-normal (long right tail, bunched near its minimum)."""
    a = rng.normal(size=n)
    b = 0.8 * a + 0.6 * rng.normal(size=n)
    return np.c_[a, b, np.exp(1.5 * rng.normal(size=n) + 0.5 * a)]


@pytest.fixture(scope="module")
def skewed():
    rng = np.random.default_rng(3)
    return _skewed(rng, 3000), _skewed(rng, 1000), _skewed(rng, 1000)


def test_scikit_learn_shape(skewed):
    """The constructor stores parameters, fit returns self, learned attributes end in '_'."""
    X, _, _ = skewed
    d = CopulaDetector(cells=256)
    assert d.get_params() == {"categorical": (), "levels": None, "cells": 256}
    with pytest.raises(NotFittedError):
        d.outlyingness(X[:2])
    assert d.fit(X) is d
    for name in ("n_features_in_", "columns_", "min_", "max_", "scale_", "table_", "location_", "covariance_",
                 "shrinkage_"):
        assert hasattr(d, name)
    assert d.table_.shape == (3, 257)
    with pytest.raises(ValueError, match="cells=1"):
        CopulaDetector(cells=1).fit(X)


def test_normal_scores_are_monotone_and_go_on_past_the_range(skewed):
    """Each feature maps to its normal score: the median near 0, increasing, and past the training range
    still increasing (a value 1000x the maximum lands far beyond one just past it)."""
    X, _, _ = skewed
    d = CopulaDetector().fit(X)
    grid = np.linspace(X[:, 2].min(), X[:, 2].max(), 500)
    rows = np.c_[np.zeros(500), np.zeros(500), grid]
    z = d.transform(rows)[:, 2]
    assert np.all(np.diff(z) >= 0) and z[-1] > 3 and z[0] < -3
    med = d.transform(np.median(X, axis=0)[None, :])[0]
    assert np.all(np.abs(med) < 0.1)
    hi = X[:, 2].max()
    just, far = d.transform(np.array([[0, 0, hi * 1.01], [0, 0, hi * 1000]]))[:, 2]
    assert z[-1] < just < far and far - just > 100


def test_invariant_to_monotone_rescaling(skewed):
    """Normal scores depend only on ranks: taking the log of a feature (in training and serving alike)
    leaves in-range rows' distances almost unchanged; the plain Mahalanobis distance changes."""
    X, test, _ = skewed
    logged = lambda A: np.c_[A[:, :2], np.log(A[:, 2])]
    inside = test[(test[:, 2] > X[:, 2].min()) & (test[:, 2] < X[:, 2].max())]
    a = CopulaDetector().fit(X).outlyingness(inside)
    b = CopulaDetector().fit(logged(X)).outlyingness(logged(inside))
    rel = np.abs(a - b) / (1 + a)
    assert np.median(rel) < 0.01 and rel.max() < 0.1  # the tables interpolate within cells
    m1 = MahalanobisDetector().fit(X).outlyingness(inside)
    m2 = MahalanobisDetector().fit(logged(X)).outlyingness(logged(inside))
    assert np.max(np.abs(m1 - m2) / (1 + m1)) > 0.5


@pytest.mark.parametrize("kind", ["stuck_min", "div1000"])
def test_finds_low_values_of_a_long_tailed_feature_that_mahalanobis_misses(skewed, kind):
    """A long-tailed feature stuck at its training minimum, or divided by 1000, lies inside the bulk for the
    plain Mahalanobis distance; on normal scores it is rare. At a 1% FPR calibrated on the same rows the
    copula detector flags most such rows; the Mahalanobis detector few."""
    X, cal, test = skewed
    bad = test.copy()
    bad[:, 2] = X[:, 2].min() if kind == "stuck_min" else bad[:, 2] / 1000
    rates = {}
    for name, det in (("copula", CopulaDetector()), ("mahalanobis", MahalanobisDetector())):
        det.fit(X)
        c = ConformalCalibrator(det.outlyingness(cal))
        rates[name] = float((c.p_values(det.outlyingness(bad)) <= 0.01).mean())
        assert (c.p_values(det.outlyingness(test)) <= 0.01).mean() < 0.03  # clean rows: about 1%
    assert rates["copula"] > 0.5 and rates["mahalanobis"] < 0.2, rates


def test_one_row_small_batch_and_batch_paths_agree(skewed):
    """The one-row and small-batch paths give the batch scores, for clean, out-of-range and missing values."""
    X, test, _ = skewed
    d = CopulaDetector().fit(X)
    rows = test[:6].copy()
    rows[1, 2] *= 1000
    rows[2, 0] = -50.0
    rows[3, 1] = np.nan
    batch = d.outlyingness(rows)
    np.testing.assert_allclose(d.outlyingness_small(rows), batch, rtol=1e-12)
    for i in range(len(rows)):
        assert d.outlyingness_one(rows[i:i + 1]) == pytest.approx(batch[i], rel=1e-12)


def test_missing_value_contributes_nothing_and_categorical_columns_are_left_out():
    """A missing value is scored as the mean normal score (it adds nothing); a categorical column never
    changes the distance."""
    rng = np.random.default_rng(5)
    X = np.c_[_skewed(rng, 2000), rng.integers(0, 4, 2000)]
    d = CopulaDetector(categorical=[3]).fit(X)
    assert list(d.columns_) == [0, 1, 2]
    row = X[:1].copy()
    other = row.copy()
    other[0, 3] = 99.0
    assert d.outlyingness(other)[0] == pytest.approx(d.outlyingness(row)[0])
    missing = row.copy()
    missing[0, 1] = np.nan
    imputed = d.transform(row)
    imputed[0, 1] = d.location_[1]
    diff = imputed[0] - d.location_
    w = diff @ d._mah.precision_factor_
    assert d.outlyingness(missing)[0] == pytest.approx(float(w @ w))


def test_column_missing_everywhere_and_constant_columns():
    """A column missing in every training row is left out (it scores nothing); a constant column's
    deviations are measured relative to its value, so they do not depend on its units."""
    rng = np.random.default_rng(6)
    X = np.c_[_skewed(rng, 2000), np.full(2000, np.nan), np.full(2000, 5.0)]
    d = CopulaDetector().fit(X)
    assert list(d.columns_) == [0, 1, 2, 4]
    row = X[:1].copy()
    other = row.copy()
    other[0, 3] = 1e6
    assert d.outlyingness(other)[0] == pytest.approx(d.outlyingness(row)[0])
    X1000 = X.copy()
    X1000[:, 4] *= 1000  # the same constant in other units
    d1000 = CopulaDetector().fit(X1000)
    off, off1000 = row.copy(), row.copy()
    off[0, 4], off1000[0, 4] = 6.0, 6000.0
    assert d.outlyingness(off)[0] == pytest.approx(d1000.outlyingness(off1000)[0], rel=1e-6)
    assert d.outlyingness(off)[0] > d.outlyingness(row)[0] + 10


def test_profile_serves_copula_and_its_combinations(tmp_path):
    """A built profile stores the copula part: it serves "copula" and combinations with it, the same after
    a save and load, calibrated on the profile's calibration rows."""
    rng = np.random.default_rng(1)
    X = _skewed(rng, 4000)
    prof = build_profile(X)
    path = tmp_path / "p.npz"
    prof.save(path)
    again = load_profile(path)
    test = _skewed(rng, 500)
    for name in ("copula", "mahalanobis+copula", "tail+copula"):
        a, b = prof.detector(name), again.detector(name)
        np.testing.assert_allclose(a.outlyingness(test), b.outlyingness(test), rtol=1e-12)
        p = again.calibrator(name).p_values(b.outlyingness(test))
        assert (p <= 0.05).mean() < 0.1
    assert isinstance(again.detector("mahalanobis+copula"), CombinedDetector)
    # the stored calibration scores are the detector's scores of training rows (the calibration rows come from X)
    scores = again.detector("copula").outlyingness(X)
    stored = again.arrays["cal_copula"]
    nearest = np.abs(stored[:, None] - scores[None, :]).min(axis=1)
    assert len(stored) > 500 and np.all(nearest <= 1e-9 * (1 + stored))


def test_profile_without_the_copula_part_says_rebuild(tmp_path):
    """A profile written before the copula part still serves every other detector; asking it for
    "copula" (alone or in a combination) is a ProfileError that says to rebuild it."""
    rng = np.random.default_rng(2)
    prof = build_profile(_skewed(rng, 1000))
    for key in ("copula_mean", "copula_covariance", "copula_shrinkage", "cal_copula", "null_copula"):
        del prof.arrays[key]
    prof.arrays["null_beta"] = prof.arrays["null_beta"][:3]
    path = tmp_path / "old.npz"
    prof.save(path)
    old = load_profile(path)
    rows = _skewed(rng, 5)
    for name in ("combined", "tail", "mahalanobis", "knn", "tail+mahalanobis+knn", "mahalanobis+knn"):
        p = old.calibrator(name).p_values(old.detector(name).outlyingness(rows))
        assert p.shape == (5,) and np.all((p > 0) & (p <= 1))
    for name in ("copula", "mahalanobis+copula"):
        with pytest.raises(ProfileError, match="rebuild"):
            old.detector(name)
        with pytest.raises(ProfileError, match="rebuild"):
            old.calibrator(name)


def test_config_accepts_copula_and_names_it_when_wrong():
    GuardConfig(name="m", edge_detector="copula")
    GuardConfig(name="m", edge_detector="mahalanobis+copula")
    with pytest.raises(ConfigError, match="'copula'"):
        GuardConfig(name="m", edge_detector="copul")


def test_explanation_of_a_copula_verdict_speaks_of_normal_scores(tmp_path):
    """A row the copula part drove is explained against its calibration rows, naming the features."""
    rng = np.random.default_rng(4)
    X = _skewed(rng, 3000)
    prof = build_profile(X, feature_names=["a", "b", "skewed"])
    row = X[:1].copy()
    row[0, 2] = X[:, 2].min()
    row[0, 0], row[0, 1] = 2.5, -2.5  # a and b usually move together
    (reasons,) = explain_rows(prof, row, np.array([0]), detector="copula")
    assert "normal scores" in reasons[0] and "calibration rows" in reasons[0]
    together = reasons[0].split("most unusual together: ")[1].split(", ")
    assert together[:2] in (["a", "b"], ["b", "a"]) or {"a", "b", "skewed"} == set(together), reasons[0]
