"""The drift component on a Redis store: pooling across guards, Redis down and back, bounded
pending rows, credentials checked at start. In process, against a real redis-server."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving import ConfigError, Guard
from guarded_serving.testing import free_port, wait_until
from tests.redis_server import RedisServer

pytest.importorskip("redis", reason="the redis extra is not installed (pip install guarded-serving[redis])")

NAMES = ["f0", "f1", "f2"]


@pytest.fixture
def reference(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3))
    path = tmp_path / "ref.npz"
    np.savez(path, X_train=X, pred_train=1 / (1 + np.exp(-X[:, 0])), feature_names=np.array(NAMES))
    return X, path


def _guard(path, store, **kw):
    g = Guard(name="t", version="1", drift=True, drift_reference=str(path), drift_store=store,
              drift_interval_s=0.1, drift_min_samples=50, **kw)

    @g
    def predict(inputs):
        return {"probability": (1 / (1 + np.exp(-inputs[:, 0]))).tolist()}

    return g, predict


def _stats(g):
    return g.component("drift").stats()


def _store_check(g):
    return g.health()["checks"].get("drift.store", {})


class TestPooling:
    def test_two_guards_pool_one_window(self, reference, redis_url, redis_server):
        """Two guards of one model (two processes, two hosts) see each other's rows through Redis."""
        X, path = reference
        (a, pa), (b, pb) = _guard(path, redis_url), _guard(path, redis_url)
        try:
            for i in range(10):
                pa(X[i * 10:(i + 1) * 10])
                pb(X[500 + i * 10:500 + (i + 1) * 10])
            assert wait_until(lambda: _stats(a).get("pooled_rows") == 200 and _stats(b).get("pooled_rows") == 200,
                              20, 0.05)
            assert int(redis_server.client().get("gs:{t:1:drift}:c:total:t:inputs")) == 200
            assert _store_check(a)["status"] == "ok" and "Redis redis://127.0.0.1" in _store_check(a)["reason"]
        finally:
            a.stop()
            b.stop()

    def test_store_url_from_the_environment(self, reference, redis_url, monkeypatch):
        """drift_store=None with $GUARDED_STORE_URL set pools in that Redis."""
        monkeypatch.setenv("GUARDED_STORE_URL", redis_url)
        X, path = reference
        g, predict = _guard(path, None)
        try:
            predict(X[:30])
            assert wait_until(lambda: _stats(g).get("pooled_rows") == 30, 20, 0.05)
            assert _stats(g)["store"].startswith("Redis ")
        finally:
            g.stop()


class TestFaults:
    def test_redis_down_then_back_loses_nothing(self, reference):
        """Redis stops: calls still succeed, health names Redis as degraded, rows wait pending;
        Redis returns (append-only file): every row arrives exactly once and health is ok again."""
        X, path = reference
        with RedisServer(appendonly=True) as server:
            g, predict = _guard(path, server.url)
            try:
                predict(X[:40])
                assert wait_until(lambda: _stats(g).get("pooled_rows") == 40, 20, 0.05)
                server.stop()
                for i in range(20):
                    predict(X[40 + i * 5:45 + i * 5])  # every call answers while Redis is down
                down = wait_until(lambda: (lambda c: c.get("status") == "degraded" and c)(_store_check(g)), 20, 0.05)
                assert down and f"Redis redis://127.0.0.1:{server.port}/0" in down["reason"], down
                assert "pending" in down["reason"]
                assert wait_until(lambda: _stats(g)["pending_rows"] == 100, 20, 0.05)
                server.start()
                assert wait_until(lambda: _stats(g).get("pooled_rows") == 140, 30, 0.05), _stats(g)
                st = _stats(g)
                assert st["pending_rows"] == 0 and st["dropped_rows"] == 0 and st["recovered_rows"] == 100
                assert wait_until(lambda: _store_check(g).get("status") == "ok", 20, 0.05)
                assert int(server.client().get("gs:{t:1:drift}:c:total:t:inputs")) == 140
            finally:
                g.stop()

    def test_pending_rows_are_bounded_and_drops_counted(self, reference):
        """With Redis down, buffered and pending rows stay within their bounds, the oldest are
        dropped and counted, and sent + dropped accounts for every row once Redis is back."""
        X, path = reference
        with RedisServer() as server:
            g, predict = _guard(path, server.url, drift_buffer_rows=50)
            try:
                predict(X[:10])
                assert wait_until(lambda: _stats(g).get("pooled_rows") == 10, 20, 0.05)
                server.stop()
                for i in range(40):
                    predict(X[i * 5:(i + 1) * 5])
                    st = _stats(g)
                    assert st["buffered_rows"] <= 50 and st["pending_rows"] <= 50
                assert wait_until(lambda: _stats(g)["dropped_rows"] > 0, 20, 0.05)
                assert wait_until(lambda: _store_check(g).get("status") == "degraded", 20, 0.05)
                server.start()  # no persistence: the store starts empty
                assert wait_until(lambda: _stats(g)["pending_rows"] == 0 and _stats(g)["buffered_rows"] == 0
                                  and _store_check(g).get("status") == "ok", 30, 0.05)
                st = _stats(g)
                assert st["pooled_rows"] + st["dropped_rows"] == 200
            finally:
                g.stop()

    def test_wrong_password_is_a_clear_error_at_start(self, reference):
        """A refused password stops the guard at start with a ConfigError naming the setting (and not
        the password)."""
        _, path = reference
        with RedisServer(password="right") as server:
            g, _ = _guard(path, server.url_with("wrong"))
            with pytest.raises(ConfigError, match=r"drift_store.*refused the credentials") as e:
                g.start()
            assert "wrong" not in str(e.value)
            g.stop()

    def test_redis_down_at_start_is_not_fatal(self, reference):
        """A Redis that is not up yet at start is not a configuration error: health says so, and
        pooling begins when it comes up."""
        X, path = reference
        port = free_port()
        g, predict = _guard(path, f"redis://127.0.0.1:{port}/0")
        try:
            g.start()
            predict(X[:20])
            assert wait_until(lambda: _store_check(g).get("status") == "degraded", 20, 0.05)
            assert f"127.0.0.1:{port}" in _store_check(g)["reason"]
            with RedisServer(port=port):
                assert wait_until(lambda: _stats(g).get("pooled_rows") == 20, 30, 0.05), _stats(g)
        finally:
            g.stop()
