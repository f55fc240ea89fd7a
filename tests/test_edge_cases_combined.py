"""Tests for guarded_serving.edge_cases.combined: the default detector catches realistic corruptions."""

import numpy as np
import pytest

from guarded_serving.edge_cases import CombinedDetector, build_profile
from tests._edge_data import corrupt, shuttle


@pytest.fixture(scope="module")
def shuttle_profile():
    X, y = shuttle()
    normal = X[y == 0]
    idx = np.random.default_rng(0).permutation(len(normal))
    return build_profile(normal[idx[:20000]], calibration_fraction=0.3), normal[idx[20000:]]


def test_fit_matches_shape():
    """CombinedDetector.fit returns self and exposes its fitted parts."""
    X = np.random.default_rng(0).normal(size=(500, 4))
    d = CombinedDetector(parts=("tail", "mahalanobis", "knn"))
    assert d.fit(X) is d and set(d.detectors_) == {"tail", "mahalanobis", "knn"}
    assert d.outlyingness(X[:3]).shape == (3,)


def test_rejects_unknown_parts():
    """An unknown part name is a clear error."""
    with pytest.raises(ValueError, match="parts"):
        CombinedDetector(parts=("forest",)).fit(np.zeros((10, 2)))


@pytest.mark.parametrize("kind,least", [("unit_x1000", 0.7), ("sign_flip", 0.5), ("swap", 0.5),
                                        ("missing", 0.99), ("stuck", 0.4)])
def test_corruptions_are_flagged(shuttle_profile, kind, least):
    """Each realistic corruption of held-out Shuttle rows is flagged far above the 1% false-positive rate."""
    prof, held_out = shuttle_profile
    d, c = prof.detector(), prof.calibrator()
    bad = corrupt(held_out[:3000], kind, np.random.default_rng(1))
    assert (c.p_values(d.outlyingness(bad)) <= 0.01).mean() >= least


def test_unit_error_on_breast_cancer_row_is_flagged():
    """A x1000 unit error on mean_area of one breast-cancer row is flagged at 1%."""
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    prof = build_profile(X[:450], calibration_fraction=0.3)
    row = X[450:451].copy()
    row[0, 3] *= 1000
    assert prof.calibrator().p_values(prof.detector().outlyingness(row))[0] <= 0.01


def test_tail_part_counts_only_rare_values():
    """The default's tail part has threshold log(100), in a fitted detector and in one rebuilt from a profile."""
    X = np.random.default_rng(0).normal(size=(3000, 5))
    assert CombinedDetector().fit(X).detectors_["tail"].threshold == pytest.approx(np.log(100))
    prof = build_profile(X)
    assert prof.detector().detectors_["tail"].threshold == pytest.approx(np.log(100))
    assert prof.detector("tail").threshold == 0.0


def test_calibration_scores_match_the_rebuilt_detector():
    """The stored combined calibration scores are the rebuilt default detector's scores (same standardisation)."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(4000, 6))
    prof = build_profile(X, calibration_fraction=0.25)
    p = prof.calibrator().p_values(prof.detector().outlyingness(rng.normal(size=(4000, 6))))
    assert 0.003 <= (p <= 0.01).mean() <= 0.02


def test_explicit_calibration_rows_calibrate_the_combination_only():
    """fit(X, calibration=C) fits the parts and their nulls on X alone; C only calibrates the combination."""
    rng = np.random.default_rng(5)
    X, C = rng.normal(size=(800, 4)), rng.normal(size=(200, 4))
    d = CombinedDetector().fit(X, calibration=C)
    assert d.part_calibration_.shape == (200, 2) and d.calibration_scores_.shape == (200,)
    assert d.detectors_["mahalanobis"].location_ == pytest.approx(X.mean(axis=0))
    np.testing.assert_array_equal(d.calibration_scores_, d.evidence(d.part_calibration_).max(axis=1))
    other = CombinedDetector().fit(X, calibration=rng.normal(size=(50, 4)) * 3)
    for name in d.parts:  # the nulls do not depend on the calibration rows
        np.testing.assert_array_equal(d.nulls_[name].knots(), other.nulls_[name].knots())


def test_null_evidence_is_continuous_and_does_not_saturate():
    """A part's evidence grows with its score, also far past every fitting and calibration row."""
    from guarded_serving.edge_cases.combined import NullTail

    null = NullTail.from_scores(np.random.default_rng(0).chisquare(4, size=1000))
    s = np.linspace(0, 200, 2001)
    e = null.evidence(s)
    assert (np.diff(e) >= 0).all() and e[0] == 0.0
    assert null.evidence(np.array([60.0]))[0] < null.evidence(np.array([80.0]))[0] < null.evidence(
        np.array([1e4]))[0]
    assert [null.evidence_one(float(v)) for v in s[::50]] == e[::50].tolist()
    assert null.evidence(np.array([np.inf]))[0] == np.inf


