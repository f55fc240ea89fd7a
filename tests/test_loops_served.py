"""The recommender example served by a real `bentoml serve --workers 2` on 127.0.0.1: exposure pooled across
both workers, the plays endpoint (token, 4xx naming the field), and a feedback loop forming caught by the alarm."""

from pathlib import Path

import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until
from services.replay import recommender_loop

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "loop-test-token"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    env = {"GUARDED_STATE_DIR": str(tmp_path_factory.mktemp("state-songs")), "GUARDED_WORKERS": "2",
           "GUARDED_FEEDBACK_TOKEN": TOKEN, "GUARDED_RETRAIN_ON_PLAYS": "1", "GUARDED_LOOP_WINDOW": "100",
           "GUARDED_LOOP_INTERVAL_S": "0.3"}
    with BentoServer("services.recommender:SongService", free_port(), cwd=ROOT, env=env) as server:
        yield server


def _loop_stats(url: str, s: requests.Session) -> dict:
    return s.get(f"{url}/guard/stats", timeout=10).json()["feedback_loops"]


def test_plays_need_the_token_and_name_bad_fields(songs):
    """Without the token: 401; a malformed play: 422 naming the field; the good ones in the batch kept."""
    s = requests.Session()
    body = s.post(f"{songs.url}/recommend", json={"user_ids": [1, 2]}, timeout=30).json()
    rid = body["request_id"]
    plays = {"plays": [{"request_id": rid, "row": 0, "songs": body["items"][0][:1]}]}
    assert s.post(f"{songs.url}/plays", json=plays, timeout=30).status_code == 401
    bad = {"plays": [{"request_id": rid, "row": 1, "songs": [42]}, plays["plays"][0]]}
    resp = s.post(f"{songs.url}/plays", json=bad, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert resp.status_code == 422
    got = resp.json()
    assert got["kept"] == 1 and "plays[0].songs" in got["problems"][0]
    resp = s.post(f"{songs.url}/recommend", json={"user_ids": [99999]}, timeout=30)
    assert resp.status_code == 400 and "user_ids" in resp.text


def test_exposure_pools_across_both_workers(songs):
    """Lists answered by two worker processes are pooled in one store: every worker reads all of them."""
    s = requests.Session()
    before = wait_until(lambda: _loop_stats(songs.url, s), 10, 0.1,
                        until=lambda st: "pooled_lists_read" in st).get("pooled_lists_read", 0)
    for i in range(12):
        r = s.post(f"{songs.url}/recommend", json={"user_ids": list(range(i * 25, i * 25 + 25))}, timeout=30)
        assert r.status_code == 200
    want = before + 300
    seen: dict[int, int] = {}

    def poll() -> dict[int, int]:
        st = _loop_stats(songs.url, requests.Session())  # a fresh connection may reach the other worker
        seen[st["worker_pid"]] = st.get("pooled_lists_read", 0)
        return seen

    wait_until(poll, 30, 0.1, until=lambda got: len(got) == 2 and all(v >= want for v in got.values())
               and len(set(got.values())) == 1)
    assert len(seen) == 2, f"only one worker answered /guard/stats: {seen}"
    assert all(v >= want for v in seen.values()) and len(set(seen.values())) == 1, seen


def test_a_loop_forming_is_caught(songs):
    """Quiet traffic leaves loop.alarm ok; once plays retrain the model, the alarm turns degraded naming the measure."""
    v = recommender_loop(songs.url, TOKEN, window=100, quiet_windows=12, seed=1)
    assert v.caught, v.evidence
    assert "feedback loop:" in v.evidence and "keeps" in v.evidence
