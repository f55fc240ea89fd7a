"""The guarded example served by a real `bentoml serve` on 127.0.0.1, spans over real OTLP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from guarded_serving.serving.bentoml import tracing_config_from_env
from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import OTLPReceiver, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def rows(artifacts, n=2):
    return np.load(artifacts / "reference.npz")["X_test"][:n].tolist()


def post(server, api, payload):
    return requests.post(f"{server.url}/{api}", data=json.dumps(payload, allow_nan=True),
                         headers={"content-type": "application/json"}, timeout=30)


class TestServedExample:
    def test_predict_through_bentoml_schema(self, served_example, artifacts):
        """A real request to /predict is answered; BentoML kept the guarded method's schema."""
        resp = post(served_example, "predict", {"inputs": rows(artifacts, 3)})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert len(body["label"]) == 3 and all(0 <= p <= 1 for p in body["probability"])
        spec = requests.get(f"{served_example.url}/docs.json", timeout=10).json()
        schema = json.dumps(spec["paths"]["/predict"])
        assert "inputs" in schema

    @pytest.mark.parametrize("payload,fragment", [
        ({"inputs": [[1.0] * 29 + [float("nan")]]}, "inputs: row 0, feature 29 (worst_fractal_dimension) is NaN"),
        ({"inputs": [[float("inf")] + [1.0] * 29]}, "inputs: row 0, feature 0 (mean_radius) is inf"),
        ({"inputs": [[1.0, 2.0]]}, "inputs: expected 30 features per row, got 2"),
        ({"inputs": "a string"}, "inputs: expected numbers"),
        ({"inputs": []}, "inputs: empty batch"),
        ({"inputs": [[1.0] * 30, [1.0]]}, "inputs"),
        ({"nothing": 1}, "inputs"),
    ])
    def test_bad_input_is_4xx_naming_the_field(self, served_example, payload, fragment):
        """Malformed input gets an HTTP 4xx whose body names the field and the problem, never a 500."""
        resp = post(served_example, "predict", payload)
        assert 400 <= resp.status_code < 500, resp.text
        assert fragment in resp.text

    def test_oversized_payload_rejected(self, served_example):
        """A batch over the guard's row limit is a 400 naming the limit."""
        resp = post(served_example, "predict", {"inputs": [[0.5] * 30] * 10_001})
        assert resp.status_code == 400 and "exceeds the limit of 10000" in resp.text

    def test_health_and_stats_endpoints(self, served_example, artifacts):
        """/guard/health lists every check; /guard/stats counts calls apart by outcome."""
        before = requests.get(f"{served_example.url}/guard/stats", timeout=10).json()
        post(served_example, "predict", {"inputs": rows(artifacts)})
        post(served_example, "predict", {"inputs": [[1.0]]})
        post(served_example, "predict_chaos", {"inputs": rows(artifacts), "fail": True})
        after = requests.get(f"{served_example.url}/guard/stats", timeout=10).json()
        assert after["ok"] - before["ok"] == 1
        assert after["invalid_inputs"] - before["invalid_inputs"] == 1
        assert after["errors"] - before["errors"] == 1
        assert set(after["latency_ms"]) >= {"p50", "p95", "p99"}
        health = requests.get(f"{served_example.url}/guard/health", timeout=10)
        assert health.status_code == 200
        assert {"latency_slo", "model_errors"} <= set(health.json()["checks"])

    def test_model_error_is_500_and_recorded(self, served_example, artifacts, otlp_receiver):
        """A model exception is a 500 for the client and an ERROR span with error.type for us."""
        resp = post(served_example, "predict_chaos", {"inputs": rows(artifacts), "fail": True})
        assert resp.status_code == 500
        spans = otlp_receiver.wait_for(lambda s: s["attributes"].get("error.type") == "RuntimeError")
        assert spans and spans[0]["status_code"] == 2  # STATUS_CODE_ERROR
        assert spans[0]["attributes"]["guard.outcome"] == "error"

    def test_ordinary_call_annotates_the_bentoml_server_span(self, served_example, artifacts, otlp_receiver):
        """Decoded OTLP spans: an ordinary call adds no span; BentoML's POST /predict server span carries the
        guard's attributes (span_mode auto), so tracing costs one span per request, not two."""
        resp = post(served_example, "predict", {"inputs": rows(artifacts, 5)})
        assert resp.status_code == 200
        servers = otlp_receiver.wait_for(lambda s: s["attributes"].get("guard.batch_size") == 5)
        assert servers, "no span with the guard's attributes arrived over OTLP"
        srv = servers[-1]
        assert srv["name"].startswith("POST /predict") and srv["kind"] == 2  # SERVER
        assert srv["service"] == "CancerClassifier"
        for key in ("guard.model.name", "guard.latency_ms", "guard.request_id", "guard.batch_size"):
            assert key in srv["attributes"], key
        for key in ("guard.slo.violated", "guard.slo.latency_ms", "guard.anomalous", "guard.artifact.digest",
                    "guard.outcome", "guard.model.version", "guard.request.latency_ms"):
            assert key not in srv["attributes"], key  # compact: on anomalous spans only
        assert not [s for s in otlp_receiver.spans if s["name"] == "guard breast_cancer"
                    and s["trace_id"] == srv["trace_id"]]

    def test_anomalous_call_gets_a_guard_span_under_the_server_span(self, served_example, artifacts,
                                                                     otlp_receiver):
        """A flagged call keeps its guard span, an INTERNAL child of BentoML's server span in the same trace."""
        odd = np.asarray(rows(artifacts, 4))
        odd[2, 3] *= 1000
        assert post(served_example, "predict", {"inputs": odd.tolist()}).status_code == 200
        guard_spans = otlp_receiver.wait_for(
            lambda s: s["name"] == "guard breast_cancer" and s["attributes"].get("guard.batch_size") == 4)
        assert guard_spans, "no guard span arrived over OTLP"
        g = guard_spans[-1]
        parents = otlp_receiver.wait_for(lambda s: s["span_id"] == g["parent_span_id"])
        assert parents, "the guard span's parent was not exported"
        assert parents[0]["name"].startswith("POST /predict") and parents[0]["trace_id"] == g["trace_id"]
        assert parents[0]["kind"] == 2 and g["kind"] == 1  # SERVER, INTERNAL
        assert g["attributes"]["guard.edge.flagged"] is True and g["attributes"]["guard.anomalous"] is True

    def test_slow_call_marked(self, served_example, artifacts, otlp_receiver):
        """A call slower than the budget is an SLO violation on its span."""
        post(served_example, "predict_chaos", {"inputs": rows(artifacts, 1), "delay_ms": 250})
        spans = otlp_receiver.wait_for(lambda s: s["attributes"].get("guard.slo.violated") is True
                                       and s["attributes"].get("guard.latency_ms", 0) >= 250)
        assert spans and spans[0]["attributes"]["guard.request.latency_ms"] >= spans[0]["attributes"]["guard.latency_ms"]


