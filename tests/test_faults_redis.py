"""Redis faults under load, against the served example (two workers) and a real redis-server
(append-only, ``appendfsync always``) reached through a loopback proxy that can add latency:
Redis stopped mid-run, Redis SIGKILLed and restarted, a slow Redis, a wrong password.

Every test drives 1-row predictions and checks, once Redis is healthy again, that the rows
pooled in Redis are exactly the predictions answered: none lost, none counted twice."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until
from load_tests.client import drive
from tests.hosts import ARTIFACTS, ROOT
from tests.redis_server import BINARY, DelayProxy, RedisServer

pytestmark = pytest.mark.integration
pytest.importorskip("redis", reason="the redis extra is not installed (pip install guarded-serving[redis])")

TOTAL_KEY = "gs:{breast_cancer:1:drift}:c:total:breast_cancer:inputs"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(server, redis, proxy): the example on two workers, its store in Redis behind a delay proxy."""
    if BINARY is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    if not (ARTIFACTS / "model.pkl").exists():
        from services.train import train

        train(ARTIFACTS)
    with RedisServer(appendonly=True) as redis, DelayProxy(redis.port, 0.0) as proxy:
        env = {"GUARDED_ARTIFACT_DIR": str(ARTIFACTS), "GUARDED_STATE_DIR": str(tmp_path_factory.mktemp("state")),
               "GUARDED_WORKERS": "2", "GUARDED_DRIFT_INTERVAL_S": "0.2", "GUARDED_STORE_URL": proxy.url}
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
            yield server, redis, proxy


def _total(redis: RedisServer) -> int:
    c = redis.client()
    try:
        return int(c.get(TOTAL_KEY) or 0)
    finally:
        c.close()


def _store_check(server) -> dict:
    """The drift.store check of whichever worker answers ({} before its first drift cycle)."""
    return requests.get(server.url + "/guard/health", headers={"Connection": "close"},
                        timeout=10).json()["checks"].get("drift.store", {})


class _Load:
    """1-row predictions from a background thread until stopped; per-worker drift stats sampled meanwhile."""

    def __init__(self, server, seconds: float = 60) -> None:
        X = np.load(ARTIFACTS / "reference.npz")["X_test"]
        self.payloads = [{"inputs": X[i:i + 1].tolist()} for i in range(len(X))]
        self.stop = threading.Event()
        self.server = server
        self.result = None
        self.workers: dict[int, dict] = {}
        self._t = threading.Thread(target=self._run, args=(seconds,), daemon=True)

    def _run(self, seconds: float) -> None:
        self.result = drive(self.server.url + "/predict", self.payloads, seconds=seconds, concurrency=3,
                            stop=self.stop)

    def sample(self) -> dict:
        st = requests.get(self.server.url + "/guard/stats", headers={"Connection": "close"}, timeout=10).json()["drift"]
        self.workers[st["worker_pid"]] = st
        return st

    def __enter__(self) -> "_Load":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._t.join(60)


def _caught_up(server, redis: RedisServer, before: int, ok: int, timeout: float = 60) -> bool:
    return bool(wait_until(lambda: _total(redis) - before == ok, timeout, 0.1))


def test_redis_stopped_mid_run(stack):
    """Redis stops under load: every prediction succeeds, health names Redis as degraded with rows
    pending, and once Redis returns every answered row reaches it exactly once."""
    server, redis, proxy = stack
    before = _total(redis)
    with _Load(server) as load:
        assert wait_until(lambda: load.sample().get("pooled_rows", 0) > before, 30, 0.1)
        redis.stop()
        try:
            down = wait_until(lambda: (lambda c: c.get("status") == "degraded" and c)(_store_check(server)), 30, 0.1)
            pending = wait_until(lambda: load.sample()["pending_rows"], 30, 0.1)
        finally:
            redis.start()
        assert wait_until(lambda: _store_check(server).get("status") == "ok", 60, 0.1)
        time.sleep(1.0)  # some load after the outage, too
    res = load.result
    assert down, "health never reported the stopped Redis"
    assert f"Redis redis://127.0.0.1:{proxy.port}/0" in down["reason"] and "pending" in down["reason"], down
    assert pending > 0
    assert res.failures == 0, (res.statuses, res.exceptions)
    assert _caught_up(server, redis, before, res.ok), (_total(redis) - before, res.ok)
    stats = [load.sample() for _ in range(8)]
    dropped = sum(w["dropped_rows"] for w in load.workers.values())
    recovered = sum(w["recovered_rows"] for w in load.workers.values())
    assert dropped == 0 and all(s["pending_rows"] == 0 for s in stats)
    print(f"Redis stopped: {res.ok} predictions, {res.failures} failed; health: {down['reason']!r}; "
          f"{recovered} rows recovered after the outage, {dropped} dropped; pooled {_total(redis) - before}")


