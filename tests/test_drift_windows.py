"""WindowTest: per-feature KS / chi-squared with PSI, Wasserstein and BH."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from guarded_serving.drift.windows import WindowTest, benjamini_hochberg


def _ref(rng, n=3000):
    X = rng.normal(size=(n, 4))
    X[:, 3] = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
    return X


class TestStatistics:
    def test_ks_matches_scipy(self):
        """The vectorised KS statistic and p-value equal scipy's, with ties and NaN."""
        rng = np.random.default_rng(0)
        R = rng.normal(size=(800, 3))
        R[:, 2] = rng.integers(0, 5, 800)
        W = rng.normal(size=(600, 3)) + [0.2, 0.0, 0.0]
        W[:, 2] = rng.integers(0, 5, 600)
        W[:7, 1] = np.nan
        rep = WindowTest().fit(R).test(W)
        assert [f.feature for f in rep.features] == ["x0", "x1", "x2", "x1 (missing rate)"]
        assert rep.features[3].detail == {"reference_missing": 0.0, "window_missing": round(7 / 600, 4)}
        for j, f in enumerate(rep.features[:3]):
            w = W[:, j][~np.isnan(W[:, j])]
            ref = stats.ks_2samp(R[:, j], w, method="asymp")
            assert f.statistic == pytest.approx(ref.statistic, abs=1e-12)
            assert f.p_value == pytest.approx(ref.pvalue, rel=0.1, abs=1e-3)
            assert f.effect == pytest.approx(stats.wasserstein_distance(R[:, j], w) / R[:, j].std(), rel=0.05, abs=0.01)

    @pytest.mark.parametrize("seed", range(6))
    def test_ks_and_wasserstein_match_scipy_on_awkward_columns(self, seed):
        """Exact KS statistic and Wasserstein-1 equal scipy's for ties, rounding, constants, NaN and out-of-range windows."""
        rng = np.random.default_rng(100 + seed)
        nr, nw = int(rng.integers(50, 1500)), int(rng.integers(1, 3000))
        R = np.column_stack([rng.normal(size=nr), np.round(rng.normal(size=nr), 1), rng.integers(0, 3, nr),
                             np.full(nr, 2.5), rng.exponential(size=nr) * 1e6, rng.normal(size=nr)])
        W = np.column_stack([rng.normal(0.3, 2.0, nw), np.round(rng.normal(size=nw), 2), rng.integers(-1, 5, nw),
                             rng.choice([2.5, 3.0], nw), rng.exponential(size=nw) * 1e6 + 5e5,
                             rng.normal(size=nw) + 10.0])
        W[rng.random(W.shape) < 0.05] = np.nan
        rep = WindowTest(max_reference=nr).fit(R).test(W)
        assert all(f.kind == "missing" for f in rep.features[R.shape[1]:])
        for j, f in enumerate(rep.features[:R.shape[1]]):
            w = W[:, j][~np.isnan(W[:, j])]
            assert f.n == w.size
            if w.size == 0:
                continue
            assert f.statistic == pytest.approx(stats.ks_2samp(R[:, j], w).statistic, abs=1e-12)
            sd = R[:, j].std() or 1.0
            assert f.effect == pytest.approx(stats.wasserstein_distance(R[:, j], w) / sd, rel=0.05, abs=2e-3)

    def test_benjamini_hochberg(self):
        """BH q-values match the textbook step-up values."""
        q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5, np.nan]))
        assert np.allclose(q[:4], [0.04, 0.16 / 3, 0.16 / 3, 0.5])
        assert np.isnan(q[4])


