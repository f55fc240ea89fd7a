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
