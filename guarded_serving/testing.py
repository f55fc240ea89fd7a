"""Test helpers, public so users can test their own guarded services.

- :func:`in_memory_tracer_provider` -- an SDK provider whose spans land in memory.
- :class:`OTLPReceiver` -- a real OTLP/HTTP endpoint on 127.0.0.1 that decodes
  ``ExportTraceServiceRequest`` protobufs into plain dicts, so a test can check
  what a served process actually exported over the wire.
- :func:`free_port`, :func:`wait_http` -- loopback plumbing for served tests.
- :func:`wait_until` -- the one bounded polling loop (background work, served state, exported spans).
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._polling import wait_until
from .serving.process import wait_http

__all__ = ["OTLPReceiver", "free_port", "in_memory_tracer_provider", "wait_http", "wait_until"]


def in_memory_tracer_provider() -> tuple[Any, Any]:
    """``(provider, exporter)``: spans end up in ``exporter.get_finished_spans()``."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind is None:
        return None
    return getattr(v, kind)


class OTLPReceiver:
    """A minimal OTLP/HTTP (protobuf) trace receiver on 127.0.0.1.

    Use as a context manager; ``endpoint`` is the ``.../v1/traces`` URL and
    ``spans`` the decoded spans: dicts with ``name``, ``trace_id``,
    ``span_id``, ``parent_span_id`` (hex, ``""`` for roots), ``kind``,
    ``attributes``, ``status_code``, ``events``, ``service``,
    ``start_ns`` and ``end_ns``.
    """

    def __init__(self, port: int = 0) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    receiver._ingest(body)
                    code = 200
                except Exception:
                    code = 400
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = int(self._server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _ingest(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        out = []
        for rs in req.resource_spans:
            res = {kv.key: _any_value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.append({
                        "name": sp.name,
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex(),
                        "kind": sp.kind,
                        "attributes": {kv.key: _any_value(kv.value) for kv in sp.attributes},
                        "status_code": sp.status.code,
                        "events": [e.name for e in sp.events],
                        "service": res.get("service.name"),
                        "scope": ss.scope.name,
                        "start_ns": sp.start_time_unix_nano,
                        "end_ns": sp.end_time_unix_nano,
                    })
        with self._lock:
            self.requests += 1
            self.spans.extend(out)

    def wait_for(self, predicate: Any, timeout: float = 20.0, count: int = 1) -> list[dict[str, Any]]:
        """Wait until ``predicate(span)`` holds for ``count`` spans (or ``timeout``); return the matches."""

        def matches() -> list[dict[str, Any]]:
            with self._lock:
                return [s for s in self.spans if predicate(s)]

        return wait_until(matches, timeout, 0.1, until=lambda found: len(found) >= count)

    def __enter__(self) -> "OTLPReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
