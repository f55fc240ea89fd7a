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
