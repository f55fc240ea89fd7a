"""The guarded image example: a digit classifier on 8x8 images behind BentoML.

    python -m services.train                      # once: writes services/artifacts/digits/
    bentoml serve services.digits:DigitClassifier --host 127.0.0.1 --port 3001

Endpoints
---------
POST /classify       {"images": [[[8 floats] x 8], ...]}  (n, 8, 8), intensities 0-16
                     -> {"label": [...], "confidence": [...], "request_id": ...} (also X-Request-Id)
POST /guard/feedback the true digit of a request id, {"request_id": ..., "label": [digits]} (needs
                     GUARDED_FEEDBACK_TOKEN; realised accuracy in /guard/stats and health)
GET  /guard/health   the guard's health report
GET  /guard/stats    the guard's counters (``edge_cases.rows_flagged``, drift)

The guard sees the images through the *array* view of the profile written by
:mod:`services.train_digits` (per-image brightness, contrast, extremes,
saturation and sharpness; the model receives the images untouched). Blank
images, negatives, digits shifted off-centre and images from another data set
come back with ``X-Guard-Edge: flagged; rows=...`` and the reason in
``X-Guard-Edge-Reason``.

Configuration (environment, all optional):
GUARDED_DIGITS_DIR     artifacts directory (default services/artifacts/digits)
GUARDED_EDGE_POLICY    flag (default) | reject | fallback (fallback answers label -1)
GUARDED_EDGE_FPR       target false-positive rate of the edge-case flag (default 0.01)
GUARDED_LATENCY_SLO_MS latency budget per call (default 100)
GUARDED_STATE_DIR      where the drift store lives (default .state/ in the repo root)
GUARDED_DRIFT_INTERVAL_S  period of the drift background thread (default 5)
"""

from __future__ import annotations

import os
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument

from guarded_serving import Guard
from guarded_serving.serving.bentoml import health_app, tracing_config_from_env
from guarded_serving.serving.timeout import release_request_timers_from_env
from services.train_digits import DEFAULT_DIR, load_model

ARTIFACT_DIR = Path(os.environ.get("GUARDED_DIGITS_DIR") or DEFAULT_DIR)
STATE_DIR = Path(os.environ.get("GUARDED_STATE_DIR") or Path(__file__).resolve().parent.parent / ".state")
PROFILE = ARTIFACT_DIR / "profile.npz"


def abstain(rows: object) -> dict:
    """The fallback for edge-case images: no label (-1), no confidence."""
    n = len(rows)  # type: ignore[arg-type]
    return {"label": [-1] * n, "confidence": [None] * n}


guard = Guard(
    name="digits",
    version="1",
    latency_slo_ms=float(os.environ.get("GUARDED_LATENCY_SLO_MS", "100")),
    # the profile carries the array view; without artifacts (a fresh checkout) the service still
    # imports, and the guard then inspects no input (timing, errors and spans only)
    profile=str(PROFILE) if PROFILE.exists() else None,
    edge_policy=os.environ.get("GUARDED_EDGE_POLICY", "flag"),
    edge_fpr=float(os.environ.get("GUARDED_EDGE_FPR", "0.01")),
    edge_fallback=abstain,
    drift=PROFILE.exists(),
    drift_store=str(STATE_DIR / "drift-digits.sqlite"),
    drift_window=500,
    drift_min_samples=100,
    drift_interval_s=float(os.environ.get("GUARDED_DRIFT_INTERVAL_S", "5")),
    # request ids and feedback: realised accuracy per version (no probabilities: no label-free estimate)
    performance=True,
    performance_output_field="label",
    performance_store=str(STATE_DIR / "outcomes-digits.sqlite"),
)


# BentoML's request timeout holds each request's context (server span included) for the 30 s timeout after the
# answer; release it when the request ends (as services/cancer.py does; GUARDED_RELEASE_TIMERS=0 keeps BentoML's)
release_request_timers_from_env()


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30})
@bentoml.asgi_app(health_app(guard), path="/guard")
class DigitClassifier:
    def __init__(self) -> None:
        self.model = load_model(ARTIFACT_DIR)
        guard.start()

    def __is_ready__(self) -> bool:
        return guard.is_ready()

    @bentoml.api
    @guard
    def classify(self, images: np.ndarray, ctx: bentoml.Context) -> dict:
        """Classify 8x8 grey images (intensities 0-16) as digits 0-9.

        ``ctx`` makes BentoML send the guard's response headers (``X-Guard-Edge``).
        """
        if images.ndim != 3 or images.shape[1:] != (8, 8):
            raise InvalidArgument(f"images: expected an array of shape (n, 8, 8), got {images.shape}")
        proba = self.model.predict_proba(images)
        return {"label": proba.argmax(axis=1).tolist(), "confidence": proba.max(axis=1).round(6).tolist()}
