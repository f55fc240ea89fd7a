"""Jaeger keeps traces across a restart: the Badger storage of scripts/jaeger.sh's configuration
(tools/jaeger/config.yaml), in a state directory, answers /api/traces for guard traces written
before the restart. The memory configuration, for contrast, forgets them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from guarded_serving import Guard
from tests.jaeger import PrivateJaeger

pytestmark = pytest.mark.integration


def _send_guard_traces(jaeger: PrivateJaeger, service: str, calls: int) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=jaeger.traces_endpoint, timeout=10)))
    guard = Guard(name="restart", tracer_provider=tp)

    @guard
    def predict(inputs):
        return inputs.sum(axis=1)

    for i in range(calls):
        predict(np.full((1, 3), float(i)))
    guard.stop()
    tp.shutdown()


def _guard_trace_ids(jaeger: PrivateJaeger, service: str, count: int, timeout: float = 30.0) -> set[str]:
    spans = jaeger.query.wait_spans(service, lambda s: s["operationName"] == "guard restart", count=count,
                                    timeout=timeout)
    return {s["traceID"] for s in spans}


def test_badger_keeps_guard_traces_across_a_restart():
    """Guard traces written before Jaeger restarts are found again through /api/traces after it."""
    service = f"gs-restart-{uuid.uuid4().hex[:8]}"
    with PrivateJaeger(storage="badger") as jaeger:
        _send_guard_traces(jaeger, service, 5)
        before = _guard_trace_ids(jaeger, service, 5)
        assert len(before) == 5
        jaeger.stop()
        jaeger.start()
        after = _guard_trace_ids(jaeger, service, 5)
        assert after == before, f"lost {len(before - after)} of {len(before)} traces across the restart"
        assert any(jaeger.badger_dir.rglob("*.vlog")), "nothing written to the Badger directory"


def test_memory_storage_forgets_on_restart():
    """With memory storage (JAEGER_STORAGE=memory) the same restart loses the traces."""
    service = f"gs-restart-{uuid.uuid4().hex[:8]}"
    with PrivateJaeger(storage="memory") as jaeger:
        _send_guard_traces(jaeger, service, 2)
        assert len(_guard_trace_ids(jaeger, service, 2)) == 2
        jaeger.stop()
        jaeger.start()
        assert jaeger.query.traces(service) == []
