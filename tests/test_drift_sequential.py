"""ConformalMartingale (given p-values) and OnlineConformalMartingale (online ranks of rows): anytime-valid alarms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from guarded_serving.drift.sequential import (
    ConformalMartingale,
    OnlineConformalMartingale,
    _bet_logf,
    _log_cumsum_exp,
    _log_g,
    _sr_mixture,
    _step_bets,
    conformal_p_values,
)


def _p(rng, cal, x):
    """Two one-sided conformal p-values per value (score x and -x), from a held-out calibration set."""
    return np.column_stack([conformal_p_values(cal, x), conformal_p_values(-cal, -x)])


class TestGuarantee:
    def test_stationary_streams_stay_quiet(self):
        """Ten stationary streams of 20,000 rows never reach 1/alpha."""
        rng = np.random.default_rng(0)
        cal = rng.normal(size=2000)
        for _ in range(10):
            m = ConformalMartingale(alpha=0.01).fit()
            x = rng.normal(size=20000)
            for i in range(0, len(x), 500):
                m.update(_p(rng, cal, x[i:i + 500]))
            assert not m.alarm and m.log10_max_ < 2

    def test_betting_functions_are_densities_and_prior_sums_to_one(self):
        """Every betting function integrates to 1 over [0, 1], and the start-time prior plus its tail is 1."""
        m = ConformalMartingale().fit()
        for e in m._eps:
            assert integrate.quad(lambda u, e=e: e * u ** (e - 1), 0, 1)[0] == pytest.approx(1.0, abs=1e-6)
        for c, lo, hi in zip(m._cut, m._log_lo, m._log_hi):
            assert c * np.exp(lo) + (1 - c) * np.exp(hi) == pytest.approx(1.0, abs=1e-12) and lo >= 0 >= hi
        t = np.arange(1, 100001, dtype=float)
        pi = np.exp(_log_g(t)) - np.exp(_log_g(t + 1))
        assert pi.sum() + np.exp(_log_g(np.array([100001.0])))[0] == pytest.approx(1.0, abs=1e-9)

    def test_p_values_are_super_uniform(self):
        """Conservative conformal p-values: P(p <= u) <= u, marginally over calibration sets."""
        rng = np.random.default_rng(1)
        p = np.concatenate([conformal_p_values(rng.normal(size=99), rng.normal(size=500)) for _ in range(200)])
        for u in (0.01, 0.05, 0.2, 0.5):
            assert (p <= u).mean() <= u + 0.005

    def test_batching_does_not_change_the_capital(self):
        """Feeding p-values one batch or many small batches gives the same capital."""
        rng = np.random.default_rng(2)
        p = rng.uniform(0.001, 1, size=(3000, 2))
        a, b = ConformalMartingale().fit(), ConformalMartingale().fit()
        a.update(p)
        for i in range(0, 3000, 7):
            b.update(p[i:i + 7])
        assert a.log10_capital_ == pytest.approx(b.log10_capital_, abs=1e-9)
        assert a.log10_max_ == pytest.approx(b.log10_max_, abs=1e-9)


class TestDetection:
    @pytest.mark.parametrize("shift", [0.5, 1.0])
    def test_shift_after_long_stationary_stretch_is_caught(self, shift):
        """A mean shift after 30,000 stationary rows raises the alarm within 2,000 rows."""
        rng = np.random.default_rng(3)
        cal = rng.normal(size=2000)
        m = ConformalMartingale(alpha=0.01).fit()
        m.update(_p(rng, cal, rng.normal(size=30000)))
        assert not m.alarm
        m.update(_p(rng, cal, rng.normal(size=2000) + shift))
        assert m.alarm and 30000 < m.alarm_at_ <= 32000

    def test_category_frequency_doubling_is_caught(self):
        """A category whose share doubles after 20,000 stationary rows raises the alarm within 1,000 rows."""
        rng = np.random.default_rng(4)
        p_ref, p_new = np.array([0.5, 0.3, 0.2]), np.array([0.375, 0.225, 0.4])
        cal = -np.log(p_ref[rng.choice(3, 5000, p=p_ref)])  # rarity scores of the calibration rows
        m = ConformalMartingale(alpha=0.01).fit()
        m.update(conformal_p_values(cal, -np.log(p_ref[rng.choice(3, 20000, p=p_ref)]), rng))
        assert not m.alarm
        m.update(conformal_p_values(cal, -np.log(p_ref[rng.choice(3, 1000, p=p_new)]), rng))
        assert m.alarm and 20000 < m.alarm_at_ <= 21000

    def test_alarm_is_latched_until_reset(self):
        """Once raised, the alarm stays until reset() starts a new test."""
        m = ConformalMartingale(alpha=0.05).fit()
        m.update(np.full(200, 0.001))
        assert m.alarm
        m.update(np.full(200, 0.99))
        assert m.alarm
        m.reset()
        assert not m.alarm and m.n_seen_ == 0

    @pytest.mark.parametrize("steps", [((0.2, 5.0),), ((0.0, 2.0),), ((0.5, 0.5),)])
    def test_bad_step_bets_are_rejected(self, steps):
        """A step bet that is not a density, or bets on large p-values, is refused naming the parameter."""
        with pytest.raises(ValueError, match="steps="):
            ConformalMartingale(steps=steps).fit()

    def test_bad_p_values_are_rejected(self):
        """p-values outside (0, 1] raise a ValueError."""
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            ConformalMartingale().fit().update(np.array([0.5, 0.0]))


# -- the conformal test martingale on online ranks ------------------------------------------------
def _naive_p_values(m: OnlineConformalMartingale, X: np.ndarray) -> np.ndarray:
    """Smoothed conformal p-values by brute force: each row ranked against the bag half and every earlier row."""
    bag = [np.repeat(np.arange(m._width), m._bag0[j]) for j in range(m.n_columns_)]
    bins = m._bins(X)
    u = np.random.default_rng(m.random_state + 1).uniform(size=bins.shape)
    out = np.empty(bins.shape)
    for j in range(m.n_columns_):
        seen = list(bag[j])
        for t, b in enumerate(bins[:, j]):
            a = np.array(seen)
            out[t, j] = ((a > b).sum() + u[t, j] * ((a == b).sum() + 1)) / (len(a) + 1)
            seen.append(b)
    return out


def _corr_rows(rng, n, rho):
    z = rng.normal(size=(n, 2))
    return np.column_stack([z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho * rho) * z[:, 1]])


class TestOnlineRanks:
    def test_passes_of_update_do_not_change_the_capital(self):
        """update() works in passes of _CHUNK rows carrying the brackets over: one call of 1,000 rows,
        ten calls of 100 and row-sized calls give the same capital path and the same alarm row."""
        rng = np.random.default_rng(3)
        ref = rng.normal(size=(400, 3))
        X = np.vstack([rng.normal(size=(300, 3)), rng.normal(0.8, 1.0, size=(700, 3))])
        whole = OnlineConformalMartingale(random_state=1).fit(ref)
        whole.update(X)
        for sizes in ((100,) * 10, (1, 127, 128, 129, 615)):
            parts = OnlineConformalMartingale(random_state=1).fit(ref)
            for a, b in zip(np.cumsum((0,) + sizes[:-1]), np.cumsum(sizes)):
                parts.update(X[a:b])
            assert parts.alarm_at_ == whole.alarm_at_ is not None
            assert parts.log10_capital_ == pytest.approx(whole.log10_capital_, rel=1e-9, abs=1e-9)
            assert parts.log10_max_ == pytest.approx(whole.log10_max_, rel=1e-9, abs=1e-9)

    def test_p_values_equal_brute_force_ranks(self):
        """Block-wise ranks equal brute-force ranks against the bag half plus all earlier rows, ties included."""
        rng = np.random.default_rng(10)
        R = np.column_stack([np.round(rng.normal(size=60), 1), rng.integers(0, 3, 60), rng.normal(size=60)])
        X = np.column_stack([np.round(rng.normal(size=700), 1), rng.integers(0, 5, 700), rng.normal(size=700)])
        X[::37, 2] = np.nan
        m = OnlineConformalMartingale(categorical=[1], n_bins=8).fit(R)
        assert m.n_columns_ == 3 + 2 + 1  # features, Mahalanobis, mean, one pair product
        want = _naive_p_values(m, X)
        got = np.concatenate([m.p_values(X[:333]), m.p_values(X[333:])])
        assert np.allclose(got, want, rtol=0, atol=1e-12)

    def test_p_values_are_uniform_over_references_and_streams(self):
        """Over fresh tiny references, the p-values of the first and of later rows are uniform (not only on average)."""
        rng = np.random.default_rng(11)
        first, later = [], []
        for r in range(400):
            m = OnlineConformalMartingale(random_state=r).fit(rng.normal(size=(10, 1)))
            p = m.p_values(rng.normal(size=(30, 1)))[:, 0]
            first.append(p[0])
            later.extend(p[1:])
        assert stats.kstest(first, "uniform").pvalue > 1e-3
        assert stats.kstest(later, "uniform").pvalue > 1e-3

    def test_false_alarm_rate_within_alpha_with_tiny_references(self):
        """At alpha=0.2 with references of 20 rows, at most ~alpha of 150 clean runs of 2,000 rows alarm."""
        rng = np.random.default_rng(12)
        hits = 0
        for r in range(150):
            m = OnlineConformalMartingale(alpha=0.2, random_state=r).fit(rng.normal(size=(20, 2)))
            hits += m.update(rng.normal(size=(2000, 2)))
        assert hits <= 42  # binomial(150, 0.2): mean 30, sd 4.9; the fixed-reference alarm fails this by far

    def test_fixed_reference_martingale_fails_where_online_ranks_hold(self):
        """The previous alarm (p-values against a fixed 20-row reference) alarms far above alpha on the same runs."""
        rng = np.random.default_rng(12)
        hits = 0
        for r in range(150):
            cal = rng.normal(size=(20, 2))[:, 0]
            x = rng.normal(size=(2000, 2))[:, 0]
            m = ConformalMartingale(alpha=0.2).fit()
            m.update(np.column_stack([conformal_p_values(cal, x, rng), conformal_p_values(-cal, -x, rng)]))
            hits += m.alarm
        assert hits > 42

    def test_betting_functions_are_densities(self):
        """Every normal-score bet and every categorical step bet integrates to 1 over [0, 1]."""
        m = OnlineConformalMartingale().fit(np.zeros((10, 1)) + np.arange(10)[:, None])
        d, sc = np.concatenate([m._deltas, -m._deltas]), m._scales
        mass = np.concatenate([stats.norm.cdf(8 - d) - stats.norm.cdf(-8 - d), 2 * stats.norm.cdf(8 / sc) - 1])
        # the integral of f(p) dp for p = P(Z > z), z in [-8, 8], is each bet's likelihood-ratio mass there
        z = np.linspace(-8, 8, 40001)
        f = np.exp(_bet_logf(stats.norm.sf(z), m._deltas, m._scales)) * stats.norm.pdf(z)[:, None]
        assert np.allclose(integrate.trapezoid(f, z, axis=0), mass, atol=1e-6)
        assert np.isfinite(_bet_logf(np.array([0.0, 1.0]), m._deltas, m._scales)).all()
        cut, lo, hi = _step_bets(np.array([0.2, 0.5, 0.9]))
        assert len(cut) == 3 + 3 + 1  # a * c < 1 only
        assert np.allclose(cut * np.exp(lo) + (1 - cut) * np.exp(hi), 1.0)

    def test_memory_is_bounded(self):
        """The bag is one count per bin and column, whatever the stream length."""
        rng = np.random.default_rng(13)
        m = OnlineConformalMartingale(n_bins=64).fit(rng.normal(size=(1000, 3)))
        shape = m._counts.shape
        m.update(rng.normal(size=(30000, 3)))
        assert m._counts.shape == shape and m._counts.shape[1] <= 64 + 2
        assert m._counts.sum(axis=1).tolist() == [m.n_bag_ + 30000] * m.n_columns_

    def test_log_cumsum_exp_is_exact_with_underflow(self):
        """The scaled log-cumsum-exp equals numpy's logaddexp.accumulate, also where scaling underflows."""
        a = np.stack([np.linspace(0, -3000, 500), np.linspace(-3000, 0, 500), np.full(500, -np.inf)], axis=1)
        want = np.logaddexp.accumulate(a, axis=0)
        got = _log_cumsum_exp(a)
        assert np.array_equal(np.isfinite(want), np.isfinite(got))
        assert np.allclose(got[np.isfinite(want)], want[np.isfinite(want)], atol=1e-9)

    def test_block_start_mixture_equals_brute_force(self):
        """With start times on blocks, each bet's capital is sum over block starts of prior x product, plus the tail,
        computed in batches of any size; the block priors plus their tails sum to 1."""
        rng = np.random.default_rng(21)
        n, blocks = 60, np.array([[1, 4, 7]])
        logf = rng.normal(0, 0.5, size=(n, 1, 3))
        got = np.concatenate([_sr_mixture(logf[:25], None, 0, blocks)[0],
                              _sr_mixture(logf[25:], _sr_mixture(logf[:25], None, 0, blocks)[1], 25, blocks)[0]])
        def g(j):
            return 1.0 / np.log(j + np.e - 1.0)

        for t in range(1, n + 1):
            caps = []
            for k, b in enumerate(blocks[0]):
                starts = range(1, t + 1, b)
                c = sum((g((s - 1) // b + 1) - g((s - 1) // b + 2)) * np.exp(logf[s - 1:t, 0, k].sum()) for s in starts)
                caps.append(c + g((t - 1) // b + 2))
            assert got[t - 1, 0] == pytest.approx(np.log(np.mean(caps)), abs=1e-9)
        m = OnlineConformalMartingale().fit(rng.normal(size=(100, 2)))
        assert m.blocks_.min() >= 1 and m.blocks_.max() <= 256 and m.blocks_.shape == (m.n_columns_, 15)

    @pytest.mark.parametrize("offset,exponent", [(30.0, 2.0), (5.0, 0.5)])
    def test_weighted_offset_prior_equals_brute_force(self, offset, exponent):
        """Unequal bet weights and the start-time prior g(j) = (ln c / ln(j - 1 + c))^q: the capital is the weighted
        sum over bets of (block starts' prior x product + tail), in batches of any size; the prior sums to 1."""
        rng = np.random.default_rng(22)
        n, blocks = 50, np.array([[1, 3, 8]])
        w = np.array([0.6, 0.3, 0.1])
        logf = rng.normal(0, 0.5, size=(n, 1, 3))
        lw = np.log(w)[None]
        first = _sr_mixture(logf[:17], None, 0, blocks, lw, offset, exponent)
        got = np.concatenate([first[0], _sr_mixture(logf[17:], first[1], 17, blocks, lw, offset, exponent)[0]])

        def g(j):
            return (np.log(offset) / np.log(j - 1.0 + offset)) ** exponent

        j = np.arange(1, 200001, dtype=float)
        assert (g(j) - g(j + 1)).sum() + g(200001.0) == pytest.approx(1.0, abs=1e-12) and (g(j) > g(j + 1)).all()
        for t in range(1, n + 1):
            cap = 0.0
            for k, b in enumerate(blocks[0]):
                starts = range(1, t + 1, b)
                c = sum((g((s - 1) // b + 1) - g((s - 1) // b + 2)) * np.exp(logf[s - 1:t, 0, k].sum()) for s in starts)
                cap += w[k] * (c + g((t - 1) // b + 2))
            assert got[t - 1, 0] == pytest.approx(np.log(cap), abs=1e-9)
        m = OnlineConformalMartingale().fit(rng.normal(size=(100, 2)))
        assert np.exp(m._log_w).sum(axis=1) == pytest.approx(np.ones(m.n_columns_))

    @pytest.mark.parametrize("kwargs,match", [({"alpha": 0}, "alpha="), ({"n_bins": 1}, "n_bins="),
                                              ({"deltas": (-0.5,)}, "deltas="), ({"joint_weight": 1.0}, "joint_weight="),
                                              ({"categorical": [5]}, "categorical="),
                                              ({"delta_weights": (1.0, 2.0)}, "delta_weights="),
                                              ({"scale_weights": (1, 1, 1, 1, 0)}, "scale_weights="),
                                              ({"start_offset": 1.0}, "start_offset="),
                                              ({"start_exponent": 0}, "start_exponent=")])
    def test_bad_parameters_are_rejected(self, kwargs, match):
        """Invalid settings raise a ValueError naming the parameter."""
        with pytest.raises(ValueError, match=match):
            OnlineConformalMartingale(**kwargs).fit(np.zeros((10, 2)) + np.arange(10)[:, None])


class TestOnlineDirection:
    @pytest.mark.parametrize("shift", [0.5, -0.5])
    def test_mean_shift_either_way_after_long_stretch(self, shift):
        """A +-0.5 sd mean shift after 20,000 clean rows is caught within 600 rows, on the shifted feature."""
        rng = np.random.default_rng(20)
        m = OnlineConformalMartingale(feature_names=["a", "b", "c"]).fit(rng.normal(size=(2000, 3)))
        assert not m.update(rng.normal(size=(20000, 3)))
        X = rng.normal(size=(600, 3))
        X[:, 1] += shift
        assert m.update(X) and 20000 < m.alarm_at_ <= 20600
        assert m.column_labels_[m.alarm_column_] == "b"

    def test_variance_increase_is_caught(self):
        """sd x1.5 after 5,000 clean rows is caught within 500 rows."""
        rng = np.random.default_rng(21)
        m = OnlineConformalMartingale().fit(rng.normal(size=(2000, 1)))
        assert not m.update(rng.normal(size=(5000, 1)))
        assert m.update(rng.normal(size=(500, 1)) * 1.5)

    def test_slow_drift_is_caught(self):
        """A mean drifting by 1 sd per 10,000 rows is caught within 4,000 rows."""
        rng = np.random.default_rng(22)
        m = OnlineConformalMartingale().fit(rng.normal(size=(2000, 1)))
        assert not m.update(rng.normal(size=(5000, 1)))
        assert m.update(rng.normal(size=(4000, 1)) + np.arange(4000)[:, None] / 10000)

    @pytest.mark.parametrize("rho0,rho1", [(0.8, 0.0), (0.0, 0.8)])
    def test_correlation_change_with_fixed_marginals(self, rho0, rho1):
        """A correlation change with unchanged N(0,1) marginals is caught by a joint column within 1,000 rows."""
        rng = np.random.default_rng(23)
        m = OnlineConformalMartingale().fit(_corr_rows(rng, 2000, rho0))
        assert not m.update(_corr_rows(rng, 5000, rho0))
        assert m.update(_corr_rows(rng, 1000, rho1))
        assert m.column_labels_[m.alarm_column_].startswith("(joint)")

    def test_small_common_shift_is_seen_by_the_mean_column(self):
        """+0.2 sd on all 10 features: the '(joint) mean' projection raises the alarm, within 400 rows,
        before any single feature could (each sees only a 0.2 sd shift, ~450 rows at its weight)."""
        rng = np.random.default_rng(25)
        m = OnlineConformalMartingale().fit(rng.normal(size=(2000, 10)))
        assert not m.update(rng.normal(size=(3000, 10)))
        assert m.update(rng.normal(size=(400, 10)) + 0.2)
        assert m.column_labels_[m.alarm_column_] == "(joint) mean" and m.alarm_at_ <= 3400

    def test_category_share_doubling(self):
        """A category whose share doubles (0.2 -> 0.4) is caught within 1,000 rows."""
        rng = np.random.default_rng(24)
        m = OnlineConformalMartingale(categorical=[0]).fit(rng.choice(3, 2000, p=[0.5, 0.3, 0.2])[:, None] * 1.0)
        assert not m.update(rng.choice(3, 5000, p=[0.5, 0.3, 0.2])[:, None] * 1.0)
        assert m.update(rng.choice(3, 1000, p=[0.375, 0.225, 0.4])[:, None] * 1.0)
