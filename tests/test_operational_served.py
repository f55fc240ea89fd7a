"""Readiness over HTTP against the served example: a downstream outage and a pinned dependency mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until
from services.feature_store import FeatureStore

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration


def _wait(url, check, status, ready_code, timeout=30.0):
    """Poll /guard/health and /readyz until ``check`` has ``status`` and /readyz answers ``ready_code``."""

    def probe() -> tuple[dict, int]:
        c = requests.get(f"{url}/guard/health", timeout=10).json()["checks"].get(check, {})
        return c, requests.get(f"{url}/readyz", timeout=10).status_code

    return wait_until(probe, timeout, 0.2, until=lambda got: got[0].get("status") == status and got[1] == ready_code)


@pytest.fixture(scope="module")
def artifacts():
    d = ROOT / "services" / "artifacts"
    if not (d / "model.pkl").exists():
        from services import train

        train.train(d)
    return d


def test_downstream_outage_turns_readyz_503_and_recovers(artifacts):
    """Stopping the feature store makes /readyz 503 with the reason in /guard/health; restarting it recovers."""
    with FeatureStore(free_port()) as fs:
        env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_DEPENDENCIES": "[]",
               "GUARDED_PROBES": json.dumps([{"name": "feature_store", "url": fs.url}]),
               "GUARDED_PROBE_INTERVAL_S": "0.3", "GUARDED_PROBE_BACKOFF_MAX_S": "1"}
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
            c, code = _wait(server.url, "downstream.feature_store", "ok", 200)
            assert (c["status"], code) == ("ok", 200)
            fs.stop()
            c, code = _wait(server.url, "downstream.feature_store", "failing", 503)
            assert (c["status"], code) == ("failing", 503)
            assert "connection refused" in c["reason"]
            health = requests.get(f"{server.url}/guard/health", timeout=10)
            assert health.status_code == 503 and "hardware.memory" in health.json()["checks"]
            fs.start()
            c, code = _wait(server.url, "downstream.feature_store", "ok", 200)
            assert (c["status"], code) == ("ok", 200)


def test_pinned_dependency_mismatch_is_not_ready(artifacts):
    """A service pinned to a numpy version that is not installed answers /readyz 503 naming both versions."""
    env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_DEPENDENCIES": json.dumps({"numpy": "1.0.0"})}
    server = BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT)
    try:
        server.start(ready_status=503)
        c, code = _wait(server.url, "dependency.numpy", "failing", 503)
        assert code == 503 and "1.0.0" in c["reason"] and c["details"]["found"] not in (None, "1.0.0")
        ok = requests.post(f"{server.url}/predict", json={"inputs": [[0.0] * 30]}, timeout=10)
        assert ok.status_code == 200  # not ready for new traffic, still answers what reaches it
    finally:
        server.stop()
        server._tmp.cleanup()
