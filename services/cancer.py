"""The guarded example service: a breast-cancer classifier behind BentoML.

    python -m services.train                      # once: writes services/artifacts/
    bentoml serve services.cancer:CancerClassifier --host 127.0.0.1 --port 3000

Endpoints
---------
POST /predict        {"inputs": [[30 floats], ...]} -> {"label": [...], "probability": [...]}
                     (the request id comes back as the X-Request-Id header)
POST /guard/feedback the true outcome of a prediction, by request id (token required):
                     {"request_id": ..., "label": 0 or 1 (or a list, one per row)} or {"items": [...]}
POST /predict_chaos  the same guarded model with injected faults, for the demo and
                     tests only (registered only when GUARDED_CHAOS=1):
                     {"inputs": ..., "delay_ms": 300, "fail": false}
GET  /guard/health   the guard's health report (503 when a gating check fails); status only
                     to callers without GUARDED_HEALTH_TOKEN when that is set
GET  /guard/stats    the guard's counters and latency quantiles (details need the token too)
GET  /readyz         503 while the guard is failing (``__is_ready__``)
GET  /metrics        BentoML's Prometheus metrics, with the guard's ``guard_*`` series
                     (guarded_serving.serving.prometheus; merged over workers)

Configuration (environment, all optional):
GUARDED_ARTIFACT_DIR   artifacts directory (default services/artifacts)
GUARDED_LATENCY_SLO_MS latency budget per call (default 100)
GUARDED_CHAOS          1 enables /predict_chaos
GUARDED_TRACE_SAMPLE_RATIO  fraction of normal calls given a guard span (default 1.0);
                       anomalous calls are always exported
GUARDED_MANIFEST       deployment manifest to verify at startup and while serving
                       (default: manifest.json in the artifacts directory when it
                       exists, as written by services.train; "none" disables)
GUARDED_MANIFEST_PUBLIC_KEY   Ed25519 public key (PEM file); requires a valid signature (default: the demo
                       key .state/keys/demo-signing.pub when `python -m services.train` signed the default
                       artifacts with it; "" for none)
GUARDED_REQUIRE_SIGNATURE     1: refuse an unsigned manifest (or one no key can check); default: degraded
GUARDED_MODEL_SIGNATURE       an OpenSSF Model Signing bundle over the artifacts directory, checked with
GUARDED_MODEL_SIGNATURE_KEY   this elliptic-curve public key (PEM) at startup and in the background
GUARDED_INTEGRITY_POLICY      refuse (default: a mismatch stops the service from starting)
                              or not_ready (start, but /readyz answers 503)
GUARDED_INTEGRITY_INTERVAL_S  seconds between background re-checks (default 30)
GUARDED_PROBES         JSON list of downstream probes, e.g.
                       '[{"name": "feature_store", "url": "http://127.0.0.1:8701/health"}]' (default none)
GUARDED_DEPENDENCIES   JSON mapping package -> pinned version (or null), or a list of names
                       (default: the manifest's pinned packages; without a manifest
                       '["numpy", "scikit-learn"]': installed and importable, any version)
GUARDED_HARDWARE_INTERVAL_S  hardware sampling interval (default 5)
GUARDED_PROBE_INTERVAL_S     seconds between probes of a component that is up (default 10)
GUARDED_PROBE_BACKOFF_MAX_S  longest wait between probes of a component that is down (default 60)
GUARDED_PROFILE        edge-case reference profile (default ARTIFACT_DIR/profile.npz; "none" disables)
GUARDED_EDGE_POLICY    flag (default) | reject | fallback: what happens to rows unlike the
                       training data (fallback answers them with label -1, probability null)
GUARDED_EDGE_FPR       target false-positive rate of the edge-case flag (default 0.01)
GUARDED_STATE_DIR      where shared state lives, e.g. the drift store (default .state/ in the repo root)
GUARDED_STORE_URL      a Redis store shared by every host's workers, e.g. redis://127.0.0.1:6379/0
                       (rediss:// for TLS, with ?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...);
                       default: a SQLite file in GUARDED_STATE_DIR, pooled by this host's workers only
                       (drift windows, and the predictions and labels of /guard/feedback)
GUARDED_STORE_PASSWORD the Redis password when the URL carries none
GUARDED_DRIFT_INTERVAL_S  period of the drift background thread (default 5)
GUARDED_DRIFT_BUFFER_ROWS rows the drift buffer keeps between cycles (a uniform sample beyond; default 10000)
GUARDED_SKEW_FIRST_N   rows after startup checked for train-serving skew (default 200)
GUARDED_WORKERS        BentoML worker processes (default 1); they pool drift windows
GUARDED_METRICS_INTERVAL_S  seconds between refreshes of the guard's gauges on /metrics (default 5)
GUARDED_HEALTH_TOKEN   token for the details of /guard/health and /guard/stats (Authorization: Bearer)
GUARDED_RELEASE_TIMERS 0 keeps BentoML's own request-timeout middleware, whose timer holds each request's
                       context (server span included) for the 30 s timeout after the answer (default 1:
                       guarded_serving.serving.timeout.release_request_timers, released when the request ends)
GUARDED_MAX_BODY_BYTES largest request body (default 8 MiB; larger: HTTP 413 naming the limit)
GUARDED_STORE_DIGITS   store input rows rounded to this many significant digits (default: raw)
GUARDED_FEEDBACK_TOKEN the token POST /guard/feedback requires (Authorization: Bearer ...);
                       unset: feedback is refused (401)
GUARDED_EXPECT_ACCURACY the accuracy the model promises, judged on labels sent to /guard/feedback
                       (default 0.95; "none" turns the expectation off, feedback stays on)
GUARDED_PERFORMANCE_INTERVAL_S  period of the prediction-record flush and evaluation (default 1)
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  turn BentoML tracing on
OTEL_TRACES_SAMPLER_ARG  BentoML's trace sample rate (default 1.0 when an endpoint is set)
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
from pathlib import Path

import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable

from guarded_serving import ConfigError, Guard
from guarded_serving.integrity import IntegrityError
from guarded_serving.serving.bentoml import health_app, tracing_config_from_env
from guarded_serving.serving.limits import RequestLimits, bound_metric_labels
from guarded_serving.serving.prometheus import PrometheusMetrics
from guarded_serving.serving.timeout import release_request_timers_from_env
from services.rules import RangeRule
from services.train import answer, load_model

ARTIFACT_DIR = Path(os.environ.get("GUARDED_ARTIFACT_DIR", Path(__file__).resolve().parent / "artifacts"))
CHAOS = os.environ.get("GUARDED_CHAOS", "0") == "1"
STATE_DIR = Path(os.environ.get("GUARDED_STATE_DIR") or Path(__file__).resolve().parent.parent / ".state")
WORKERS = int(os.environ.get("GUARDED_WORKERS", "1"))


def _manifest() -> str | None:
    value = os.environ.get("GUARDED_MANIFEST")
    if value is None:
        default = ARTIFACT_DIR / "manifest.json"
        return str(default) if default.exists() else None
    return None if value.strip().lower() in ("", "none") else value


def _public_key() -> str | None:
    """GUARDED_MANIFEST_PUBLIC_KEY, else the demo key's public half when the default artifacts were signed with it
    by ``python -m services.train`` (a demo convenience: in production configure the key explicitly)."""
    value = os.environ.get("GUARDED_MANIFEST_PUBLIC_KEY")
    if value is not None:
        return value or None
    from services.train import DEMO_KEY

    pub = DEMO_KEY.with_name(DEMO_KEY.name + ".pub")
    manifest = _manifest()
    if "GUARDED_ARTIFACT_DIR" in os.environ or "GUARDED_MANIFEST" in os.environ or manifest is None or not pub.exists():
        return None
    try:
        signed = "signature" in json.loads(Path(manifest).read_text())
    except (OSError, ValueError):
        return None
    return str(pub) if signed else None


def _json_env(name: str, default: str) -> object:
    raw = os.environ.get(name, default)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not valid JSON: {exc}") from None


# Packages to check: GUARDED_DEPENDENCIES, else the manifest's pins (the training
# environment's versions), else just that numpy and scikit-learn import.
_deps = _json_env("GUARDED_DEPENDENCIES", "null" if _manifest() else '["numpy", "scikit-learn"]')

_PROFILE = os.environ.get("GUARDED_PROFILE") or str(ARTIFACT_DIR / "profile.npz")
_USE_PROFILE = _PROFILE.lower() != "none" and ("GUARDED_PROFILE" in os.environ or Path(_PROFILE).exists())


def _expectations() -> dict | None:
    raw = os.environ.get("GUARDED_EXPECT_ACCURACY", "0.95").strip().lower()
    return None if raw in ("", "none") else {"accuracy": float(raw)}


def calibration_reference() -> tuple[np.ndarray, np.ndarray]:
    """Held-out predictions with labels (the test split): what the label-free estimate calibrates on."""
    ref = np.load(ARTIFACT_DIR / "reference.npz")  # covered by the manifest; the model is never unpickled here
    if "pred_test" not in ref.files:
        raise FileNotFoundError(f"{ARTIFACT_DIR / 'reference.npz'} has no pred_test: rerun `python -m services.train`")
    return ref["pred_test"], ref["y_test"]


def abstain(rows: np.ndarray) -> dict:
    """The fallback for edge-case rows: no label (-1), no probability."""
    return {"label": [-1] * len(rows), "probability": [None] * len(rows)}


# the guard's findings on BentoML's /metrics: counters per call, gauges every few seconds
metrics = PrometheusMetrics(interval_s=float(os.environ.get("GUARDED_METRICS_INTERVAL_S", "5")))

guard = Guard(
    name="breast_cancer",
    version="1",
    latency_slo_ms=float(os.environ.get("GUARDED_LATENCY_SLO_MS", "100")),
    trace_sample_ratio=float(os.environ.get("GUARDED_TRACE_SAMPLE_RATIO", "1.0")),
    n_features=30,
    manifest=_manifest(),
    artifact_root=str(ARTIFACT_DIR),  # the manifest's files are the ones served, wherever it lives
    manifest_public_key=_public_key(),
    require_signature=os.environ.get("GUARDED_REQUIRE_SIGNATURE", "0") == "1",
    model_signature=os.environ.get("GUARDED_MODEL_SIGNATURE") or None,
    model_signature_key=os.environ.get("GUARDED_MODEL_SIGNATURE_KEY") or None,
    integrity_policy=os.environ.get("GUARDED_INTEGRITY_POLICY", "refuse"),
    integrity_check_interval_s=float(os.environ.get("GUARDED_INTEGRITY_INTERVAL_S", "30")),
    # operational health: hardware sampler, dependencies, downstream probes
    disk_paths=(str(ARTIFACT_DIR),),
    hardware_interval_s=float(os.environ.get("GUARDED_HARDWARE_INTERVAL_S", "5")),
    dependencies=tuple(_deps) if isinstance(_deps, list) else _deps,  # None: the manifest's pins
    probes=tuple(_json_env("GUARDED_PROBES", "[]")),
    probe_interval_s=float(os.environ.get("GUARDED_PROBE_INTERVAL_S", "10")),
    probe_backoff_max_s=float(os.environ.get("GUARDED_PROBE_BACKOFF_MAX_S", "60")),
    exit_with_parent=True,  # a worker orphaned by kill -9 of `bentoml serve` exits and frees the port
    profile=_PROFILE if _USE_PROFILE else None,
    edge_policy=os.environ.get("GUARDED_EDGE_POLICY", "flag"),
    edge_fpr=float(os.environ.get("GUARDED_EDGE_FPR", "0.01")),
    edge_fallback=abstain,
    # distribution shift and skew: windows pooled across this host's workers in a SQLite file,
    # or across every host's workers in Redis (GUARDED_STORE_URL)
    drift=True,
    drift_reference=str(ARTIFACT_DIR / "reference.npz"),
    drift_store=os.environ.get("GUARDED_STORE_URL") or str(STATE_DIR / "drift-breast_cancer.sqlite"),
    drift_window=500,
    drift_min_samples=100,
    skew_first_n=int(os.environ.get("GUARDED_SKEW_FIRST_N", "200")),
    drift_interval_s=float(os.environ.get("GUARDED_DRIFT_INTERVAL_S", "5")),
    drift_buffer_rows=int(os.environ.get("GUARDED_DRIFT_BUFFER_ROWS", "10000")),
    drift_store_digits=int(os.environ["GUARDED_STORE_DIGITS"]) if os.environ.get("GUARDED_STORE_DIGITS") else None,
    # ML performance: request ids, feedback (POST /guard/feedback), realised accuracy against its
    # expectation with an anytime-valid bound, and a label-free estimate while labels are missing
    performance=True,
    expectations=_expectations(),
    performance_store=os.environ.get("GUARDED_STORE_URL") or str(STATE_DIR / "outcomes-breast_cancer.sqlite"),
    performance_reference=calibration_reference if (ARTIFACT_DIR / "reference.npz").exists() else None,
    performance_interval_s=float(os.environ.get("GUARDED_PERFORMANCE_INTERVAL_S", "1")),
    # an extension written outside the package (services/rules.py): sizes cannot be negative
    components=[*([RangeRule({"mean_radius": (0, None), "mean_area": (0, None)})] if _USE_PROFILE else []),
                metrics],
)
metrics.watch(guard)

# BentoML's request timeout keeps each request's context (its server span, the guard's attributes) for
# `timeout` seconds after the answer (6-8 KB per call for 30 s); this drops it when the request ends
release_request_timers_from_env()


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30}, workers=WORKERS)
@bentoml.asgi_app(health_app(guard), path="/guard")
class CancerClassifier:
    def __init__(self) -> None:
        # the model is unpickled from the bytes the guard verified (never from a tampered file)
        try:
            self.model = load_model(ARTIFACT_DIR, read=guard.open_artifact)
        except IntegrityError as exc:  # integrity_policy=not_ready: serve 503s, never the tampered model
            logging.getLogger("services.cancer").error("model not loaded: %s", exc)
            self.model = None
        guard.start()
        gc.collect()
        gc.freeze()  # keep the loaded model out of gen-2 collections (p99 pauses)

    def __is_ready__(self) -> bool:
        return guard.is_ready()

    def _predict(self, inputs: np.ndarray) -> dict:
        if self.model is None:
            raise ServiceUnavailable("the model failed integrity verification and was not loaded")
        return answer(self.model, inputs)

    @bentoml.api
    @guard
    def predict(self, inputs: np.ndarray) -> dict:
        """Classify rows of 30 features (malignant=0, benign=1).

        The guard's response headers (``X-Request-Id``, ``X-Guard-Edge``) are sent by the
        ``RequestLimits`` middleware below (``mark_arrival=True``); without such a middleware
        the API would declare ``ctx: bentoml.Context`` for them.
        """
        return self._predict(inputs)

    if CHAOS:  # fault injection exists only when asked for: not registered, not in /docs.json
        @bentoml.api
        @guard
        def predict_chaos(self, inputs: np.ndarray, delay_ms: float = 0.0, fail: bool = False) -> dict:
            """``predict`` with injected latency or failure (demo and tests; GUARDED_CHAOS=1)."""
            if delay_ms > 0:
                time.sleep(min(delay_ms, 10_000) / 1000.0)
            if fail:
                raise RuntimeError("injected model failure")
            return self._predict(inputs)


# One middleware in front of the service: it marks each request's arrival (the guard times what the caller
# waits for, queueing included: RequestTiming's job) and bounds bodies (413 naming the limit), refuses JSON
# booleans, logs client errors in one line
CancerClassifier.add_asgi_middleware(RequestLimits, guard=guard, mark_arrival=True,
                                     max_body_bytes=int(os.environ.get("GUARDED_MAX_BODY_BYTES", str(8 << 20))))
bound_metric_labels(CancerClassifier)  # unknown paths share one /metrics label
