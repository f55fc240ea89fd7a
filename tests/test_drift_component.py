"""DriftComponent inside a Guard: buffering, background tests, health, spans, p-values."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from guarded_serving import Component, ConfigError, Guard
from guarded_serving.drift.component import DriftComponent
from guarded_serving.keys import EDGE_P_VALUES
from guarded_serving.drift.sequential import conformal_p_values
from guarded_serving.testing import in_memory_tracer_provider, wait_until

NAMES = ["f0", "f1", "f2"]


_wait = wait_until


def _pooled(guard):
    return guard.health()["checks"].get("drift.features", {}).get("details", {}).get("pooled_rows")


@pytest.fixture
def reference(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    path = tmp_path / "ref.npz"
    np.savez(path, X_train=X, pred_train=1 / (1 + np.exp(-X[:, 0])), feature_names=np.array(NAMES))
    return X, path


def _model(guard):
    @guard
    def predict(inputs):
        return {"probability": (1 / (1 + np.exp(-inputs[:, 0]))).tolist()}

    return predict


class ConformalEdge(Component):
    """A real conformal scorer standing in for the edge-case component: per-row p-values into call.state."""

    name = "edge_cases"
    provides = (EDGE_P_VALUES,)

    def __init__(self, calibration: np.ndarray) -> None:
        self.center = calibration.mean(axis=0)
        self.cal = np.sort(((calibration - self.center) ** 2).sum(axis=1))

    def before_call(self, call):
        s = ((call.inputs - self.center) ** 2).sum(axis=1)
        call.state[EDGE_P_VALUES] = conformal_p_values(self.cal, s)


class TestInGuard:
    def test_stationary_traffic_is_quiet_and_shifted_feature_is_named(self, reference, tmp_path):
        """Stationary rows leave health ok; a +2 std offset on f1 is named as drift and as offset skew."""
        X, path = reference
        provider, exporter = in_memory_tracer_provider()
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=0.05, drift_window=600, skew_first_n=300, tracer_provider=provider)
        predict = _model(guard)
        rng = np.random.default_rng(1)
        for _ in range(30):
            predict(rng.normal(size=(20, 3)))
        assert _wait(lambda: _pooled(guard) == 600)
        h = guard.health()["checks"]
        assert h["drift.features"]["status"] == "ok" and h["drift.predictions"]["status"] == "ok"
        assert h["drift.skew"]["status"] == "ok"
        for _ in range(40):
            Z = rng.normal(size=(20, 3))
            Z[:, 1] += 2.0
            predict(Z)
        assert _wait(lambda: _pooled(guard) == 1400)
        h = guard.health()
        assert h["status"] == "degraded" and h["ready"]
        assert h["checks"]["drift.features"]["details"]["drifted"] == ["f1"]
        assert "f1" in h["checks"]["drift.features"]["reason"]
        guard.stop()
        events = [e for s in exporter.get_finished_spans() for e in s.events if e.name == "guard.drift.window"]
        assert events and "f1" in events[-1].attributes["guard.drift.features"]

    def test_skew_from_first_requests(self, reference, tmp_path):
        """Serving f2 scaled by 10 from the start is reported as scale skew on f2."""
        X, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=0.05, skew_first_n=300)
        predict = _model(guard)
        rng = np.random.default_rng(2)
        for _ in range(15):
            Z = rng.normal(size=(20, 3))
            Z[:, 2] *= 10
            predict(Z)
        assert _wait(lambda: guard.health()["checks"].get("drift.skew", {}).get("status") == "degraded")
        findings = guard.health()["checks"]["drift.skew"]["details"]["findings"]
        guard.stop()
        assert [(f["feature"], f["kind"]) for f in findings] == [("f2", "scale")]

    def test_sequential_alarm_consumes_pooled_input_rows(self, reference, tmp_path):
        """The online-rank martingale reads the pooled input rows: quiet on clean rows, an alarm naming f1 on a shift."""
        _, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=0.05)
        predict = _model(guard)
        rng = np.random.default_rng(3)
        for _ in range(50):
            predict(rng.normal(size=(20, 3)))
        seq = lambda: guard.health()["checks"].get("drift.sequential", {})  # noqa: E731
        assert _wait(lambda: seq().get("details", {}).get("n") == 1000)
        assert seq()["status"] == "ok" and seq()["details"]["reference_in_bag"] == 1000
        for _ in range(25):
            Z = rng.normal(size=(20, 3))
            Z[:, 1] += 1.0
            predict(Z)
        assert _wait(lambda: seq().get("status") == "degraded")
        assert seq()["details"]["alarm_column"] == "f1" and "on f1" in seq()["reason"]
        guard.stop()

    def test_joint_shift_is_named_in_features(self, reference, tmp_path):
        """Rows whose f0 and f1 become correlated (marginals unchanged) are reported as '(joint)' drift."""
        _, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=0.05, drift_window=1000)
        predict = _model(guard)
        rng = np.random.default_rng(4)
        for _ in range(50):
            Z = rng.normal(size=(20, 3))
            Z[:, 1] = 0.8 * Z[:, 0] + 0.6 * Z[:, 1]
            predict(Z)
        assert _wait(lambda: _pooled(guard) == 1000)
        assert _wait(lambda: guard.health()["checks"]["drift.features"]["details"].get("drifted") == ["(joint)"])
        guard.stop()

    def test_without_reference_the_alarm_falls_back_to_edge_p_values(self, tmp_path):
        """With no reference, conformal p-values in call.state drive the fixed-reference martingale."""
        rng = np.random.default_rng(5)
        guard = Guard(name="t", drift=True, drift_store=str(tmp_path / "s.sqlite"), drift_interval_s=0.05,
                      components=[ConformalEdge(rng.normal(size=(1000, 3)))])
        predict = _model(guard)
        for _ in range(50):
            predict(rng.normal(size=(20, 3)))
        seq = lambda: guard.health()["checks"].get("drift.sequential", {})  # noqa: E731
        assert _wait(lambda: seq().get("details", {}).get("n") == 1000)
        assert seq()["status"] == "ok" and "reference_in_bag" not in seq()["details"]
        for _ in range(25):
            predict(rng.normal(size=(20, 3)) * 1.8)
        assert _wait(lambda: seq().get("status") == "degraded")
        guard.stop()

    def test_request_path_only_buffers(self, reference, tmp_path):
        """Before the background cycle runs, rows sit in the bounded buffer and nothing is pooled."""
        X, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=3600, drift_buffer_rows=50)
        predict = _model(guard)
        for _ in range(4):
            predict(np.zeros((20, 3)))
        st = guard.component("drift").stats()
        guard.stop()
        assert st["buffered_rows"] == 40 and st["dropped_rows"] == 40 and "pooled_rows" not in st


class TestConstruction:
    def test_from_profile_duck_typed(self, reference, tmp_path):
        """from_profile reads reference, feature_names, categorical, reference_predictions."""
        X, _ = reference
        prof = SimpleNamespace(reference=X, feature_names=NAMES, categorical=[], reference_predictions=None)
        c = DriftComponent.from_profile(prof, store=str(tmp_path / "s.sqlite"))
        assert c.feature_names == NAMES and c.reference.shape == (2000, 3)

    @pytest.mark.parametrize("field,value", [("drift_alpha", 1.5), ("drift_window", 1), ("skew_first_n", 0),
                                             ("drift_interval_s", 0), ("drift", "yes")])
    def test_bad_config_names_the_field(self, field, value):
        """Invalid drift settings raise ConfigError naming the field."""
        with pytest.raises(ConfigError, match=field):
            Guard(name="t", **{field: value})


class TestSamplingAndAnalyzeNow:
    def test_full_buffer_keeps_a_uniform_sample_of_the_interval_and_says_so(self, reference, tmp_path):
        """1,000 one-row calls into a 100-row buffer: 100 rows kept, spread over the whole interval (not its start),
        900 counted as sampled out, and the drift reason states the 10% sampling rate."""
        _, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=3600, drift_buffer_rows=100, drift_min_samples=50)
        predict = _model(guard)
        for i in range(1000):
            predict(np.array([[float(i), 0.0, 0.0]]))
        comp = guard.component("drift")
        st = comp.stats()
        assert st["buffered_rows"] == 100 and st["sampled_out_rows"] == 900 and st["dropped_rows"] == 900
        order = [it[0] for it in comp._buf]
        kept = np.array([it[1][0, 0] for it in comp._buf])
        assert kept.min() < 150 and kept.max() > 850 and 300 < np.median(kept) < 700
        assert len(set(order)) == 100
        out = guard.analyze_now()
        guard.stop()
        assert out["pooled_rows"] == 100 and out["sampling"]["last_interval_rate"] == pytest.approx(0.1)
        assert "uniform sample of 10.0% of the latest interval's 1000 rows" in out["checks"]["drift.features"]["reason"]

    def test_analyze_now_runs_the_cycle_synchronously(self, reference, tmp_path):
        """Without a background cycle (interval one hour), analyze_now() pools the rows and returns the findings:
        a shift on f1 and f2 going missing in 30% of rows are both named as drift."""
        _, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=3600, drift_window=600, allow_nan=True)
        predict = _model(guard)
        rng = np.random.default_rng(5)
        for _ in range(30):
            predict(rng.normal(size=(20, 3)))
        first = guard.analyze_now()
        assert first["status"] == "ok" and first["pooled_rows"] == 600 and first["drifted"] == []
        for _ in range(30):
            Z = rng.normal(size=(20, 3))
            Z[:, 1] += 1.0
            Z[rng.random(20) < 0.3, 2] = np.nan
            predict(Z)
        out = guard.analyze_now()
        guard.stop()
        assert out["status"] == "drift" and out["pooled_rows"] == 1200
        assert {"f1", "f2 (missing rate)"} <= set(out["drifted"])
        reason = out["checks"]["drift.features"]["reason"]
        assert "f2 (missing rate):" in reason and "of rows missing vs 0.0% in the reference" in reason
        assert out["checks"]["drift.sequential"]["status"] == "degraded"

    def test_analyze_now_needs_drift(self):
        """A guard without drift says what analyze_now() needs."""
        with pytest.raises(KeyError, match="drift=True"):
            Guard(name="t").analyze_now()

    def test_sequential_alarm_subsamples_beyond_its_cap(self, reference, tmp_path):
        """More new rows than drift_sequential_max_rows in a cycle: the alarm consumes the cap, the rest counted."""
        _, path = reference
        guard = Guard(name="t", drift=True, drift_reference=str(path), drift_store=str(tmp_path / "s.sqlite"),
                      drift_interval_s=3600, drift_sequential_max_rows=300)
        predict = _model(guard)
        rng = np.random.default_rng(6)
        for _ in range(50):
            predict(rng.normal(size=(20, 3)))
        guard.analyze_now()
        st = guard.component("drift").stats()
        guard.stop()
        assert st["sequential_rows"] == 300 and st["sequential_skipped_rows"] == 700
