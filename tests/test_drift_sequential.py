"""ConformalMartingale: anytime-valid sequential alarm over conformal p-values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from guarded_serving.drift.sequential import ConformalMartingale, _log_g, conformal_p_values


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
            assert integrate.quad(lambda u: e * u ** (e - 1), 0, 1)[0] == pytest.approx(1.0, abs=1e-6)
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
