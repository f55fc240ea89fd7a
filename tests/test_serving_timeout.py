"""BentoML's request-timeout middleware and guarded_serving.serving.timeout's release of each request's memory."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import types
import weakref

import pytest
from bentoml._internal.server.base_app import BaseAppFactory
from bentoml._internal.server.http import traffic

from guarded_serving.serving.timeout import (
    release_request_timers,
    release_request_timers_from_env,
    releasing_timeout_middleware,
)

#: what an outer layer (BentoML's OpenTelemetry middleware: the server span) puts in the request's context
REQUEST_STATE: contextvars.ContextVar = contextvars.ContextVar("request_state")


class Payload:
    """Stands for the server span: something the request's context refers to."""


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _request(middleware, refs: list) -> list[dict]:
    """One request through ``middleware`` in a task of its own (its own context, as a server gives it)."""
    payload = Payload()
    refs.append(weakref.ref(payload))
    REQUEST_STATE.set(payload)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await middleware({"type": "http", "path": "/predict"}, receive, send)
    return sent


def _alive_after(middleware_cls, n: int = 50, timeout: float = 30.0) -> tuple[int, list[list[dict]]]:
    """Serve ``n`` requests, then count the requests whose context is still in memory (the loop still
    running: timers that have not fired are still scheduled)."""

    async def main():
        mw = middleware_cls(_ok_app, timeout=timeout)
        refs: list = []
        answers = [await asyncio.get_running_loop().create_task(_request(mw, refs)) for _ in range(n)]
        for _ in range(3):
            await asyncio.sleep(0)
        gc.collect()
        return sum(r() is not None for r in refs), answers

    return asyncio.run(main())


class TestStockMiddleware:
    def test_bentoml_timer_keeps_each_request_context_until_it_fires(self):
        """BentoML's TimeoutMiddleware keeps every finished request's context (here: the payload) alive:
        the behaviour this module works around (if this fails, BentoML fixed it and the workaround can go)."""
        alive, answers = _alive_after(traffic.TimeoutMiddleware)
        assert all(a[0]["status"] == 200 for a in answers)
        assert alive == 50


class TestReleasingMiddleware:
    def test_nothing_of_a_finished_request_stays(self):
        """With the releasing middleware no finished request's context is still in memory."""
        alive, answers = _alive_after(releasing_timeout_middleware())
        assert all(a[0]["status"] == 200 and a[1]["body"] == b"ok" for a in answers)
        assert alive == 0

    def test_timeout_still_answers_504(self):
        """A request that outlives the timeout is cancelled and answered 504 naming the limit."""
        cancelled = []

        async def slow(scope, receive, send):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        async def main():
            mw = releasing_timeout_middleware()(slow, timeout=0.05)
            sent: list[dict] = []

            async def send(m):
                sent.append(m)

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            await mw({"type": "http", "path": "/predict"}, receive, send)
            return sent

        sent = asyncio.run(main())
        assert sent[0]["status"] == 504
        assert json.loads(sent[1]["body"]) == {"error": "Not able to process the request in 0.05 seconds"}
        assert cancelled == [True]

    def test_other_scopes_pass_through(self):
        """Lifespan (and any non-HTTP scope) goes straight to the app, with no timer."""
        seen = []

        async def app(scope, receive, send):
            seen.append(scope["type"])

        async def main():
            await releasing_timeout_middleware()(app, timeout=0.05)({"type": "lifespan"}, None, None)
            return len(asyncio.get_running_loop()._scheduled)

        assert asyncio.run(main()) == 0 and seen == ["lifespan"]

    def test_is_a_bentoml_timeout_middleware(self):
        """The replacement is a subclass of BentoML's, so anything checking the type still matches."""
        assert issubclass(releasing_timeout_middleware(), traffic.TimeoutMiddleware)


class TestInstall:
    def test_bentoml_app_factory_builds_the_releasing_middleware(self, monkeypatch):
        """After release_request_timers(), BentoML's app factory puts the releasing middleware in the
        app (it looks the class up when it builds the app); calling it twice changes nothing."""
        monkeypatch.setattr(traffic, "TimeoutMiddleware", traffic.TimeoutMiddleware)  # restored after the test
        factory = types.SimpleNamespace(timeout=30, max_concurrency=None)
        assert BaseAppFactory.middlewares.fget(factory)[0].cls is traffic.TimeoutMiddleware
        assert release_request_timers() is True
        assert release_request_timers() is True
        built = BaseAppFactory.middlewares.fget(factory)
        assert built[0].cls is releasing_timeout_middleware() and built[0].kwargs == {"timeout": 30}

    def test_env_opt_out_keeps_bentoml_middleware(self, monkeypatch):
        """GUARDED_RELEASE_TIMERS=0 leaves BentoML's middleware in place; unset, it installs the releasing one."""
        stock = traffic.TimeoutMiddleware
        monkeypatch.setattr(traffic, "TimeoutMiddleware", stock)  # restored after the test
        assert release_request_timers_from_env({"GUARDED_RELEASE_TIMERS": "0"}) is False
        assert traffic.TimeoutMiddleware is stock
        assert release_request_timers_from_env({}) is True
        assert traffic.TimeoutMiddleware is releasing_timeout_middleware()

    def test_refuses_a_middleware_it_does_not_know(self, monkeypatch, caplog):
        """A BentoML whose TimeoutMiddleware is something else is left alone, with one warning."""

        class Other:
            def __init__(self, app, timeout):
                self.app = app

        monkeypatch.setattr(traffic, "TimeoutMiddleware", Other)
        with caplog.at_level("WARNING", logger="guarded_serving.serving"):
            assert release_request_timers() is False
        assert traffic.TimeoutMiddleware is Other
        assert "nothing changed" in caplog.text


@pytest.mark.parametrize("cls_name", ["stock", "releasing"])
def test_answers_are_the_same(cls_name):
    """Both middlewares give the app's answer unchanged."""
    cls = traffic.TimeoutMiddleware if cls_name == "stock" else releasing_timeout_middleware()
    _, answers = _alive_after(cls, n=3)
    assert [a[1]["body"] for a in answers] == [b"ok"] * 3
