"""ConformalMartingale: anytime-valid sequential alarm over conformal p-values."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving.drift.sequential import ConformalMartingale, conformal_p_values


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

    def test_alarm_is_latched_until_reset(self):
        """Once raised, the alarm stays until reset() starts a new test."""
        m = ConformalMartingale(alpha=0.05).fit()
        m.update(np.full(200, 0.001))
        assert m.alarm
        m.update(np.full(200, 0.99))
        assert m.alarm
        m.reset()
        assert not m.alarm and m.n_seen_ == 0

    def test_bad_p_values_are_rejected(self):
        """p-values outside (0, 1] raise a ValueError."""
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            ConformalMartingale().fit().update(np.array([0.5, 0.0]))
