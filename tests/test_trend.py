"""The latency-trend test: Mann-Kendall on block medians, Theil-Sen slope, a bounded ring."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving.operational.trend import LatencyTrend, mann_kendall, theil_sen


def _feed(trend, latencies):
    for v in latencies:
        trend.append(float(v))
    return trend


class TestStatistics:
    def test_increasing_series_is_significant_and_slope_is_exact(self):
        """A strictly increasing line gives a tiny p-value and its own slope and intercept."""
        x = 2.0 + 0.5 * np.arange(40)
        _, p = mann_kendall(x)
        assert p < 1e-6
        assert theil_sen(x) == pytest.approx((0.5, 2.0))

    def test_decreasing_series_is_not_an_upward_trend(self):
        """A falling series has an upward p-value near 1."""
        assert mann_kendall(-np.arange(30.0))[1] > 0.99

    def test_ties_do_not_fake_a_trend(self):
        """A constant series is not significant."""
        assert mann_kendall(np.ones(50))[1] == 1.0

    def test_false_alarm_rate_on_trendless_noise_is_near_the_level(self):
        """On 400 trendless series, the share called rising is close to alpha (0.05 here), never far above."""
        rng = np.random.default_rng(7)
        t = LatencyTrend(window=1024, alpha=0.05)
        alarms = sum(t.test(20.0 + rng.gamma(2.0, 1.0, size=1024)).rising for _ in range(400))
        assert alarms / 400 <= 0.09  # binomial(400, 0.05): mean 20, 0.09 is > 4 sd above


class TestLatencyTrend:
    def test_a_model_slowing_1ms_per_100_calls_is_rising_with_that_slope(self):
        """Latencies rising 1 ms every 100 calls (plus noise and GC-like spikes) read as rising, ~1 ms/100 calls."""
        rng = np.random.default_rng(1)
        lat = 20.0 + 0.01 * np.arange(1024) + rng.normal(0, 1.0, 1024)
        lat[rng.integers(0, 1024, 20)] += 50.0
        r = _feed(LatencyTrend(), lat).update()
        assert r.rising and r.p_value < 0.001
        assert r.slope_ms_per_100_calls == pytest.approx(1.0, abs=0.1)
        assert r.rise_ms == pytest.approx(10.0, abs=1.5)

    def test_spikes_on_a_flat_model_are_not_a_trend(self):
        """A flat model with occasional large spikes late in the window is not called rising."""
        rng = np.random.default_rng(2)
        lat = 20.0 + rng.normal(0, 1.0, 1024)
        lat[900:] += np.where(rng.random(124) < 0.1, 80.0, 0.0)
        r = _feed(LatencyTrend(), lat).update()
        assert not r.rising

    def test_ring_is_bounded_and_kept_in_call_order(self):
        """Only the last `window` latencies are kept, oldest first."""
        t = _feed(LatencyTrend(window=64), range(1000))
        np.testing.assert_array_equal(t.latencies(), np.arange(936, 1000))

    def test_no_test_before_enough_calls_and_no_retest_on_the_same_data(self):
        """The first test waits for min_calls; the next one for window // 8 new calls."""
        t = _feed(LatencyTrend(window=1024, min_calls=128), np.ones(100))
        assert t.update().calls == 0 and t.tests == 0
        _feed(t, np.ones(28))
        assert t.update().calls == 128 and t.tests == 1
        _feed(t, np.ones(127))
        t.update()
        assert t.tests == 1
        _feed(t, np.ones(1))
        t.update()
        assert t.tests == 2

    def test_describe_gives_the_trend_in_ms_per_100_calls(self):
        """The sentence for a check reason names the slope per 100 calls and the false-alarm level."""
        t = _feed(LatencyTrend(), 5.0 + 0.02 * np.arange(512))
        t.update()
        text = t.describe()
        assert "rising" in text and "+2.00 ms per 100 calls" in text and "false-alarm level 0.001" in text

    @pytest.mark.parametrize("kw", [{"window": 8}, {"alpha": 0.0}, {"alpha": 0.7}, {"blocks": 2}])
    def test_bad_settings_are_rejected(self, kw):
        """Invalid window, alpha or blocks raise ValueError."""
        with pytest.raises(ValueError):
            LatencyTrend(**kw)
