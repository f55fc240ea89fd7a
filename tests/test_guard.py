"""Guard: timing, exceptions, sync/async/method use, signatures, spans and forced export."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import typing

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from guarded_serving import Call, Component, Guard, InvalidInputError, RejectedInputError
from guarded_serving.keys import FEATURES
from guarded_serving.testing import in_memory_tracer_provider

X = np.ones((2, 4))


@pytest.fixture
def traced():
    provider, exporter = in_memory_tracer_provider()
    return provider, exporter


def guard_with(provider, **kw):
    kw.setdefault("name", "m")
    return Guard(tracer_provider=provider, **kw)


class TestTiming:
    def test_latency_measured(self, traced):
        """A call that sleeps 20 ms is recorded at >= 20 ms on its span and in stats."""
        provider, exporter = traced
        g = guard_with(provider)

        @g
        def slow(x):
            time.sleep(0.02)
            return x

        slow(X)
        (span,) = exporter.get_finished_spans()
        assert span.attributes["guard.latency_ms"] >= 20
        assert g.stats()["latency_ms"]["p50"] >= 20

    def test_slo_violation_marked_on_span(self, traced):
        """A call over the budget is counted and its span says guard.slo.violated=true."""
        provider, exporter = traced
        g = guard_with(provider, latency_slo_ms=5)

        @g
        def slow(x):
            time.sleep(0.01)

        slow(X)
        (span,) = exporter.get_finished_spans()
        assert span.attributes["guard.slo.violated"] is True
        assert span.attributes["guard.anomalous"] is True
        assert g.stats()["slo_violations"] == 1

    def test_batch_is_one_call(self, traced):
        """A batch of 100 rows counts as one call, with its batch size on the span (numbers read)."""
        provider, exporter = traced
        g = guard_with(provider, input_kind="numbers")
        g(lambda x: x)(np.zeros((100, 3)))
        assert g.stats()["calls"] == 1
        assert exporter.get_finished_spans()[0].attributes["guard.batch_size"] == 100


class TestErrors:
    def test_exception_recorded_and_reraised_unchanged(self, traced):
        """The model's exception propagates as the same object; the span is ERROR with error.type."""
        provider, exporter = traced
        g = guard_with(provider)
        boom = KeyError("missing")

        @g
        def f(x):
            raise boom

        with pytest.raises(KeyError) as info:
            f(X)
        assert info.value is boom
        (span,) = exporter.get_finished_spans()
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["error.type"] == "KeyError"
        assert span.attributes["guard.outcome"] == "error"
        assert [e.name for e in span.events] == ["exception"]
        assert g.stats()["errors"] == 1

    def test_invalid_input_counted_apart(self, traced):
        """Invalid input raises InvalidInputError naming the field; it is not a model error."""
        provider, exporter = traced
        g = guard_with(provider, input_kind="numbers")
        called = []

        @g
        def f(features):
            called.append(1)

        with pytest.raises(InvalidInputError, match=r"features: row 1, feature 0 is NaN"):
            f(np.array([[1.0, 2.0], [np.nan, 1.0]]))
        s = g.stats()
        assert called == [] and s["invalid_inputs"] == 1 and s["errors"] == 0
        assert exporter.get_finished_spans()[0].attributes["guard.outcome"] == "invalid_input"

    def test_base_exception_ends_span_without_counting_error(self, traced):
        """KeyboardInterrupt and cancellation propagate, end the span, and are not model errors."""
        provider, exporter = traced
        g = guard_with(provider)

        @g
        def f(x):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            f(X)
        assert len(exporter.get_finished_spans()) == 1 and g.stats()["errors"] == 0


