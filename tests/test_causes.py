"""Causes of a slow call, by share of its time over budget."""

from __future__ import annotations

import pytest

from guarded_serving.operational.causes import explain
from guarded_serving.operational.trend import TrendResult


def _rising(start_ms, end_ms):
    return TrendResult(calls=1024, rising=True, p_value=1e-9, slope_ms_per_100_calls=(end_ms - start_ms) / 10.24,
                       start_ms=start_ms, end_ms=end_ms, block_calls=16)


class TestGcPause:
    def test_a_tiny_pause_does_not_explain_a_slow_call(self):
        """A 0.4 ms GC pause inside a 70 ms call against a 30 ms budget is not its cause."""
        assert explain(70.0, 30.0, gc_pause_ms=0.4) == []

    def test_a_pause_that_covers_most_of_the_excess_is_the_cause(self):
        """25 ms of GC pause in a 70 ms call over a 30 ms budget explains 62.5% of the excess."""
        assert explain(70.0, 30.0, gc_pause_ms=25.0) == [("gc_pause", pytest.approx(0.625))]

    def test_the_material_share_is_configurable(self):
        """With gc_share=0.25, 15 ms of 40 ms over budget is enough."""
        assert explain(70.0, 30.0, gc_pause_ms=15.0, gc_share=0.25)[0][0] == "gc_pause"
        assert explain(70.0, 30.0, gc_pause_ms=15.0) == []


class TestSnapshotAndTrend:
    def test_gpu_saturation_from_the_snapshot(self):
        """A GPU-bound slow call with the GPU saturated in the snapshot names gpu_saturation."""
        assert explain(70.0, 30.0, snapshot=("gpu_saturation",)) == [("gpu_saturation", 1.0)]

    def test_snapshot_causes_share_what_measured_causes_leave(self):
        """GC explaining 75% leaves 25% to the host state, listed after it."""
        out = explain(70.0, 30.0, gc_pause_ms=30.0, snapshot=("gpu_memory_pressure", "cpu_saturation"))
        assert [c for c, _ in out] == ["gc_pause", "gpu_memory_pressure", "cpu_saturation"]
        assert [s for _, s in out] == pytest.approx([0.75, 0.125, 0.125])

    def test_fully_explained_by_gc_drops_the_snapshot(self):
        """A pause longer than the excess explains it all; host state is not named."""
        assert explain(40.0, 30.0, gc_pause_ms=12.0, snapshot=("cpu_saturation",)) == [("gc_pause", 1.0)]

    def test_a_trend_that_carried_the_model_over_budget_is_named(self):
        """Fitted 24 -> 34 ms across the window with a 30 ms budget: a 31 ms call is the trend's doing."""
        assert explain(31.0, 30.0, trend=_rising(24.0, 34.0)) == [("latency_trend", 1.0)]

    def test_causes_are_ordered_by_share(self):
        """Trend (share 0.4) and GC (0.6) on a 40 ms call over a 30 ms budget: GC first, then the trend."""
        out = explain(40.0, 30.0, gc_pause_ms=6.0, trend=_rising(28.0, 34.0))
        assert [c for c, _ in out] == ["gc_pause", "latency_trend"]
        assert [s for _, s in out] == pytest.approx([0.6, 0.4])

    def test_a_trend_within_budget_does_not_explain_a_spike(self):
        """A rise from 10 to 12 ms does not explain a 70 ms call over a 30 ms budget."""
        assert explain(70.0, 30.0, trend=_rising(10.0, 12.0)) == []

    def test_a_trend_that_is_not_significant_is_no_cause(self):
        """A fitted rise the test did not call significant is not named."""
        r = TrendResult(calls=1024, rising=False, p_value=0.2, slope_ms_per_100_calls=1.0, start_ms=20.0,
                        end_ms=40.0)
        assert explain(45.0, 30.0, trend=r) == []

    def test_a_fast_call_has_no_cause(self):
        """A call within budget gets no causes."""
        assert explain(20.0, 30.0, gc_pause_ms=5.0, snapshot=("cpu_saturation",)) == []


def test_queueing_named_when_it_explains_the_excess():
    """A request that waited 120 ms for a 20 ms model call against a 100 ms budget: queueing is the cause."""
    from guarded_serving.operational.causes import explain

    found = explain(140.0, 100.0, queue_ms=120.0, snapshot=("cpu_saturation",))
    assert found[0] == ("queueing", 1.0) and [c for c, _ in found] == ["queueing"]
    assert "queueing" not in [c for c, _ in explain(140.0, 100.0, queue_ms=5.0)]  # 5 of 40 ms: not material
