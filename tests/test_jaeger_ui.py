"""The real Jaeger UI (v1.76.0, from ../shared/jaeger-ui) shows a guarded request's trace in headless Chromium."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port
from tests.browser import CHROMIUM, artifact_dir, dump_dom, screenshot
from tests.conftest import ROOT
from tests.jaeger import PrivateJaeger, ui_source

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
    pytest.mark.skipif(ui_source() is None, reason="no Jaeger UI assets: set GUARDED_JAEGER_UI or put the built UI "
                                                   "in ../shared/jaeger-ui/ (Jaeger built from the Go module embeds "
                                                   "only a placeholder page)"),
]

SERVICE = "CancerClassifier"
GUARD_SPAN = "guard breast_cancer"


@pytest.fixture(scope="module")
def trace(artifacts, tmp_path_factory):
    """(jaeger, trace id, spans): one flagged request to the example, traced to a Jaeger that serves its UI."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    since_us = int(time.time() * 1e6) - 1_000_000
    with PrivateJaeger(ui=ui_source()) as jaeger:
        env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": jaeger.traces_endpoint,
               "OTEL_BSP_SCHEDULE_DELAY": "100", "GUARDED_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
            odd = X[:3].copy()
            odd[1, 3] *= 1000  # an edge case: the span carries the flag and its explanation
            r = requests.post(f"{server.url}/predict", json={"inputs": odd.tolist()}, timeout=30)
            assert r.status_code == 200
            spans = jaeger.query.wait_spans(SERVICE, lambda s: s["operationName"] == GUARD_SPAN, since_us=since_us)
        assert spans, "no guard span reached Jaeger"
        trace_id = spans[0]["traceID"]
        yield jaeger, trace_id, jaeger.query.spans(SERVICE, since_us=since_us)


class TestJaegerUI:
    def test_jaeger_serves_the_real_ui(self, trace):
        """/ answers the built UI's index.html (not the placeholder page of a Jaeger without assets)."""
        jaeger, _, _ = trace
        html = requests.get(jaeger.ui_url + "/", timeout=10).text
        assert "static/index-" in html and "placeholder" not in html.lower()

    def test_trace_page_renders_the_guard_span_and_its_parent(self, trace):
        """The trace page, rendered by Chromium, lists the guard span under BentoML's POST /predict span."""
        jaeger, trace_id, spans = trace
        guard = next(s for s in spans if s["operationName"] == GUARD_SPAN and s["traceID"] == trace_id)
        by_id = {s["spanID"]: s for s in spans}
        parent = by_id[guard["references"][0]["spanID"]]["operationName"]
        url = f"{jaeger.ui_url}/trace/{trace_id}"
        dom = dump_dom(url)
        assert GUARD_SPAN in dom, dom[-2000:]
        assert parent in dom and parent.startswith("POST /predict")
        assert SERVICE in dom
        shot = screenshot(url, artifact_dir() / "jaeger-trace.png", size=(1600, 1000))
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one

    def test_span_detail_shows_the_guard_attributes(self, trace):
        """With the guard span expanded (?uiFind selects it), its guard.* tags are on the page."""
        jaeger, trace_id, spans = trace
        guard = next(s for s in spans if s["operationName"] == GUARD_SPAN and s["traceID"] == trace_id)
        url = f"{jaeger.ui_url}/trace/{trace_id}?uiFind={guard['spanID']}"
        dom = dump_dom(url)
        assert GUARD_SPAN in dom and "guard.anomalous" in dom and "guard.artifact.digest" in dom, dom[-3000:]
        screenshot(url, artifact_dir() / "jaeger-guard-span.png", size=(1600, 1000))
