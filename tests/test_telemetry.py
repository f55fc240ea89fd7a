"""Telemetry: the SDK helper, provider resolution, and that library code leaves globals alone."""

import ast
from pathlib import Path

import numpy as np
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guarded_serving import Guard
from guarded_serving.telemetry import configure_telemetry
from guarded_serving.telemetry.tracing import resolve_tracer_provider

PKG = Path(__file__).resolve().parent.parent / "guarded_serving"


def test_configure_telemetry_exports_and_does_not_set_global():
    """configure_telemetry builds a provider that exports guard spans, without touching the global."""
    before = trace.get_tracer_provider()
    exporter = InMemorySpanExporter()
    provider = configure_telemetry("svc", exporter=exporter)
    assert trace.get_tracer_provider() is before
    g = Guard(name="m", tracer_provider=provider)
    g(lambda x: x)(np.ones((1, 2)))
    (span,) = exporter.get_finished_spans()
    assert span.resource.attributes["service.name"] == "svc"
    provider.shutdown()


def test_configure_telemetry_rejects_unknown_exporter():
    """An unknown exporter name is a clear error."""
    try:
        configure_telemetry(exporter="kafka")
    except ValueError as e:
        assert "exporter='kafka' is invalid" in str(e)
    else:
        raise AssertionError("expected ValueError")


def test_resolution_prefers_explicit_then_global():
    """An explicit provider wins; outside a BentoML worker the global one is used."""
    provider = configure_telemetry(exporter="none")
    assert resolve_tracer_provider(provider) is provider
    assert resolve_tracer_provider(None) is trace.get_tracer_provider()


def test_library_never_sets_global_providers():
    """No library module calls set_tracer_provider/set_meter_provider, except the opt-in SDK helper."""
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "sdk.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("set_tracer_provider", "set_meter_provider"):
                offenders.append(str(path))
    assert offenders == []


def test_library_imports_api_not_sdk():
    """Only the SDK helper and the test helpers import opentelemetry.sdk."""
    allowed = {"sdk.py", "testing.py"}
    offenders = [str(p) for p in PKG.rglob("*.py")
                 if p.name not in allowed and "opentelemetry.sdk" in p.read_text()]
    assert offenders == []
