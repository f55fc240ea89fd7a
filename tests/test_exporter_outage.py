"""What the OTLP exporter holds while the collector is down: at most the batch processor's queue and the
batch being retried (the bound docs/jaeger.md and the README's Traces section give in spans and MB)."""

from __future__ import annotations

import gc
import threading

from opentelemetry.sdk.trace import ReadableSpan

from guarded_serving.telemetry import configure_telemetry
from guarded_serving.testing import free_port

# BentoML's server span with its HTTP attributes and the guard's as an anomalous call sets them: more than an
# ordinary call's compact span carries, so the memory held is not understated
ATTRIBUTES = {
    "http.scheme": "http", "http.host": "127.0.0.1:3000", "net.host.port": 3000, "http.flavor": "1.1",
    "http.target": "/predict", "http.url": "http://127.0.0.1:3000/predict", "http.method": "POST",
    "http.server_name": "127.0.0.1:3000", "http.user_agent": "python-requests/2.34", "net.peer.ip": "127.0.0.1",
    "net.peer.port": 51234, "http.status_code": 200, "guard.model.name": "breast_cancer", "guard.model.version": "1",
    "guard.latency_ms": 4.97, "guard.slo.latency_ms": 100.0, "guard.slo.violated": False, "guard.outcome": "ok",
    "guard.batch_size": 1, "guard.anomalous": False, "guard.request.latency_ms": 6.1,
    "guard.artifact.digest": "sha256:" + "0" * 64, "guard.artifact.manifest_version": "1",
    "guard.artifact.verified": True,
}


def test_a_dead_collector_holds_at_most_the_queue_and_one_batch(monkeypatch):
    """With the OTLP endpoint on a closed port, after 20 queues' worth of spans the provider holds at
    least a full queue (spans are kept for a retry) and at most the queue plus the batch being retried:
    the rest are dropped, not hoarded."""
    queue, batch = 64, 16
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{free_port()}/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2")  # seconds: each failed export retries ~1 s
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", str(batch))
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
    provider = configure_telemetry("outage-test", max_queue_size=queue)
    tracer = provider.get_tracer("test")
    for _ in range(20 * queue):
        with tracer.start_as_current_span("POST /predict", attributes=ATTRIBUTES):
            pass
    gc.collect()
    # an ended span reaches the processor as a ReadableSpan snapshot: count those still in memory
    # (this provider's only: other tests in the same process may keep spans of their own providers)
    held = sum(type(o) is ReadableSpan and o.resource is provider.resource for o in gc.get_objects())
    # shutting down drains the queue through the failing exporter (seconds): not waited for
    threading.Thread(target=provider.shutdown, daemon=True).start()
    assert queue <= held <= queue + batch, held
