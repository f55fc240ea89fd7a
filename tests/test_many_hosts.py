"""Two hosts, one view: two separately started `bentoml serve` instances (two workers each, own state
directories) pool their drift windows through one real Redis, and a shift split across them is
detected after as many rows as on one host."""

from __future__ import annotations

import pytest

from tests.hosts import ARTIFACTS, detection_delay, serve_hosts

pytestmark = pytest.mark.integration
pytest.importorskip("redis", reason="the redis extra is not installed (pip install guarded-serving[redis])")


@pytest.fixture(scope="module")
def one_host(tmp_path_factory):
    """Shifted rows one host (two workers, its SQLite store) needed to name the shift."""
    if not (ARTIFACTS / "model.pkl").exists():
        from services.train import train

        train(ARTIFACTS)
    with serve_hosts(1, tmp_path_factory.mktemp("one"), store_url=None) as one:
        delay, _ = detection_delay(one)
    assert delay is not None, "one host never detected the shift"
    return delay


def test_two_hosts_detect_a_split_shift_as_fast_as_one_host(one_host, redis_url, redis_server, tmp_path):
    """A shift sent half to each of two hosts sharing Redis is named by both hosts' health after the
    same number of shifted rows as on one host (SQLite); the pooled total in Redis counts every row."""
    with serve_hosts(2, tmp_path / "two", store_url=redis_url) as two:
        two_hosts, got = detection_delay(two)
        assert two_hosts == one_host, f"two hosts detected after {two_hosts} shifted rows, one host after {one_host}"
        for url, h in got.items():
            feats = h["checks"]["drift.features"]
            assert feats["status"] == "degraded" and "mean_radius" in feats["reason"], (url, feats)
            store = h["checks"]["drift.store"]
            assert store["status"] == "ok" and store["reason"].startswith("Redis redis://127.0.0.1"), store
        total = int(redis_server.client().get("gs:{breast_cancer:1:drift}:c:total:breast_cancer:inputs"))
        assert total == 500 + two_hosts
        assert not list((tmp_path / "two").rglob("*.sqlite")), "a host wrote a local SQLite store"
    print(f"shift detected after {one_host} shifted rows on one host and {two_hosts} on two hosts "
          f"(half of the traffic each)")


def test_hosts_without_a_shared_store_see_half(one_host, tmp_path):
    """Without Redis (each host its own SQLite file) a split shift is diluted: each host pools only
    its own half, so it needs more shifted rows in all, or never names it within the run."""
    with serve_hosts(2, tmp_path / "two", store_url=None) as two:
        separate, _ = detection_delay(two, expect_total=False)
    assert separate is None or separate > one_host
    print(f"one host: {one_host} shifted rows; two hosts without a shared store: "
          f"{separate if separate is not None else 'not within 500'}")
