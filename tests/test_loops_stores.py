"""The loop component's store: two guards pooling through Redis (the many-hosts store), and a store that
fails: health says so, the answers stay buffered and reach the store once it recovers."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving import Guard
from guarded_serving.feedback_loops.component import LoopComponent
from guarded_serving.store.sqlite import SQLiteWindowStore


def _recommend(g):
    @g
    def recommend(user: int, items: list) -> dict:
        return {"items": items}

    return recommend


@pytest.mark.integration  # starts a private redis-server
def test_two_guards_pool_through_redis(redis_url):
    """Lists answered by guards on two 'hosts' pool in one Redis: both read all of them, in the same windows."""
    pytest.importorskip("redis")
    guards = [Guard(name="songs", loop_check=True, loop_store=redis_url, loop_window=30, loop_interval_s=3600.0,
                    loop_user_field="user") for _ in range(2)]
    recs = [_recommend(g) for g in guards]
    rng = np.random.default_rng(0)
    try:
        for i in range(100):
            recs[i % 2](user=int(rng.integers(20)), items=[int(x) for x in rng.choice(60, 8, replace=False)])
        for g in guards:
            g.component("feedback_loops").flush()
        stats = []
        for g in guards:
            g.component("feedback_loops").run_once()
            stats.append(g.component("feedback_loops").stats())
        assert [s["pooled_lists_read"] for s in stats] == [100, 100]
        assert [h["gini"] for h in stats[0]["history"]] == [h["gini"] for h in stats[1]["history"]]
        assert stats[0]["windows"] == 3 and "Redis" in stats[0]["store"]
    finally:
        for g in guards:
            g.stop()


class _FlakyStore(SQLiteWindowStore):
    fail = True

    def append_batches(self, batches):  # type: ignore[no-untyped-def]
        if self.fail:
            raise ConnectionError("store unreachable")
        return super().append_batches(batches)


def test_a_failing_store_is_reported_and_answers_are_retried(tmp_path):
    store = _FlakyStore(tmp_path / "loops.sqlite")
    comp = LoopComponent(store=store, window=10, interval_s=3600.0)
    g = Guard(name="songs", components=[comp])
    rec = _recommend(g)
    try:
        for i in range(25):
            rec(user=i, items=[i % 7, (i + 1) % 7, (i + 2) % 7])
        with pytest.raises(ConnectionError):
            comp._cycle()
        check = g.health()["checks"]["loop.store"]
        assert check["status"] == "degraded" and "store unreachable" in check["reason"]
        assert comp.stats()["pending_lists"] == 25 and comp.stats()["dropped"] == 0  # nothing lost
        store.fail = False
        comp.run_once()
        assert g.health()["checks"]["loop.store"]["status"] == "ok"
        assert comp.stats()["pooled_lists_read"] == 25 and comp.stats()["windows"] == 2
    finally:
        g.stop()
