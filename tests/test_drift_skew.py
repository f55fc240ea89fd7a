"""SkewCheck and compare_preprocessing: train-serving skew, named and classified."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving.drift.skew import SkewCheck, compare_preprocessing

NAMES = ["age", "income", "score", "height"]


def _train(rng, n=2000):
    X = rng.normal(size=(n, 4)) * [10, 1000, 1, 5] + [40, 5000, 0, 170]
    return X


class TestSkewCheck:
    def test_matching_serving_has_no_findings(self):
        """Serving rows from the training distribution produce no skew."""
        rng = np.random.default_rng(0)
        sk = SkewCheck(first_n=500, feature_names=NAMES).fit(_train(rng))
        findings, _ = sk.check(_train(rng, 500))
        assert findings == []

    @pytest.mark.parametrize("kind,feature", [("scale", "height"), ("offset", "age"), ("constant", "score"),
                                              ("missing", "income")])
    def test_names_the_feature_and_kind(self, kind, feature):
        """Each kind of skew is reported on the right feature with the right kind."""
        rng = np.random.default_rng(1)
        sk = SkewCheck(first_n=500, feature_names=NAMES).fit(_train(rng))
        S = _train(rng, 500)
        j = NAMES.index(feature)
        if kind == "scale":
            S[:, j] = S[:, j] / 100.0  # cm served as m
        elif kind == "offset":
            S[:, j] += 2 * 10
        elif kind == "constant":
            S[:, j] = 0.0
        else:
            S[::2, j] = np.nan
        findings, _ = sk.check(S)
        assert [(f.feature, f.kind) for f in findings] == [(feature, kind)]


class TestComparePreprocessing:
    def test_classifies_row_aligned_differences(self):
        """Same raw records: scale, offset, constant, missing and a scramble are told apart."""
        rng = np.random.default_rng(2)
        T = rng.normal(size=(300, 6))
        S = T.copy()
        S[:, 0] *= 2.54
        S[:, 1] += 3.0
        S[:, 2] = -1.0
        S[::3, 3] = np.nan
        S[:, 4] = rng.permutation(S[:, 4])
        got = {f.feature: f.kind for f in compare_preprocessing(S, T)}
        assert got == {"x0": "scale", "x1": "offset", "x2": "constant", "x3": "missing", "x4": "distribution"}

    def test_shape_mismatch_is_an_error(self):
        """Different shapes cannot be compared record by record."""
        with pytest.raises(ValueError, match="same"):
            compare_preprocessing(np.ones((3, 2)), np.ones((4, 2)))


def test_missing_rate_skew_is_tested_not_thresholded():
    """A feature missing in 30% of the first rows is missing-kind skew with its q-value from the window family."""
    rng = np.random.default_rng(4)
    sk = SkewCheck(first_n=500, feature_names=NAMES).fit(_train(rng))
    S = _train(rng, 500)
    S[rng.random(500) < 0.3, 0] = np.nan
    findings, _ = sk.check(S)
    assert [(f.feature, f.kind) for f in findings] == [(NAMES[0], "missing")]
    assert findings[0].p_value < 1e-6 and "in serving vs 0% in training" in findings[0].detail