def test_tracing_config_from_env():
    """BentoML tracing config comes from the standard OTEL variables, off when none is set."""
    assert tracing_config_from_env({}) == {}
    cfg = tracing_config_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318/",
                                   "OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert cfg["otlp"]["endpoint"] == "http://127.0.0.1:4318/v1/traces" and cfg["sample_rate"] == 0.25


def test_sampled_out_server_still_exports_anomalies_and_readyz_turns_503(artifacts):
    """With BentoML's sample rate at 0, normal calls export nothing, failures are forced out,
    and a failing error rate makes health degraded while /readyz stays 200 (not opted in)."""
    with OTLPReceiver() as rx:
        env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts),
               "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.endpoint, "OTEL_TRACES_SAMPLER_ARG": "0",
               "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
            good = rows(artifacts)
            for _ in range(5):
                assert post(server, "predict", {"inputs": good}).status_code == 200
            for _ in range(25):
                assert post(server, "predict_chaos", {"inputs": good, "fail": True}).status_code == 500
            forced = rx.wait_for(lambda s: s["attributes"].get("guard.forced_export") is True
                                 and s["attributes"].get("guard.outcome") == "error", count=25)
            rx.wait_for(lambda s: False, timeout=1.0)  # give stragglers time to arrive
            guard_spans = [s for s in rx.spans if s["name"].startswith("guard ")]
            assert len(forced) == 25 and len(guard_spans) == 25  # no normal call exported
            assert all(s["parent_span_id"] for s in forced)  # keeps the request's parent id
            assert not [s for s in rx.spans if s["name"].startswith("POST")]  # server spans sampled out
            # a failing error rate alerts (check failing, health degraded) but does not gate readiness
            # unless error_rate_gates_readiness is set: a replica out of rotation does not fix a model bug
            ready = requests.get(f"{server.url}/readyz", timeout=10)
            assert ready.status_code == 200
            health = requests.get(f"{server.url}/guard/health", timeout=10)
            assert health.status_code == 200 and health.json()["checks"]["model_errors"]["status"] == "failing"
            assert health.json()["status"] == "degraded"


def test_json_safe_turns_nan_and_numpy_into_strict_json():
    """Undefined statistics (NaN, inf) become null and numpy scalars plain numbers, so /guard/stats never 500s."""
    from guarded_serving.serving.bentoml import json_safe

    out = json_safe({"psi": float("nan"), "n": np.int64(3), "rows": [np.float64(1.5), float("inf")], "ok": True})
    assert out == {"psi": None, "n": 3, "rows": [1.5, None], "ok": True}
    assert json.dumps(out, allow_nan=False)