class TestShapes:
    def test_async_function_timed_across_await(self, traced):
        """An async function is awaited inside the guard, so its span covers the await."""
        provider, exporter = traced
        g = guard_with(provider)

        @g
        async def f(x):
            await asyncio.sleep(0.02)
            return x.sum()

        assert inspect.iscoroutinefunction(f)
        assert asyncio.run(f(X)) == 8.0
        assert exporter.get_finished_spans()[0].attributes["guard.latency_ms"] >= 20

    def test_async_exception(self, traced):
        """An async model's exception is recorded and re-raised."""
        provider, exporter = traced
        g = guard_with(provider)

        @g
        async def f(x):
            raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            asyncio.run(f(X))
        assert g.stats()["errors"] == 1

    def test_method_input_found_after_self(self, traced):
        """On a method the input is the first parameter after self, positional or keyword."""
        provider, exporter = traced
        g = guard_with(provider, n_features=4)

        class Model:
            @g
            def predict(self, inputs: np.ndarray) -> np.ndarray:
                return inputs.sum(axis=1)

        m = Model()
        assert m.predict(X).tolist() == [4.0, 4.0]
        assert m.predict(inputs=X).tolist() == [4.0, 4.0]
        with pytest.raises(InvalidInputError, match="inputs: expected 4 features per row, got 3"):
            m.predict(np.ones((1, 3)))

    def test_signature_and_hints_kept(self):
        """The wrapper keeps name, docstring, signature and type hints (BentoML reads them)."""
        g = Guard(name="m")

        def predict(self, inputs: np.ndarray, threshold: float = 0.5) -> dict:
            """Doc."""
            return {}

        wrapped = g(predict)
        assert wrapped.__name__ == "predict" and wrapped.__doc__ == "Doc."
        assert inspect.signature(wrapped) == inspect.signature(predict)
        assert typing.get_type_hints(wrapped) == typing.get_type_hints(predict)
        assert wrapped.guard is g

    def test_explicit_input_arg(self):
        """input_arg selects a later parameter; a wrong name fails at decoration time."""
        g = Guard(name="m", input_arg="rows")

        @g
        def f(flag: bool, rows):
            return rows.shape

        assert f(True, X) == (2, 4)
        with pytest.raises(Exception, match="input_arg='rows' is invalid"):
            g(lambda a: a)

    def test_concurrent_threads_count_every_call(self):
        """Calls from 8 threads at once are all counted (fresh per-call state, locked counters)."""
        g = Guard(name="m")
        f = g(lambda x: x)

        def work():
            for _ in range(250):
                f(X)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert g.stats()["calls"] == 2000 and g.stats()["ok"] == 2000


