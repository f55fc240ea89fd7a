"""The guarded text example: a lexicon sentiment model (VADER) behind BentoML.

    python -m services.train                      # once: writes services/artifacts/sentiment/
    bentoml serve services.sentiment:SentimentAnalyzer --host 127.0.0.1 --port 3002

Endpoints
---------
POST /analyze        {"texts": ["...", ...]}
                     -> {"reply": [...], "sentiment": [...], "compound": [...]}
GET  /guard/health   the guard's health report (``output.content`` among the checks)
GET  /guard/stats    the guard's counters (``edge_cases``, ``output_check``)

The guard sees the texts through the *text* view of the profile written by
:mod:`services.train_sentiment` (per text: length in characters and tokens,
shares of non-letters, digits, capitals and non-ASCII, the longest repeated
run, the share of words outside the training vocabulary; the model receives
the texts untouched). Empty texts, texts in capitals only and texts pasted with
their HTML markup come back with ``X-Guard-Edge: flagged; rows=...``. The
model's replies (the ``reply`` answers) go through the built-in output content
check (``output_check=True``): a reply with a blocked term is flagged
(``X-Guard-Output``), withheld (``GUARDED_OUTPUT_POLICY=reject``, HTTP 422) or
replaced (``GUARDED_OUTPUT_POLICY=fallback``).

Configuration (environment, all optional):
GUARDED_SENTIMENT_DIR  artifacts directory (default services/artifacts/sentiment)
GUARDED_EDGE_POLICY    flag (default) | reject | fallback (fallback answers sentiment "unknown")
GUARDED_EDGE_FPR       target false-positive rate of the edge-case flag (default 0.01)
GUARDED_OUTPUT_POLICY  flag (default) | reject | fallback
GUARDED_LATENCY_SLO_MS latency budget per call (default 100)
GUARDED_STATE_DIR      where the drift store lives (default .state/ in the repo root)
GUARDED_DRIFT_INTERVAL_S  period of the drift background thread (default 5)
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml

from guarded_serving import Guard
from guarded_serving.serving.bentoml import health_app, tracing_config_from_env
from guarded_serving.serving.timeout import release_request_timers_from_env
from services.train_sentiment import DEFAULT_DIR, LexiconSentiment

ARTIFACT_DIR = Path(os.environ.get("GUARDED_SENTIMENT_DIR") or DEFAULT_DIR)
STATE_DIR = Path(os.environ.get("GUARDED_STATE_DIR") or Path(__file__).resolve().parent.parent / ".state")
PROFILE = ARTIFACT_DIR / "profile.npz"


def abstain(rows: object) -> dict:
    """The fallback for edge-case texts: no reply, no sentiment, no score."""
    n = len(rows)  # type: ignore[arg-type]
    return {"reply": [""] * n, "sentiment": ["unknown"] * n, "compound": [None] * n}


def withheld(text: str) -> str:
    """The fallback for a reply that failed the content check."""
    return "[reply withheld]"


guard = Guard(
    name="sentiment",
    version="1",
    latency_slo_ms=float(os.environ.get("GUARDED_LATENCY_SLO_MS", "100")),
    profile=str(PROFILE) if PROFILE.exists() else None,  # carries the text view (see services.digits)
    edge_policy=os.environ.get("GUARDED_EDGE_POLICY", "flag"),
    edge_fpr=float(os.environ.get("GUARDED_EDGE_FPR", "0.01")),
    edge_fallback=abstain,
    drift=PROFILE.exists(),
    drift_store=str(STATE_DIR / "drift-sentiment.sqlite"),
    drift_window=500,
    drift_min_samples=100,
    drift_interval_s=float(os.environ.get("GUARDED_DRIFT_INTERVAL_S", "5")),
    output_check=True,  # built-in: blocked terms, shouting, repetition, secrets, script markup, empty
    output_policy=os.environ.get("GUARDED_OUTPUT_POLICY", "flag"),
    output_fallback=withheld,
)


# BentoML's request timeout holds each request's context (server span included) for the 30 s timeout after the
# answer; release it when the request ends (as services/cancer.py does; GUARDED_RELEASE_TIMERS=0 keeps BentoML's)
release_request_timers_from_env()


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30})
@bentoml.asgi_app(health_app(guard), path="/guard")
class SentimentAnalyzer:
    def __init__(self) -> None:
        self.model = LexiconSentiment()
        guard.start()

    def __is_ready__(self) -> bool:
        return guard.is_ready()

    @bentoml.api
    @guard
    def analyze(self, texts: list[str], ctx: bentoml.Context) -> dict:
        """A short reply to each text, its sentiment and VADER's compound score in [-1, 1].

        ``ctx`` makes BentoML send the guard's response headers (``X-Guard-Edge``, ``X-Guard-Output``).
        """
        return self.model.predict(texts)
