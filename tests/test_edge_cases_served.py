"""The three edge-case policies end to end over HTTP against the served example (real `bentoml serve`)."""

from pathlib import Path

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rows():
    if not (ARTIFACTS / "profile.npz").exists():
        from services import train

        train.train(ARTIFACTS)
    ref = np.load(ARTIFACTS / "reference.npz")
    X = ref["X_test"][:4].copy()
    X[1, 3] *= 1000  # mean_area in the wrong unit
    return X


def _serve(policy):
    return BentoServer("services.cancer:CancerClassifier", free_port(), cwd=ROOT,
                       env={"GUARDED_EDGE_POLICY": policy, "GUARDED_ARTIFACT_DIR": str(ARTIFACTS)})


def test_flag_reject_fallback_over_http(rows):
    """flag serves with an X-Guard-Edge verdict, reject answers 422 with the reason, fallback abstains on row 1."""
    with _serve("flag") as s:
        r = requests.post(f"{s.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
        assert r.status_code == 200 and len(r.json()["label"]) == 4
        assert r.headers["X-Guard-Edge"].startswith("flagged; rows=1;")
        assert "mean_area=" in r.headers["X-Guard-Edge-Reason"]
        ok = requests.post(f"{s.url}/predict", json={"inputs": rows[[0]].tolist()}, timeout=30)
        assert ok.headers["X-Guard-Edge"] == "ok"
        stats = requests.get(f"{s.url}/guard/stats", timeout=10).json()["edge_cases"]
        assert stats["rows_flagged"] == 1 and stats["policy"] == "flag"
    with _serve("reject") as s:
        r = requests.post(f"{s.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
        assert r.status_code == 422 and "mean_area=" in r.text and "above every training value" in r.text
        assert requests.get(f"{s.url}/guard/stats", timeout=10).json()["rejected"] == 1
    with _serve("fallback") as s:
        r = requests.post(f"{s.url}/predict", json={"inputs": rows.tolist()}, timeout=30)
        body = r.json()
        assert r.status_code == 200 and body["label"][1] == -1 and body["probability"][1] is None
        assert all(lbl in (0, 1) for i, lbl in enumerate(body["label"]) if i != 1)
