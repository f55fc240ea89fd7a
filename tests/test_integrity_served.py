"""The example service (services/cancer.py) under ``bentoml serve`` with a deployment manifest."""

from __future__ import annotations

import shutil

import pytest
import requests

from guarded_serving.integrity.hashing import sha256_file
from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until

from tests.integrity_helpers import ROOT, deployment, flip_byte, trained

pytestmark = pytest.mark.integration


def _server(d):
    env = {"GUARDED_ARTIFACT_DIR": str(d), "GUARDED_INTEGRITY_INTERVAL_S": "0.5"}
    return BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT)


def test_refuses_to_start_against_a_tampered_artifact(tmp_path):
    """bentoml serve exits before serving when a byte of the model differs, naming the file and digests."""
    d = deployment(tmp_path / "d")
    expected = sha256_file(d / "model.pkl").sha256
    flip_byte(d / "model.pkl")
    found = sha256_file(d / "model.pkl").sha256
    server = _server(d)
    try:
        with pytest.raises(RuntimeError, match="bentoml serve exited") as ei:
            server.start(timeout=90)
    finally:
        server.stop()
    msg = str(ei.value)
    assert "IntegrityError" in msg and "model.pkl: modified" in msg and expected in msg and found in msg


def test_starts_on_the_right_artifacts_and_fails_readiness_when_replaced(tmp_path):
    """Against matching artifacts it serves with the digest in health; a model swapped in place makes it not ready."""
    d = deployment(tmp_path / "d")
    with _server(d) as server:
        r = requests.post(f"{server.url}/predict", json={"inputs": [[1.0] * 30]}, timeout=30)
        assert r.status_code == 200
        h = requests.get(f"{server.url}/guard/health", timeout=10).json()
        art = h["checks"]["integrity.artifacts"]
        assert art["status"] == "ok" and len(art["details"]["digest"]) == 64
        assert art["details"]["manifest_version"] == "1"
        shutil.copy(trained(1) / "model.pkl", d / "model.pkl")
        wait_until(lambda: requests.get(f"{server.url}/readyz", timeout=10).status_code == 503, 30, 0.2)
        assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 503
        h = requests.get(f"{server.url}/guard/health", timeout=10).json()
        (mm,) = h["checks"]["integrity.artifacts"]["details"]["mismatches"]
        assert mm["path"] == "model.pkl" and mm["found"]["sha256"] == sha256_file(trained(1) / "model.pkl").sha256
