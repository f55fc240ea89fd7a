"""The guarded recommender example: songs for listeners, generated (no downloads), behind BentoML.

    bentoml serve services.recommender:SongService --host 127.0.0.1 --port 3003

Endpoints
---------
POST /recommend      {"user_ids": [3, 17, ...], "explore": [false, true, ...] (optional), "k": 10}
                     -> {"items": [["song-042", ...], ...], "request_id": "..."}; rows marked explore
                     get a random list (the holdout the loop check compares the model with)
POST /plays          {"plays": [{"request_id": ..., "row": 0, "songs": ["song-042"]}, ...]}: which
                     songs of which answer were played. Token required (``Authorization: Bearer``,
                     ``$GUARDED_FEEDBACK_TOKEN``; without it 401). Each play reaches the loop check
                     (outcome coupling, holdout) and, with ``GUARDED_RETRAIN_ON_PLAYS=1``, retrains the
                     model on it: the feedback loop of a recommender trained on its own clicks.
GET  /guard/health   ``loop.*`` checks: exposure, alarm, holdout, outcomes
GET  /guard/stats    ``feedback_loops``: window history, alarm state, holdout comparison

Configuration (environment, all optional):
GUARDED_FEEDBACK_TOKEN     the token POST /plays requires
GUARDED_RETRAIN_ON_PLAYS   1: plays retrain the model (default 0: the model stays as trained)
GUARDED_LOOP_WINDOW        lists per window of the loop check (default 200)
GUARDED_LOOP_INTERVAL_S    period of the loop check's background thread (default 2)
GUARDED_STATE_DIR          where the loop store lives (default .state/ in the repo root)
GUARDED_WORKERS            BentoML worker processes (default 1); they pool exposure through the store
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument

from guarded_serving import Guard
from guarded_serving.serving.bentoml import (
    FEEDBACK_TOKEN_ENV,
    health_app,
    tracing_config_from_env,
)
from guarded_serving.serving.timeout import release_request_timers_from_env
from services.songs import N_SONGS, N_USERS, SongRecommender, catalogue, song_id

STATE_DIR = Path(os.environ.get("GUARDED_STATE_DIR") or Path(__file__).resolve().parent.parent / ".state")
WORKERS = int(os.environ.get("GUARDED_WORKERS", "1"))
RETRAIN = os.environ.get("GUARDED_RETRAIN_ON_PLAYS", "0") == "1"
CATALOGUE = catalogue()
MAX_USERS = 1000
MAX_K = 50

guard = Guard(
    name="songs",
    version="1",
    latency_slo_ms=float(os.environ.get("GUARDED_LATENCY_SLO_MS", "200")),
    loop_check=True,
    loop_user_field="user_ids",
    loop_exploration_field="explore",
    loop_reference={song_id(i): p for i, p in enumerate(CATALOGUE.popularity)},
    loop_catalogue_size=N_SONGS,
    loop_window=int(os.environ.get("GUARDED_LOOP_WINDOW", "200")),
    loop_interval_s=float(os.environ.get("GUARDED_LOOP_INTERVAL_S", "2")),
    loop_store=os.environ.get("GUARDED_STORE_URL") or str(STATE_DIR / "loops-songs.sqlite"),
)


def _token_ok(ctx: bentoml.Context) -> bool:
    expected = os.environ.get(FEEDBACK_TOKEN_ENV)
    auth = ctx.request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    return bool(expected) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())


# BentoML's request timeout holds each request's context (server span included) for the 30 s timeout after the
# answer; release it when the request ends (as services/cancer.py does; GUARDED_RELEASE_TIMERS=0 keeps BentoML's)
release_request_timers_from_env()


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30}, workers=WORKERS)
@bentoml.asgi_app(health_app(guard), path="/guard")
class SongService:
    def __init__(self) -> None:
        self.model = SongRecommender(CATALOGUE, seed=os.getpid())
        guard.start()

    def __is_ready__(self) -> bool:
        return guard.is_ready()

    @bentoml.api
    @guard
    def recommend(self, user_ids: list[int], ctx: bentoml.Context, explore: list[bool] | None = None,
                  k: int = 10) -> dict:
        """Top-``k`` songs for each listener (random songs for rows marked ``explore``)."""
        if not user_ids or len(user_ids) > MAX_USERS:
            raise InvalidArgument(f"user_ids: expected 1 to {MAX_USERS} listener ids, got {len(user_ids)}")
        bad = [u for u in user_ids if not 0 <= u < N_USERS]
        if bad:
            raise InvalidArgument(f"user_ids: unknown listener(s) {bad[:5]} (ids are 0 to {N_USERS - 1})")
        if not 1 <= k <= MAX_K:
            raise InvalidArgument(f"k={k}: expected 1 to {MAX_K}")
        if explore is not None and len(explore) != len(user_ids):
            raise InvalidArgument(f"explore: expected one flag per listener ({len(user_ids)}), got {len(explore)}")
        users = np.asarray(user_ids, dtype=int)
        lists = self.model.recommend(users, k)
        if explore is not None and any(explore):
            rows = np.flatnonzero(np.asarray(explore, dtype=bool))
            lists[rows] = self.model.explore(len(rows), k)
        return {"items": [[song_id(i) for i in row] for row in lists.tolist()]}

    @bentoml.api
    def plays(self, plays: list[dict[str, Any]], ctx: bentoml.Context) -> dict:
        """Report which songs of which answers were played (token required)."""
        if not _token_ok(ctx):
            ctx.response.status_code = 401
            return {"error": f"a valid token is required (Authorization: Bearer <token>; the server reads "
                             f"{FEEDBACK_TOKEN_ENV})"}
        loop = guard.component("feedback_loops")
        problems, kept, retrain = [], 0, []
        for n, p in enumerate(plays):
            rid, row, songs = p.get("request_id"), p.get("row", 0), p.get("songs", [])
            if not isinstance(songs, list) or not all(isinstance(s, str) and s.startswith("song-") for s in songs):
                problems.append(f"plays[{n}].songs: expected a list of song ids like 'song-042', got {songs!r:.80}")
                continue
            try:
                loop.observe_outcome(rid, row=row, clicked=songs,  # type: ignore[attr-defined]
                                     source="exploration" if p.get("explore") else "model")
            except ValueError as exc:
                problems.append(f"plays[{n}]: {exc}")
                continue
            kept += 1
            retrain += [int(s[5:]) for s in songs]
        if RETRAIN:
            self.model.record_plays(retrain)
        if problems:
            ctx.response.status_code = 422
        return {"kept": kept, "rejected": len(problems), "problems": problems[:20]}
