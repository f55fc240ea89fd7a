"""Feedback on the served example: request ids, the token, bulk labels across two workers, kill -9."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.store.outcomes import SQLiteOutcomeStore
from guarded_serving.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"
TOKEN = "test-feedback-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLOSE = {"Connection": "close"}  # a new connection per request, so both workers get traffic

pytestmark = pytest.mark.integration


def _server(state: Path, port: int) -> BentoServer:
    env = {"GUARDED_STATE_DIR": str(state), "GUARDED_WORKERS": "2", "GUARDED_FEEDBACK_TOKEN": TOKEN,
           "GUARDED_PERFORMANCE_INTERVAL_S": "0.2", "GUARDED_EXPECT_ACCURACY": "0.9"}
    return BentoServer("services.cancer:CancerClassifier", port, env=env, cwd=ROOT)


def _store_counts(url: str) -> dict:
    return requests.get(url + "/guard/stats", headers=CLOSE, timeout=10).json()["performance"]["store"]


def test_labels_join_their_predictions_and_survive_kill_9(tmp_path):
    """Ids come back in the header and the JSON; feedback needs the token; bulk labels are kept (bad items named,
    the rest stored), joined across workers, judged in health, and still there after kill -9 and a restart."""
    if not (ARTIFACTS / "model.pkl").exists():
        from services import train

        train.train(ARTIFACTS)
    ref = np.load(ARTIFACTS / "reference.npz")
    X, y = ref["X_test"], ref["y_test"]
    port = free_port()
    server = _server(tmp_path, port).start()
    try:
        r = requests.post(server.url + "/predict", json={"inputs": X[:4].tolist()}, headers=CLOSE, timeout=30)
        assert r.status_code == 200 and r.headers["X-Request-Id"] == r.json()["request_id"]

        body = {"request_id": r.json()["request_id"], "label": y[:4].tolist()}
        assert requests.post(server.url + "/guard/feedback", json=body, timeout=10).status_code == 401
        assert requests.post(server.url + "/guard/feedback", json=body, timeout=10,
                             headers={"Authorization": "Bearer wrong"}).status_code == 401

        items = [body]
        for i in range(4, 64):
            resp = requests.post(server.url + "/predict", json={"inputs": X[i:i + 1].tolist()}, headers=CLOSE,
                                 timeout=30)
            items.append({"request_id": resp.headers["X-Request-Id"], "label": int(y[i]),
                          "source": "model" if i % 2 else "organic"})  # where each label came from
        bad = [{"request_id": items[1]["request_id"], "label": "benign"},          # wrong type
               {"request_id": items[2]["request_id"], "label": 1 - items[2]["label"]},  # contradicts (same batch)
               {"request_id": "not-an-id", "label": 1},
               {"request_id": items[3]["request_id"], "label": 1, "source": "not a tag"}]
        out = requests.post(server.url + "/guard/feedback", json={"items": items + bad}, headers={**AUTH, **CLOSE},
                            timeout=30)
        assert out.status_code == 422, out.text  # mixed problems: 422, with every item's result
        res = out.json()
        assert res["kept"] == 64 and res["rejected"] == 4
        assert [x["http_status"] for x in res["results"][-4:]] == [422, 409, 400, 400]
        assert items[1]["request_id"] in res["results"][-4]["message"]
        assert res["results"][-1]["message"].startswith(f"item {len(items) + 3} (request {items[3]['request_id']})")
        assert "source 'not a tag' is invalid" in res["results"][-1]["message"]

        # every label joins its prediction, whichever worker served it
        assert wait_until(lambda: _store_counts(server.url), 60, 0.1,
                          until=lambda c: c["labels"] == 64 and c["pending"] == 0)
        h = wait_until(lambda: requests.get(server.url + "/guard/health", headers=CLOSE, timeout=10).json(), 30, 0.1,
                       until=lambda h: "on 64 labels" in h["checks"]["performance.accuracy"]["reason"])
        acc = h["checks"]["performance.accuracy"]
        assert acc["status"] == "ok" and "expectation 0.9" in acc["reason"]
        assert "CBPE" in h["checks"]["performance.estimate"]["reason"]

        server.kill(signal.SIGKILL)
        server.proc.wait(10)
    finally:
        server.stop()
    server = _server(tmp_path, port).start()
    try:
        assert _store_counts(server.url)["labels"] == 64
        (path,) = tmp_path.glob("outcomes-*.sqlite")  # the tags were stored with the labels
        st = SQLiteOutcomeStore(path)
        sources = [r[9] for r in st.outcomes_after(0, 100)]
        st.close()
        assert sources.count("model") == 30 and sources.count("organic") == 30 and sources.count(None) == 4
        again = requests.post(server.url + "/guard/feedback", json=items[5], headers=AUTH, timeout=10)
        assert again.status_code == 200 and again.json()["status"] == "unchanged"
    finally:
        server.stop()
