"""Drift monitoring in the served example: two BentoML workers pool their windows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"

pytestmark = pytest.mark.integration
CLOSE = {"Connection": "close"}  # a new connection per request, so the workers share the traffic


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not (ARTIFACTS / "model.pkl").exists():
        from services import train

        train.train(ARTIFACTS)
    state = tmp_path_factory.mktemp("state")
    env = {"GUARDED_STATE_DIR": str(state), "GUARDED_WORKERS": "2", "GUARDED_DRIFT_INTERVAL_S": "0.2",
           "GUARDED_SKEW_FIRST_N": "100"}
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as srv:
        yield srv, state


def _stats_by_worker(url: str, want_rows: int, timeout: float = 20.0) -> dict[int, dict]:
    """Poll /guard/stats (a new connection each time) until two workers each report ``want_rows`` pooled rows."""
    seen: dict[int, dict] = {}

    def two_workers() -> bool:
        st = requests.get(url + "/guard/stats", headers=CLOSE, timeout=10).json()["drift"]
        if st.get("pooled_rows") == want_rows:
            seen[st["worker_pid"]] = st
        return len(seen) >= 2

    wait_until(two_workers, timeout, 0.05)
    return seen


def test_two_workers_pool_their_windows_and_name_the_shifted_feature(server):
    """Rows served by either worker land in one window: both report the pooled count; the shift is named."""
    srv, state = server
    ref = np.load(ARTIFACTS / "reference.npz")
    X, names = ref["X_test"], [str(n) for n in ref["feature_names"]]
    s = requests.Session()

    def post(i: int) -> int:
        return requests.post(srv.url + "/predict", json={"inputs": X[i:i + 4].tolist()}, headers=CLOSE,
                             timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        assert set(pool.map(post, range(0, 160, 4))) == {200}
    seen = _stats_by_worker(srv.url, 160)
    assert len(seen) == 2, f"expected two workers reporting 160 pooled rows, saw {seen}"
    # the workers' own flushes add up to 160, and each (even one that served fewer) sees all 160
    assert sum(v["flushed_rows"] for v in seen.values()) == 160
    h = s.get(srv.url + "/guard/health", timeout=10).json()["checks"]
    assert h["drift.features"]["status"] == "ok"
    assert h["drift.skew"]["status"] == "ok"

    # a shifted stream: mean radius offset by +2 training std
    j = names.index("mean_radius")
    Z = ref["X_train"][:400].copy()
    Z[:, j] += 2 * ref["X_train"][:, j].std()
    for i in range(0, len(Z), 8):
        assert s.post(srv.url + "/predict", json={"inputs": Z[i:i + 8].tolist()}, timeout=30).status_code == 200
    h = wait_until(lambda: s.get(srv.url + "/guard/health", timeout=10).json(), 30, 0.1,
                   until=lambda h: h["checks"]["drift.features"]["details"].get("pooled_rows") == 560)
    feats = h["checks"]["drift.features"]
    assert h["status"] == "degraded" and feats["status"] == "degraded"
    assert "mean_radius" in feats["details"]["drifted"]
    assert (state / "drift-breast_cancer.sqlite").exists()
