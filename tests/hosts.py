"""Several served "hosts" of the example (each a separate ``bentoml serve`` with its own workers
and state directory), traffic split across them, and the detection delay of a shift, in rows.

Used by tests/test_many_hosts.py and load_tests/bench_many_hosts.py.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"
CLOSE = {"Connection": "close"}  # a new connection per request: BentoML's workers share the traffic

__all__ = ["ARTIFACTS", "detection_delay", "health", "pooled", "send", "serve_hosts"]


@contextlib.contextmanager
def serve_hosts(n: int, state_root: Path, *, store_url: str | None, workers: int = 2,
                env: dict[str, str] | None = None) -> Iterator[list[BentoServer]]:
    """``n`` separately started servers of the example, ``workers`` workers each, own state
    directories, one Redis (``store_url``) or each its own SQLite file (``None``); started in parallel."""
    servers = []
    for i in range(n):
        e = {"GUARDED_ARTIFACT_DIR": str(ARTIFACTS), "GUARDED_STATE_DIR": str(state_root / f"host{i}"),
             "GUARDED_WORKERS": str(workers), "GUARDED_DRIFT_INTERVAL_S": "0.2", "GUARDED_SKEW_FIRST_N": "100",
             **(env or {})}
        if store_url:
            e["GUARDED_STORE_URL"] = store_url
        servers.append(BentoServer("services.cancer:CancerClassifier", free_port(), env=e, cwd=ROOT))
    errors: list[BaseException] = []

    def start(s: BentoServer) -> None:
        try:
            s.start(timeout=180)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield servers
    finally:
        for s in servers:
            s.stop()
            s._tmp.cleanup()


def health(server: BentoServer) -> dict:
    return requests.get(server.url + "/guard/health", headers=CLOSE, timeout=10).json()


def pooled(server: BentoServer) -> int | None:
    """Pooled rows in the latest window test of whichever worker answers."""
    return health(server)["checks"].get("drift.features", {}).get("details", {}).get("pooled_rows")


def send(servers: Sequence[BentoServer], rows: np.ndarray, per_request: int = 5) -> None:
    """POST ``rows`` in requests of ``per_request`` rows, alternating over ``servers`` (half to each of two)."""
    for k, i in enumerate(range(0, len(rows), per_request)):
        s = servers[k % len(servers)]
        r = requests.post(s.url + "/predict", json={"inputs": rows[i:i + per_request].tolist()}, headers=CLOSE,
                          timeout=30)
        assert r.status_code == 200, r.text


def wait_pooled(servers: Sequence[BentoServer], total: int, timeout: float = 60.0) -> dict[str, dict]:
    """Wait until every server's answering worker tested a window of ``total`` pooled rows; their health."""
    out: dict[str, dict] = {}

    def all_there() -> bool:
        for s in servers:
            if s.url not in out:
                h = health(s)
                if h["checks"].get("drift.features", {}).get("details", {}).get("pooled_rows") == total:
                    out[s.url] = h
        return len(out) == len(servers)

    if not wait_until(all_there, timeout, 0.05):
        raise AssertionError(f"not every host pooled {total} rows within {timeout} s: "
                             f"{[pooled(s) for s in servers]}")
    return out


def detection_delay(servers: Sequence[BentoServer], *, feature: str = "mean_radius", shift_std: float = 1.0,
                    step: int = 20, before: int = 500, max_steps: int = 25, seed: int = 0,
                    expect_total: bool = True) -> tuple[int | None, dict[str, dict]]:
    """Send ``before`` stationary rows, then shifted rows (``feature`` + ``shift_std`` training std) in
    steps of ``step`` rows split over ``servers``, waiting after each step until every host pooled it.

    Returns the number of shifted rows sent when every host's drift.features first named ``feature``
    (None if it never did), and the hosts' health at that point. With ``expect_total=False`` (hosts
    that do not share a store) each host waits for its own share instead of the total.
    """
    ref = np.load(ARTIFACTS / "reference.npz")
    names = [str(n) for n in ref["feature_names"]]
    X = ref["X_train"]
    rng = np.random.default_rng(seed)
    j = names.index(feature)
    sd = X[:, j].std()
    sent = 0
    per_host = dict.fromkeys(range(len(servers)), 0)

    def push(rows: np.ndarray) -> dict[str, dict]:
        nonlocal sent
        send(servers, rows)
        for k in range(0, len(rows), 5):
            per_host[(k // 5) % len(servers)] += len(rows[k:k + 5])
        sent += len(rows)
        if expect_total:
            return wait_pooled(servers, sent)
        out: dict[str, dict] = {}
        for i, s in enumerate(servers):
            out.update(wait_pooled([s], per_host[i]))
        return out

    for _ in range(before // step):
        push(X[rng.integers(0, len(X), step)])
    for k in range(1, max_steps + 1):
        Z = X[rng.integers(0, len(X), step)].copy()
        Z[:, j] += shift_std * sd
        got = push(Z)
        named = [feature in h["checks"]["drift.features"]["details"].get("drifted", ()) for h in got.values()]
        if all(named):
            return k * step, got
    return None, {}