def test_redis_killed_and_restarted_with_append_only_file(stack):
    """Redis is SIGKILLed under load and restarted from its append-only file: nothing it acknowledged
    is lost, nothing is appended twice, and every prediction succeeds."""
    server, redis, _ = stack
    before = _total(redis)
    with _Load(server) as load:
        assert wait_until(lambda: load.sample().get("pooled_rows", 0) > before + 50, 30, 0.1)
        acknowledged = _total(redis)
        redis.kill()
        redis.start()  # from the append-only file
        assert _total(redis) >= acknowledged, "rows Redis acknowledged before the kill are gone"
        assert wait_until(lambda: _total(redis) > acknowledged + 50, 30, 0.1)
    res = load.result
    assert res.failures == 0, (res.statuses, res.exceptions)
    assert _caught_up(server, redis, before, res.ok), (_total(redis) - before, res.ok)
    print(f"Redis SIGKILLed and restarted: {res.ok} predictions, {res.failures} failed; {acknowledged - before} "
          f"rows acknowledged before the kill, all there after it; pooled {_total(redis) - before}")


def test_slow_redis(stack):
    """Every Redis reply delayed by 2 x 150 ms: predictions all succeed, the store check stays ok and
    rows keep arriving (the request path never waits for Redis)."""
    server, redis, proxy = stack
    X = np.load(ARTIFACTS / "reference.npz")["X_test"]
    url = server.url + "/predict"
    payloads = [{"inputs": X[i:i + 1].tolist()} for i in range(len(X))]
    start = _total(redis)
    fast = drive(url, payloads, seconds=3, concurrency=3)
    assert _caught_up(server, redis, start, fast.ok)
    before = _total(redis)
    proxy.delay_s = 0.15
    try:
        slow = drive(url, payloads, seconds=6, concurrency=3)
        assert _total(redis) > before, "no rows reached the slow Redis during the run"
        check = _store_check(server)
    finally:
        proxy.delay_s = 0.0
    assert fast.failures == 0 and slow.failures == 0, (slow.statuses, slow.exceptions)
    assert check.get("status") == "ok", check
    assert _caught_up(server, redis, before, slow.ok)
    print(f"slow Redis (+300 ms per round trip): p50 {fast.p50_ms:.1f} -> {slow.p50_ms:.1f} ms, "
          f"p99 {fast.p99_ms:.1f} -> {slow.p99_ms:.1f} ms, {slow.ok} predictions, 0 failed")


def test_wrong_password_stops_the_server_at_start(tmp_path):
    """A Redis that refuses the password: the service's startup fails (BentoML: "Application startup
    failed") with an error naming the setting, never serving, and the password is not printed."""
    if BINARY is None:
        pytest.skip("redis-server is not installed")
    with RedisServer(password="right-one") as redis:
        env = {"GUARDED_ARTIFACT_DIR": str(ARTIFACTS), "GUARDED_STATE_DIR": str(tmp_path),
               "GUARDED_STORE_URL": redis.url_with("not-the-password")}
        server = BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT)
        try:
            with pytest.raises((RuntimeError, TimeoutError)) as ei:  # exits, or keeps failing its workers
                server.start(timeout=60)
        finally:
            server.stop()
    msg = str(ei.value)
    assert "ConfigError" in msg and "drift_store" in msg and "refused the credentials" in msg, msg[-3000:]
    assert "not-the-password" not in msg
