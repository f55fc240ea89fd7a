"""The caller's latency: under concurrency the guard counts the queueing in front of the model."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_queueing_counted_in_the_request_time(artifacts, tmp_path):
    """12 concurrent 60 ms calls on one worker queue for it: the model time stays under the 150 ms
    budget, the request time (arrival to answer) does not, and the SLO counts the latter."""
    X = np.load(artifacts / "reference.npz")["X_test"][:1].tolist()
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_LATENCY_SLO_MS": "150",
           "GUARDED_STATE_DIR": str(tmp_path)}
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
        def call(_: int) -> int:
            return requests.post(f"{server.url}/predict_chaos", data=json.dumps({"inputs": X, "delay_ms": 60}),
                                 headers={"content-type": "application/json"}, timeout=60).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(call, range(24)))
        assert codes == [200] * 24
        stats = requests.get(f"{server.url}/guard/stats", timeout=10).json()
    lat, model = stats["latency_ms"], stats["model_latency_ms"]
    assert lat["measure"] == "request"
    assert model["p99"] < 150, model  # every model call met the budget ...
    assert lat["max"] > 150 and stats["slo_violations"] > 0, (lat, stats["slo_violations"])  # ... callers waited
    assert lat["p50"] > model["p50"] + 20