@pytest.mark.parametrize("parts", [("tail", "mahalanobis"), ("tail", "mahalanobis", "knn"), ("mahalanobis", "knn"),
                                   ("mahalanobis", "copula")])
def test_clean_flag_rate_is_the_configured_rate(parts):
    """Any combination keeps the conformal guarantee: over fresh calibration sets, clean rows are flagged at
    the configured rate (exactly floor(a (n + 1)) / (n + 1) in expectation)."""
    from guarded_serving.edge_cases import ConformalCalibrator

    rng = np.random.default_rng(9)
    d = CombinedDetector(parts=parts).fit(rng.gamma(2.0, size=(1000, 5)), calibration=rng.gamma(2.0, size=(50, 5)))
    flags = np.zeros(2)
    draws, n_cal, n_test = 40, 199, 1000
    for _ in range(draws):
        c = ConformalCalibrator(d.outlyingness(rng.gamma(2.0, size=(n_cal, 5))))
        p = c.p_values(d.outlyingness(rng.gamma(2.0, size=(n_test, 5))))
        flags += [(p <= 0.01).mean(), (p <= 0.05).mean()]
    for a, rate in zip((0.01, 0.05), flags / draws):
        expected = np.floor(a * (n_cal + 1)) / (n_cal + 1)
        # spread of the mean: calibration sets (Beta) and test rows
        se = np.sqrt(a * (1 - a) * (1 / (n_cal + 2) + 1 / n_test) / draws)
        assert abs(rate - expected) <= 4 * se


def test_part_p_values_are_each_parts_conformal_p_value():
    """part_p_values gives each part's own conformal p-value against its calibration scores."""
    from guarded_serving.edge_cases import ConformalCalibrator

    rng = np.random.default_rng(6)
    X, C, T = rng.normal(size=(800, 4)), rng.normal(size=(200, 4)), rng.normal(size=(50, 4))
    d = CombinedDetector().fit(X, calibration=C)
    pp = d.part_p_values(T)
    for k, name in enumerate(d.parts):
        expected = ConformalCalibrator(d.part_calibration_[:, k]).p_values(d.detectors_[name].outlyingness(T))
        np.testing.assert_allclose(pp[:, k], expected)


def test_parse_parts():
    """Combination names: 'combined', parts joined by '+', nothing else."""
    from guarded_serving.edge_cases.combined import parse_parts

    assert parse_parts("combined") == ("tail", "mahalanobis")
    assert parse_parts("tail+knn") == ("tail", "knn")
    assert parse_parts("tail") is None and parse_parts("tail+tail") is None and parse_parts("tail+forest") is None


def test_outlyingness_is_the_largest_part_evidence():
    """outlyingness equals the largest of the parts' null evidence, for rows inside and past the calibration rows,
    on the batch, small-batch and single-row paths."""
    rng = np.random.default_rng(7)
    X, C = rng.normal(size=(800, 4)), rng.normal(size=(200, 4))
    d = CombinedDetector(parts=("tail", "mahalanobis", "knn")).fit(X, calibration=C)
    T = rng.normal(size=(300, 4))
    T[::7, 0] = 9.0
    T[::11, 1] = -30.0
    np.testing.assert_allclose(d.outlyingness(T), d.evidence(d.part_scores(T)).max(axis=1))
    np.testing.assert_allclose(d.outlyingness_small(T[:50]), d.outlyingness(T[:50]))
    for i in (0, 7, 11, 12):
        assert d.outlyingness_one(T[i:i + 1]) == d.outlyingness(T[i:i + 1])[0]
