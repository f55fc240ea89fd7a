"""Shared fixtures: a served example (real `bentoml serve` on 127.0.0.1) and an OTLP receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import OTLPReceiver, free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "services" / "artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The example's artifacts, trained once if missing."""
    if not (ARTIFACTS / "model.pkl").exists():
        from services.train import train

        train(ARTIFACTS)
    return ARTIFACTS


@pytest.fixture(scope="session")
def otlp_receiver():
    """A real OTLP/HTTP receiver on 127.0.0.1 for the whole session."""
    with OTLPReceiver() as rx:
        yield rx


@pytest.fixture(scope="session")
def served_example(artifacts, otlp_receiver):
    """The example service served by a real `bentoml serve`, tracing to the receiver."""
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": otlp_receiver.endpoint,
           "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_BSP_MAX_QUEUE_SIZE": "65536"}
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
        yield server


@pytest.fixture(scope="session")
def jaeger():
    """The real Jaeger of scripts/jaeger.sh (built if missing, started if not running),
    stopped at the end of the session only if this session started it."""
    from tests.jaeger import shared_jaeger, stop_shared_jaeger

    handle = shared_jaeger()
    try:
        yield handle
    finally:
        if handle.started:
            stop_shared_jaeger()


# A private redis-server on 127.0.0.1 per test module (skipped, saying why, without the binary)
from tests.redis_server import redis_server, redis_url  # noqa: E402,F401