class TestSpans:
    def test_span_is_internal_child_of_current(self, traced):
        """The guard span is INTERNAL and a child of the caller's current span."""
        provider, exporter = traced
        g = guard_with(provider, version="7")
        f = g(lambda x: x)
        with provider.get_tracer("t").start_as_current_span("POST /predict") as parent:
            f(X)
        guard_span = next(s for s in exporter.get_finished_spans() if s.name == "guard m")
        assert guard_span.kind is SpanKind.INTERNAL
        assert guard_span.parent.span_id == parent.get_span_context().span_id
        assert guard_span.attributes["guard.model.version"] == "7"  # set when the guard's own span starts
        # compact: an ordinary call's outcome is "ok" by definition (else it is anomalous): not repeated
        assert "guard.outcome" not in guard_span.attributes and guard_span.attributes["guard.latency_ms"] > 0

    def test_own_span_of_ordinary_call_keeps_request_latency(self, traced):
        """Compact: the guard's own span (no server span to carry the request's time) keeps the request
        latency of a marked request; the outcome ("ok" for every ordinary call) stays off."""
        from guarded_serving.arrival import mark_arrival, reset_arrival

        provider, exporter = traced
        f = guard_with(provider)(lambda x: x)
        token = mark_arrival(time.perf_counter_ns() - 5_000_000)  # arrived 5 ms ago
        try:
            f(X)
        finally:
            reset_arrival(token)
        (span,) = exporter.get_finished_spans()
        assert span.attributes["guard.request.latency_ms"] >= 5.0 > span.attributes["guard.latency_ms"]
        assert "guard.outcome" not in span.attributes

    def test_model_spans_nest_under_guard_span(self, traced):
        """Spans the model opens are children of the guard span (it is current during the call)."""
        provider, exporter = traced
        g = guard_with(provider)
        tracer = provider.get_tracer("model")

        @g
        def f(x):
            with tracer.start_as_current_span("inner"):
                return x

        f(X)
        spans = {s.name: s for s in exporter.get_finished_spans()}
        assert spans["inner"].parent.span_id == spans["guard m"].context.span_id

    def test_sampled_out_normal_calls_emit_nothing(self, traced):
        """With trace_sample_ratio=0 normal calls export no span."""
        provider, exporter = traced
        g = guard_with(provider, trace_sample_ratio=0.0)
        f = g(lambda x: x)
        for _ in range(20):
            f(X)
        assert exporter.get_finished_spans() == ()

    def test_anomalies_exported_even_when_sampled_out(self, traced):
        """With trace_sample_ratio=0, errors and SLO breaches are still exported (forced)."""
        provider, exporter = traced
        g = guard_with(provider, trace_sample_ratio=0.0, latency_slo_ms=5)

        @g
        def f(x, fail=False, delay=0.0):
            time.sleep(delay)
            if fail:
                raise RuntimeError("x")

        f(X)
        with pytest.raises(RuntimeError):
            f(X, fail=True)
        f(X, delay=0.02)
        spans = exporter.get_finished_spans()
        assert len(spans) == 2
        assert all(s.attributes["guard.forced_export"] for s in spans)
        assert {s.attributes["guard.outcome"] for s in spans} == {"error", "ok"}
        slow = next(s for s in spans if s.attributes["guard.outcome"] == "ok")
        assert (slow.end_time - slow.start_time) / 1e6 >= 20  # real start and end times

    def test_forced_export_under_unsampled_parent(self):
        """Under a parent the provider sampled out, an anomalous call is exported with that parent's ids."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        g = Guard(name="m", tracer_provider=provider)

        @g
        def f(x, fail=False):
            if fail:
                raise RuntimeError("x")

        with provider.get_tracer("t").start_as_current_span("POST /predict") as parent:
            f(X)
            with pytest.raises(RuntimeError):
                f(X, fail=True)
        (span,) = exporter.get_finished_spans()
        ctx = parent.get_span_context()
        assert span.context.trace_id == ctx.trace_id and span.parent.span_id == ctx.span_id
        assert span.attributes["guard.forced_export"] is True

    def test_flagged_call_is_exported(self, traced):
        """A call a component flags is anomalous and exported even when sampled out."""
        provider, exporter = traced

        class Flagger(Component):
            name = "flagger"
            needs = (FEATURES,)

            def before_call(self, call: Call) -> None:
                if call.inputs[0, 0] > 100:
                    call.flag(**{"guard.edge.flagged": True})

        g = guard_with(provider, trace_sample_ratio=0.0, components=[Flagger()])
        f = g(lambda x: x)
        f(X)
        f(X * 1000)
        (span,) = exporter.get_finished_spans()
        assert span.attributes["guard.edge.flagged"] is True
        assert g.stats()["flagged"] == 1

    def test_no_sdk_costs_nothing_and_works(self):
        """With only the API (no SDK provider), calls work and no span is recorded."""
        g = Guard(name="m")
        f = g(lambda x: x)
        assert f(X) is X
        assert g.stats()["calls"] == 1


class TestComponents:
    def test_component_can_reject(self):
        """A component raising RejectedInputError stops the call before the model; counted as rejected."""
        class Rejector(Component):
            name = "rej"

            def before_call(self, call):
                raise RejectedInputError("too far from training data")

        called = []
        g = Guard(name="m", components=[Rejector()])
        f = g(lambda x: called.append(1))
        with pytest.raises(RejectedInputError) as info:
            f(X)
        assert info.value.error_code == 422 and called == []
        assert g.stats()["rejected"] == 1 and g.stats()["errors"] == 0

    def test_component_can_replace_input_and_answer(self):
        """set_input changes what the model sees; answer() skips the model."""
        class Halver(Component):
            name = "halver"
            needs = (FEATURES,)

            def before_call(self, call):
                if call.inputs.shape[0] == 1:
                    call.answer("fallback")
                else:
                    call.set_input(call.inputs[:1])

        g = Guard(name="m", components=[Halver()])
        f = g(lambda x: x.shape[0])
        assert f(X) == 1
        assert f(np.ones((1, 4))) == "fallback"

    def test_broken_component_does_not_break_serving(self):
        """A hook that raises is caught; the call succeeds; health reports the component."""
        class Broken(Component):
            name = "broken"

            def after_call(self, call):
                raise ZeroDivisionError("oops")

        g = Guard(name="m", components=[Broken()])
        assert g(lambda x: 5)(X) == 5
        check = g.health()["checks"]["guard.components"]
        assert check["status"] == "degraded" and "broken.after_call: ZeroDivisionError: oops" in check["reason"]

    def test_component_failing_to_start_is_a_component_error(self):
        """A component whose start() raises leaves serving on; health names the component and the hook."""
        class NoStart(Component):
            name = "nostart"

            def start(self):
                raise OSError("no thread for you")

        g = Guard(name="m", components=[NoStart()])
        assert g(lambda x: 5)(X) == 5
        check = g.health()["checks"]["guard.components"]
        assert check["status"] == "degraded" and "nostart.start: OSError: no thread for you" in check["reason"]

    def test_config_error_at_start_stops_the_start(self):
        """A ConfigError from start() (a setting that can never work) propagates; components already
        started are stopped again."""
        from guarded_serving import ConfigError

        events = []

        class First(Component):
            name = "first"

            def start(self):
                events.append("first.start")

            def stop(self):
                events.append("first.stop")

        class Refused(Component):
            name = "refused"

            def start(self):
                raise ConfigError("store_setting: refused the credentials")

        g = Guard(name="m", components=[First(), Refused()])
        with pytest.raises(ConfigError, match="store_setting"):
            g.start()
        assert events == ["first.start", "first.stop"]

    def test_non_component_rejected_at_construction(self):
        """Passing something that is not a Component fails when the guard is built."""
        with pytest.raises(Exception, match="expected guarded_serving.Component"):
            Guard(name="m", components=[object()])


class TestSpanDetail:
    class Context(Component):
        name = "ctx"
        span_scope = "anomalous"

        def span_attributes(self):
            return {"guard.ctx.reading": 1.5}

    class Always(Component):
        name = "always"

        def span_attributes(self):
            return {"guard.always.digest": "abc"}

    def _spans(self, **kw):
        provider, exporter = in_memory_tracer_provider()
        g = Guard(name="m", latency_slo_ms=100, tracer_provider=provider,
                  components=[self.Context(), self.Always()], **kw)

        @g
        def f(x, delay=0.0):
            time.sleep(delay)

        f(X)  # well under the budget even on a busy machine
        f(X, delay=0.15)
        return exporter.get_finished_spans()

    def test_compact_keeps_context_for_anomalies(self):
        """By default a normal span carries 'every'-scope attributes only; an anomalous one carries all."""
        normal, slow = self._spans()
        assert normal.attributes["guard.always.digest"] == "abc" and "guard.ctx.reading" not in normal.attributes
        assert slow.attributes["guard.ctx.reading"] == 1.5 and slow.attributes["guard.always.digest"] == "abc"

    def test_full_detail_puts_everything_on_every_span(self):
        """span_detail='full' attaches every component's attributes to normal spans too."""
        normal, _ = self._spans(span_detail="full")
        assert normal.attributes["guard.ctx.reading"] == 1.5