class TestVerdicts:
    def test_stationary_windows_stay_quiet(self):
        """Thirty stationary windows of 2000 rows raise no alarm."""
        rng = np.random.default_rng(1)
        t = WindowTest(categorical=[3]).fit(_ref(rng))
        assert sum(len(t.test(_ref(rng, 2000)).drifted) for _ in range(30)) == 0

    @pytest.mark.parametrize("shift", ["mean", "variance", "category", "unseen"])
    def test_each_shift_is_caught(self, shift):
        """A mean shift, a variance change, a doubled category and unseen categories are named."""
        rng = np.random.default_rng(2)
        t = WindowTest(categorical=[3], feature_names=["a", "b", "c", "cat"]).fit(_ref(rng))
        W = _ref(rng, 1500)
        if shift == "mean":
            W[:, 0] += 0.5
            want = "a"
        elif shift == "variance":
            W[:, 1] *= 1.6
            want = "b"
        elif shift == "category":
            W[:, 3] = rng.choice(4, size=1500, p=[0.2, 0.3, 0.2, 0.3])
            want = "cat"
        else:
            W[:300, 3] = 7.0
            want = "cat"
        rep = t.test(W)
        assert [f.feature for f in rep.drifted] == [want]
        if shift == "unseen":
            assert rep.drifted[0].detail["unseen"] == 300

    def test_small_windows_never_alarm(self):
        """A window below min_samples is reported but never alarms, however shifted."""
        rng = np.random.default_rng(3)
        t = WindowTest(min_samples=200).fit(_ref(rng))
        W = _ref(rng, 150)
        W[:, 0] += 5
        rep = t.test(W)
        assert not rep.judged and rep.drifted == () and rep.features[0].p_value < 1e-10

    def test_negligible_shift_in_huge_window_does_not_alarm(self):
        """A significant but tiny shift stays below min_effect."""
        rng = np.random.default_rng(4)
        t = WindowTest(min_effect=0.1, max_reference=20000).fit(rng.normal(size=(20000, 1)))
        f = t.test(rng.normal(size=(100000, 1)) + 0.05).features[0]
        assert f.q_value < 0.01 and f.effect < 0.1 and not f.drifted

    def test_recent_rows_catch_a_change_the_full_window_dilutes(self):
        """With nested recent windows a shift in the last 300 of 2000 rows is named; the full window alone misses it."""
        rng = np.random.default_rng(5)
        R = rng.normal(size=(5000, 2))
        W = rng.normal(size=(2000, 2))
        W[-300:, 0] += 0.6
        assert WindowTest(max_reference=5000).fit(R).test(W).drifted == ()
        rep = WindowTest(max_reference=5000, recent=(250, 500, 1000)).fit(R).test(W)
        assert [f.feature for f in rep.drifted] == ["x0"] and rep.drifted[0].detail["rows"] in (250, 500)

    def test_recent_rows_keep_stationary_windows_quiet(self):
        """Nested recent windows raise no alarm on thirty stationary windows."""
        rng = np.random.default_rng(6)
        t = WindowTest(categorical=[3], recent=(200, 400, 800)).fit(_ref(rng))
        assert sum(len(t.test(_ref(rng, 2000)).drifted) for _ in range(30)) == 0

    def test_window_of_wrong_width_is_an_error(self):
        """A window with the wrong number of features raises naming the shape."""
        t = WindowTest().fit(np.zeros((10, 3)) + np.arange(10)[:, None])
        with pytest.raises(ValueError, match=r"\(n, 3\)"):
            t.test(np.zeros((5, 2)))


class TestMissingRates:
    def test_feature_going_missing_is_drift_and_values_use_the_rest(self):
        """20% NaN on one feature: its missing-rate row drifts (same BH family), its value test stays quiet."""
        rng = np.random.default_rng(7)
        R = rng.normal(size=(2000, 3))
        W = rng.normal(size=(1000, 3))
        W[rng.random(1000) < 0.2, 1] = np.nan
        rep = WindowTest(joint=True).fit(R).test(W)
        by = {f.feature: f for f in rep.features}
        assert [f.feature for f in rep.drifted] == ["x1 (missing rate)"]
        assert by["x1 (missing rate)"].kind == "missing" and by["x1 (missing rate)"].effect == pytest.approx(
            by["x1 (missing rate)"].detail["window_missing"])
        assert by["x1"].n == int((~np.isnan(W[:, 1])).sum()) and not by["x1"].drifted
        assert not by["(joint)"].drifted

    def test_missing_rate_test_is_quiet_when_the_rate_holds(self):
        """A reference with 10% missing and windows with 10% missing: at most 2 missing-rate alarms in 100 windows
        (each window is a test at level 0.01 with a five-point gate)."""
        rng = np.random.default_rng(8)
        R = rng.normal(size=(2000, 2))
        R[rng.random(2000) < 0.1, 0] = np.nan
        t = WindowTest().fit(R)
        alarms = 0
        for _ in range(100):
            W = rng.normal(size=(500, 2))
            W[rng.random(500) < 0.1, 0] = np.nan
            rep = t.test(W)
            assert rep.features[-1].feature == "x0 (missing rate)"
            alarms += rep.features[-1].drifted
        assert alarms <= 2

    def test_small_counts_use_fishers_exact_test(self):
        """3 of 40 rows missing against none in the reference: Fisher's exact p-value (statistic NaN)."""
        R = np.random.default_rng(9).normal(size=(400, 1))
        W = np.random.default_rng(10).normal(size=(40, 1))
        W[:3, 0] = np.nan
        f = WindowTest(min_samples=10).fit(R).test(W).features[-1]
        assert f.kind == "missing" and f.statistic != f.statistic
        assert f.p_value == pytest.approx(stats.fisher_exact([[0, 400], [3, 37]])[1])
