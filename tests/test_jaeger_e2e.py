"""End to end against a real Jaeger: the guarded example traces over OTLP, Jaeger's query API shows the guard spans."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port
from tests.conftest import ROOT
from tests.jaeger import tags_of

pytestmark = pytest.mark.integration

SERVICE = "CancerClassifier"
GUARD_SPAN = "guard breast_cancer"
# compact: what an ordinary call puts on its server span (its outcome is "ok" by definition, its request time
# the span's duration, its version a deployment constant: those are on anomalous spans)
ORDINARY = ("guard.model.name", "guard.latency_ms", "guard.batch_size", "guard.request_id")
DOCUMENTED = (*ORDINARY, "guard.model.version", "guard.outcome", "guard.slo.latency_ms", "guard.slo.violated",
              "guard.anomalous", "guard.artifact.digest")


def post(server, api, payload):
    return requests.post(f"{server.url}/{api}", data=json.dumps(payload, allow_nan=True),
                         headers={"content-type": "application/json"}, timeout=30)


@pytest.fixture(scope="module")
def traced(artifacts, jaeger, tmp_path_factory):
    """The example served with BentoML tracing to Jaeger; normal, flagged, slow, failing and invalid calls sent.

    Yields ``(spans, run_id)``: every span of this run as Jaeger's query API returns it.
    """
    run_id = uuid.uuid4().hex[:12]
    since_us = int(time.time() * 1e6) - 1_000_000
    X = np.load(artifacts / "reference.npz")["X_test"]
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": jaeger.traces_endpoint,
           "OTEL_RESOURCE_ATTRIBUTES": f"gs.test.run={run_id}", "OTEL_BSP_SCHEDULE_DELAY": "100",
           "GUARDED_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
        normal = post(server, "predict", {"inputs": X[:7].tolist()})
        assert normal.status_code == 200 and normal.headers["X-Guard-Edge"] == "ok"
        odd = X[:5].copy()
        odd[1, 3] *= 1000  # mean_area in the wrong unit: an edge case, flagged (policy "flag")
        flagged = post(server, "predict", {"inputs": odd.tolist()})
        assert flagged.status_code == 200 and flagged.headers["X-Guard-Edge"].startswith("flagged; rows=1;")
        assert post(server, "predict_chaos", {"inputs": X[:3].tolist(), "delay_ms": 250}).status_code == 200
        assert post(server, "predict_chaos", {"inputs": X[:4].tolist(), "fail": True}).status_code == 500
        bad = X[:1].tolist()
        bad[0][5] = float("nan")
        assert post(server, "predict", {"inputs": bad}).status_code == 400
        # Flush: wait until Jaeger holds the four guard spans of this run's anomalous calls and the
        # server span the ordinary call annotated (the batch processor exports every 100 ms).
        mine = lambda s: s["processTags"].get("gs.test.run") == run_id  # noqa: E731
        jaeger.query.wait_spans(SERVICE, lambda s: mine(s) and s["operationName"] == GUARD_SPAN,
                                count=4, since_us=since_us)
        jaeger.query.wait_spans(SERVICE, lambda s: mine(s) and tags_of(s).get("guard.batch_size") == 7,
                                count=1, since_us=since_us)
    spans = [s for s in jaeger.query.spans(SERVICE, since_us=since_us) if mine(s)]
    return spans, run_id


def guard_span(spans, **tags):
    found = [s for s in spans if s["operationName"] == GUARD_SPAN
             and all(tags_of(s).get(k) == v for k, v in tags.items())]
    assert len(found) == 1, f"expected one guard span with {tags}, got {len(found)}"
    return found[0]


def server_span(spans, **tags):
    found = [s for s in spans if s["operationName"].startswith("POST /predict")
             and all(tags_of(s).get(k) == v for k, v in tags.items())]
    assert len(found) == 1, f"expected one server span with {tags}, got {len(found)}"
    return found[0]


class TestJaegerEndToEnd:
    def test_every_anomaly_has_a_guard_span_and_ordinary_calls_annotate_the_server_span(self, traced):
        """Jaeger holds a guard span per anomalous call; the ordinary call added no span (span_mode auto)
        and its guard attributes are on BentoML's server span."""
        spans, _ = traced
        guards = [s for s in spans if s["operationName"] == GUARD_SPAN]
        assert sorted(tags_of(s)["guard.outcome"] for s in guards) == ["error", "invalid_input", "ok", "ok"]
        assert all(tags_of(s)["guard.anomalous"] is True for s in guards)
        assert {s["serviceName"] for s in guards} == {SERVICE}
        assert tags_of(server_span(spans, **{"guard.batch_size": 7}))["guard.latency_ms"] > 0

    def test_guard_spans_are_children_of_bentoml_server_spans(self, traced):
        """Each guard span's CHILD_OF reference points at BentoML's POST server span in the same trace."""
        spans, _ = traced
        by_id = {s["spanID"]: s for s in spans}
        for g in (s for s in spans if s["operationName"] == GUARD_SPAN):
            refs = [r for r in g["references"] if r["refType"] == "CHILD_OF"]
            assert len(refs) == 1
            parent = by_id[refs[0]["spanID"]]
            assert parent["traceID"] == g["traceID"]
            assert parent["operationName"].startswith("POST /predict")
            assert tags_of(parent)["span.kind"] == "server"
            assert tags_of(g)["span.kind"] == "internal"

    def test_documented_attributes_present(self, traced):
        """A normal call's (server) span carries the call's own guard.* attributes (compact); an anomalous
        call's guard span carries every documented one, the deployment's digest included."""
        spans, _ = traced
        tags = tags_of(server_span(spans, **{"guard.batch_size": 7}))
        assert set(ORDINARY) <= set(tags)
        assert tags["guard.model.name"] == "breast_cancer"
        for key in ("guard.anomalous", "guard.slo.violated", "guard.slo.latency_ms", "guard.artifact.digest",
                    "guard.edge.flagged", "guard.edge.policy", "guard.hardware.rss_mb", "guard.outcome",
                    "guard.model.version", "guard.request.latency_ms"):
            assert key not in tags, key  # compact: the deployment's constants and context on anomalies only
        assert "error" not in tags and tags["span.kind"] == "server"
        anomalous = [tags_of(s) for s in spans if s["operationName"] == GUARD_SPAN]
        anomalous = [t for t in anomalous if t["guard.outcome"] != "invalid_input"]  # those have no batch
        assert anomalous
        for t in anomalous:
            assert set(DOCUMENTED) <= set(t)
            assert t["guard.anomalous"] is True and t["guard.slo.latency_ms"] == 100.0
            assert len(t["guard.artifact.digest"]) == 64

    def test_flagged_call_carries_edge_verdict(self, traced):
        """The batch with a wrong-unit row is exported with its edge verdict: flagged row 1, explanation, anomalous."""
        spans, _ = traced
        tags = tags_of(guard_span(spans, **{"guard.batch_size": 5}))
        assert tags["guard.edge.flagged"] is True and tags["guard.edge.flagged_rows"] == 1
        assert tags["guard.anomalous"] is True and tags["guard.outcome"] == "ok"
        assert "mean_area" in tags["guard.edge.explanation"]
        assert tags["guard.edge.min_p_value"] < 0.01
        assert tags["guard.edge.policy"] == "flag" and tags["guard.hardware.rss_mb"] > 0  # full context
        assert "error" not in tags

    def test_slow_call_marked_violated(self, traced):
        """The 250 ms call breached the 100 ms budget: violated, anomalous, latency recorded."""
        spans, _ = traced
        tags = tags_of(guard_span(spans, **{"guard.batch_size": 3}))
        assert tags["guard.slo.violated"] is True and tags["guard.anomalous"] is True
        assert tags["guard.latency_ms"] >= 250

    def test_failing_call_carries_error_tags(self, traced):
        """The model failure is an error span in Jaeger: error=true, error.type, status message, exception log."""
        spans, _ = traced
        g = guard_span(spans, **{"guard.outcome": "error"})
        tags = tags_of(g)
        assert tags["error"] is True and tags["otel.status_code"] == "ERROR"
        assert tags["error.type"] == "RuntimeError" and "injected model failure" in tags["otel.status_description"]
        events = [{f["key"]: f["value"] for f in log["fields"]} for log in g["logs"]]
        assert any(e.get("event") == "exception" and e.get("exception.type") == "RuntimeError" for e in events)

    def test_invalid_input_carries_problem(self, traced):
        """The NaN input is an invalid_input span naming the row and feature."""
        spans, _ = traced
        tags = tags_of(guard_span(spans, **{"guard.outcome": "invalid_input"}))
        assert tags["error"] is True and tags["error.type"] == "InvalidInputError"
        assert "row 0, feature 5 (mean_compactness) is NaN" in tags["guard.input.problem"]
