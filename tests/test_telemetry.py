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


class TestProviderResolution:
    def test_explicit_then_registered_then_global(self):
        """An explicit provider wins; else the first registered resolver that answers; else the global one."""
        from opentelemetry import trace

        from guarded_serving.telemetry import tracing
        from guarded_serving.testing import in_memory_tracer_provider

        mine, _ = in_memory_tracer_provider()
        framework, _ = in_memory_tracer_provider()
        saved = list(tracing._resolvers)
        try:
            tracing._resolvers[:] = [lambda: None, lambda: framework]
            assert tracing.resolve_tracer_provider(mine) is mine
            assert tracing.resolve_tracer_provider() is framework
            tracing._resolvers[:] = []
            assert tracing.resolve_tracer_provider() is trace.get_tracer_provider()
        finally:
            tracing._resolvers[:] = saved

    def test_a_failing_lookup_warns_once_naming_the_setting(self, caplog):
        """A resolver that raises is skipped with one warning that says to pass tracer_provider=."""
        from guarded_serving.telemetry import tracing

        def broken():
            raise LookupError("moved")

        saved = list(tracing._resolvers)
        tracing._warned.clear()
        try:
            tracing._resolvers[:] = [broken]
            with caplog.at_level("WARNING", logger="guarded_serving.telemetry"):
                tracing.resolve_tracer_provider()
                tracing.resolve_tracer_provider()
            warnings = [r for r in caplog.records if r.name == "guarded_serving.telemetry"]
            assert len(warnings) == 1 and "tracer_provider=" in warnings[0].getMessage()
            assert "LookupError: moved" in warnings[0].getMessage()
        finally:
            tracing._resolvers[:] = saved
            tracing._warned.clear()

    def test_importing_the_bentoml_integration_registers_its_lookup(self):
        """serving.bentoml registers BentoML's provider lookup (None outside a BentoML worker)."""
        from guarded_serving.serving import bentoml as integration
        from guarded_serving.telemetry import tracing

        assert integration.bentoml_tracer_provider in tracing._resolvers
        assert integration.bentoml_tracer_provider() is None