class TestSpanMode:
    def _served(self, mode, sampler=None, **config):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        g = Guard(name="m", latency_slo_ms=100, tracer_provider=provider, span_mode=mode, operational=False,
                  **config)
        server = provider.get_tracer("server")

        @g
        def f(x, delay=0.0):
            time.sleep(delay)
            return x

        def request(*args, **kw):
            with server.start_as_current_span("POST /predict", kind=SpanKind.SERVER):
                return f(*args, **kw)

        return g, request, exporter

    def test_auto_puts_ordinary_calls_on_the_server_span(self):
        """Under a SERVER span an ordinary call adds no span; the server span carries the guard's attributes."""
        g, request, exporter = self._served("auto")
        request(X)
        (server,) = exporter.get_finished_spans()
        assert server.name == "POST /predict" and server.attributes["guard.latency_ms"] > 0
        assert server.attributes["guard.model.name"] == "m" and "guard.request_id" in server.attributes
        # compact: the facts only the call has; the version and the deployment's constants, the outcome ("ok"
        # for every ordinary call) and the anomaly markers (false here) are on anomalous spans, or on every
        # span with span_detail="full"
        for key in ("guard.anomalous", "guard.slo.violated", "guard.slo.latency_ms", "guard.artifact.digest",
                    "guard.outcome", "guard.model.version"):
            assert key not in server.attributes, key
        g_full, request_full, exporter_full = self._served("auto", span_detail="full")
        request_full(X)
        (server,) = exporter_full.get_finished_spans()
        assert server.attributes["guard.anomalous"] is False and server.attributes["guard.slo.latency_ms"] > 0
        assert server.attributes["guard.outcome"] == "ok" and "guard.model.version" in server.attributes

    def test_auto_keeps_a_guard_span_for_anomalies(self):
        """A slow or failing call still gets a guard span, a child of the server span, not marked forced."""
        g, request, exporter = self._served("auto")
        request(X, delay=0.15)
        guard_span, server = exporter.get_finished_spans()
        assert guard_span.name == "guard m" and guard_span.parent.span_id == server.context.span_id
        assert guard_span.attributes["guard.slo.violated"] is True and "guard.forced_export" not in guard_span.attributes
        assert guard_span.end_time - guard_span.start_time >= 150_000_000

    def test_own_mode_always_adds_a_guard_span(self):
        """span_mode='own' keeps one guard span per call, a child of the current span."""
        g, request, exporter = self._served("own")
        request(X)
        names = [s.name for s in exporter.get_finished_spans()]
        assert names == ["guard m", "POST /predict"]

    def test_auto_outside_a_server_span_is_own(self):
        """Without an enclosing SERVER span, auto behaves as own."""
        g, request, exporter = self._served("auto")
        g.wrap(lambda x: x)(X)
        assert [s.name for s in exporter.get_finished_spans()] == ["guard m"]

    def test_sampled_out_server_still_exports_the_anomaly(self):
        """Under a server span that was sampled out, a failing call's guard span is still exported (forced)."""
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

        g, request, exporter = self._served("auto", sampler=ParentBased(ALWAYS_OFF))

        def boom(x):
            raise ValueError("bad")

        g2 = g  # same guard, same provider
        with pytest.raises(ValueError):
            tracer = g2.context.tracer_provider.get_tracer("server")
            with tracer.start_as_current_span("POST /predict", kind=SpanKind.SERVER):
                g2.wrap(boom)(X)
        (span,) = exporter.get_finished_spans()
        assert span.name == "guard m" and span.attributes["guard.forced_export"] is True
        assert span.attributes["guard.outcome"] == "error"
