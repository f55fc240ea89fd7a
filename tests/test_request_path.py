"""The request path never loses a result: a component raising in any hook changes neither the
model's result nor its exception, the span always ends, the context is detached, and health names
the component and the hook."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from opentelemetry import trace

from guarded_serving import Component, Guard
from guarded_serving.keys import FEATURES
from guarded_serving.testing import in_memory_tracer_provider

X = np.ones((3, 2))
HOOKS = ("before_call", "after_call", "span_attributes", "stats", "checks")


def broken(hook: str) -> Component:
    """A component whose ``hook`` raises."""

    def boom(self, *args):
        raise ZeroDivisionError(f"{hook} broke")

    cls = type(f"Broken_{hook}", (Component,), {"name": "broken", "span_scope": "every", hook: boom})
    return cls()


def _guarded(hook: str, *, fail: bool = False, is_async: bool = False):
    provider, exporter = in_memory_tracer_provider()
    g = Guard(name="m", tracer_provider=provider, operational=False, components=[broken(hook)])

    if is_async:
        @g
        async def model(x):
            if fail:
                raise KeyError("model failed")
            return x * 2
    else:
        @g
        def model(x):
            if fail:
                raise KeyError("model failed")
            return x * 2
    return g, model, exporter


def _read_side(g: Guard) -> None:
    g.stats()
    g.health()


@pytest.mark.parametrize("hook", HOOKS)
class TestEveryHook:
    def test_result_kept_span_ended_context_detached(self, hook):
        """The model's result comes back unchanged; the span ended; no span is left current."""
        g, model, exporter = _guarded(hook)
        before = trace.get_current_span()
        out = model(X)
        _read_side(g)
        np.testing.assert_array_equal(out, X * 2)
        assert trace.get_current_span() is before
        spans = exporter.get_finished_spans()
        assert len(spans) == 1 and spans[0].end_time is not None

    def test_model_exception_unchanged(self, hook):
        """The model's own exception propagates as raised, whatever the component does."""
        g, model, exporter = _guarded(hook, fail=True)
        with pytest.raises(KeyError, match="model failed"):
            model(X)
        _read_side(g)
        spans = exporter.get_finished_spans()
        assert spans and all(s.end_time is not None for s in spans)
        assert g.stats()["errors"] == 1

    def test_health_names_component_and_hook(self, hook):
        """guard.components is degraded and names the component and the hook that raised."""
        g, model, _ = _guarded(hook)
        model(X)
        _read_side(g)
        check = g.health()["checks"]["guard.components"]
        assert check["status"] == "degraded" and not check["affects_readiness"]
        assert f"broken.{hook}: ZeroDivisionError: {hook} broke" in check["reason"]
        assert {"component": "broken", "hook": hook} in [
            {k: e[k] for k in ("component", "hook")} for e in check["details"]["errors"]]

    def test_async_result_kept(self, hook):
        """The same holds for coroutine functions."""
        g, model, exporter = _guarded(hook, is_async=True)
        out = asyncio.run(model(X))
        np.testing.assert_array_equal(out, X * 2)
        assert len(exporter.get_finished_spans()) == 1


def test_ready_and_serving_while_component_broken():
    """A broken component never makes the service not ready."""
    g, model, _ = _guarded("after_call")
    for _ in range(30):
        model(X)
    assert g.is_ready() and g.stats()["calls"] == 30 and g.stats()["ok"] == 30


def test_headers_go_to_the_declared_request_context():
    """Response headers a component sets reach ``ctx.response.headers`` of the declared context."""
    class Response:
        def __init__(self):
            self.headers = {}

    class Ctx:
        def __init__(self):
            self.response = Response()

    class Header(Component):
        name = "header"
        needs = (FEATURES,)

        def before_call(self, call):
            call.set_header("X-Test", f"rows={len(call.inputs)}")

    g = Guard(name="m", operational=False, components=[Header()])

    @g
    def predict(inputs, ctx):
        return inputs

    ctx = Ctx()
    predict(X, ctx=ctx)
    rid = ctx.response.headers.pop("X-Request-Id")  # every call's request id comes back too
    assert ctx.response.headers == {"X-Test": "rows=3"} and len(rid) == 49
    ctx2 = Ctx()
    predict(X, ctx2)  # positional too
    assert ctx2.response.headers.pop("X-Request-Id") != rid
    assert ctx2.response.headers == {"X-Test": "rows=3"}
