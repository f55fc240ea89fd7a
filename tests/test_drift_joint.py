"""JointShiftTest and the window family's joint row: correlation changes with fixed marginals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from guarded_serving.drift.joint import JointShiftTest
from guarded_serving.drift.windows import WindowTest


def _corr_rows(rng, n, rho, d=2):
    """d N(0,1) features; the first two correlated at rho, the others independent."""
    Z = rng.normal(size=(n, d))
    Z[:, 1] = rho * Z[:, 0] + np.sqrt(1 - rho * rho) * Z[:, 1]
    return Z


class TestJointShiftTest:
    @pytest.mark.parametrize("rho0,rho1", [(0.8, 0.0), (0.0, 0.8)])
    @pytest.mark.parametrize("d", [2, 5])
    def test_correlation_change_is_significant_both_ways(self, rho0, rho1, d):
        """0.8 -> 0 and 0 -> 0.8 with N(0,1) marginals: p <= 0.01 on 1,000 rows, the pair named."""
        rng = np.random.default_rng(0)
        t = JointShiftTest().fit(_corr_rows(rng, 2000, rho0, d))
        r = t.test(_corr_rows(rng, 1000, rho1, d))
        assert r.p_value <= 0.01 and r.effect > 0.5
        assert set(r.detail["pair"].split("~")) == {"x0", "x1"}

    def test_permutation_p_values_are_uniform_over_draws(self):
        """On clean data (fresh reference and window each time) the p-value is uniform: exact permutation test."""
        rng = np.random.default_rng(1)
        p = [JointShiftTest(n_permutations=49, random_state=i).fit(_corr_rows(rng, 60, 0.5, 3))
             .test(_corr_rows(rng, 60, 0.5, 3)).p_value for i in range(300)]
        # discrete uniform on {1/50, ..., 1}: compare with its own CDF
        assert stats.kstest(np.array(p) - 0.01, "uniform").pvalue > 1e-3
        assert np.mean(np.array(p) <= 0.1) <= 0.1 + 3 * np.sqrt(0.1 * 0.9 / 300)

    def test_sequential_permutations_stop_early_only_far_from_the_level(self):
        """Besag-Clifford: clean windows stop at the 10th exceedance (far fewer than 199 permutations, p = 10 / L),
        a shifted window gets all 199 and p = 1/200; the early-stopped p-values stay valid at 0.05 and 0.2."""
        rng = np.random.default_rng(3)
        used, p = [], []
        for i in range(200):
            t = JointShiftTest(random_state=i).fit(_corr_rows(rng, 200, 0.5, 3))
            r = t.test(_corr_rows(rng, 200, 0.5, 3))
            used.append(t.permutations_)
            p.append(r.p_value)
            assert r.detail["permutations"] == t.permutations_
        p = np.array(p)
        for u in (0.05, 0.2):
            assert np.mean(p <= u) <= u + 3 * np.sqrt(u * (1 - u) / 200)
        assert np.median(used) < 60
        t = JointShiftTest().fit(_corr_rows(rng, 1000, 0.8))
        r = t.test(_corr_rows(rng, 1000, 0.0))
        assert t.permutations_ == 199 and r.p_value == pytest.approx(1 / 200)
        assert JointShiftTest(early_stop=0).fit(_corr_rows(rng, 100, 0.5)).test(_corr_rows(rng, 100, 0.5)).detail[
            "permutations"] == 199

    def test_wrong_width_is_an_error(self):
        """A window with the wrong number of features raises naming the shape."""
        t = JointShiftTest().fit(np.random.default_rng(2).normal(size=(50, 3)))
        with pytest.raises(ValueError, match=r"\(n, 3\)"):
            t.test(np.zeros((5, 2)))


class TestWindowFamily:
    @pytest.mark.parametrize("rho0,rho1", [(0.8, 0.0), (0.0, 0.8)])
    def test_joint_row_alarms_where_features_cannot(self, rho0, rho1):
        """Within 2,000 rows the '(joint)' row alarms at the window level; no single feature does."""
        rng = np.random.default_rng(3)
        t = WindowTest(joint=True, feature_names=["a", "b", "c"]).fit(_corr_rows(rng, 2000, rho0, 3))
        rep = t.test(_corr_rows(rng, 2000, rho1, 3))
        assert [f.feature for f in rep.drifted] == ["(joint)"]
        j = rep.drifted[0]
        assert j.kind == "joint" and j.p_value <= 0.01 and j.detail["pair"] in ("a~b", "b~a")

    def test_clean_windows_stay_quiet(self):
        """Twelve clean 2,000-row windows (fresh reference each) raise no joint or feature alarm."""
        rng = np.random.default_rng(4)
        n = 0
        for _ in range(12):
            t = WindowTest(joint=True).fit(_corr_rows(rng, 2000, 0.5, 4))
            n += len(t.test(_corr_rows(rng, 2000, 0.5, 4)).drifted)
        assert n == 0

    def test_small_correlation_change_is_reported_but_gated(self):
        """A correlation change below min_effect may be significant but does not alarm."""
        rng = np.random.default_rng(5)
        t = WindowTest(joint=True, min_effect=0.15).fit(_corr_rows(rng, 2000, 0.0, 2))
        j = t.test(_corr_rows(rng, 2000, 0.08, 2)).features[-1]
        assert j.feature == "(joint)" and j.effect < 0.15 and not j.drifted

    def test_joint_off_by_default_and_needs_two_numeric_features(self):
        """No joint row unless asked for, nor with a single numeric feature."""
        rng = np.random.default_rng(6)
        X = _corr_rows(rng, 500, 0.0, 2)
        assert all(f.kind != "joint" for f in WindowTest().fit(X).test(X).features)
        X[:, 1] = rng.integers(0, 3, 500)
        assert all(f.kind != "joint" for f in WindowTest(joint=True, categorical=[1]).fit(X).test(X).features)
