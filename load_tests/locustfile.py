"""Locust load against a served example's POST /predict (guarded or unguarded twin).

Headless, loopback only, bounded in time::

    locust -f load_tests/locustfile.py --headless -u 8 -r 8 -t 20s \
        --host http://127.0.0.1:3000 --only-summary

Each simulated user posts one row of 30 features from the example's test split
(services/artifacts/reference.npz; a fixed synthetic row if it is missing) with no
wait time, so the server runs flat out. ``GUARDED_LOAD_ROWS`` sets rows per request
(default 1). load_tests/compare_throughput.py runs this file with ``--driver locust``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from locust import FastHttpUser, constant, task

_REF = Path(__file__).resolve().parent.parent / "services" / "artifacts" / "reference.npz"


def _payload() -> bytes:
    n = int(os.environ.get("GUARDED_LOAD_ROWS", "1"))
    try:
        import numpy as np

        rows = np.load(_REF)["X_test"][:n].tolist()
    except OSError:
        rows = [[0.5] * 30 for _ in range(n)]
    return json.dumps({"inputs": rows}).encode()


PAYLOAD = _payload()


class PredictUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        with self.client.post("/predict", data=PAYLOAD, headers={"content-type": "application/json"},
                              catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
