"""RequestLimits as a plain ASGI app (no server): the one-message fast path, arrival marking, chunked bodies."""

from __future__ import annotations

import asyncio
import json

from guarded_serving.arrival import arrival_ns
from guarded_serving.serving.limits import RequestLimits


def _run(mw: RequestLimits, messages: list[dict], headers: list[tuple[bytes, bytes]]) -> tuple[list, list]:
    seen: list = []
    sent: list = []
    pending = list(messages)

    async def receive() -> dict:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    async def go() -> None:
        await mw({"type": "http", "method": "POST", "path": "/predict", "headers": headers}, receive, send)

    asyncio.run(go())
    return seen, sent


def _app(seen: list):
    async def app(scope, receive, send) -> None:
        seen.append(("arrival", arrival_ns()))
        while True:
            m = await receive()
            seen.append(m)
            if not m.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


def test_a_one_message_body_reaches_the_app_as_it_came_with_the_arrival_marked():
    seen: list = []
    body = json.dumps({"inputs": [[1.0, 2.0]]}).encode()
    first = {"type": "http.request", "body": body, "more_body": False}
    mw = RequestLimits(_app(seen), max_body_bytes=1000, mark_arrival=True)
    _, sent = _run(mw, [first], [(b"content-type", b"application/json"),
                                 (b"content-length", str(len(body)).encode())])
    assert sent[0]["status"] == 200
    assert seen[0][0] == "arrival" and isinstance(seen[0][1], int)
    assert seen[1] is first  # handed on, not copied


def test_without_mark_arrival_nothing_is_marked():
    seen: list = []
    mw = RequestLimits(_app(seen), max_body_bytes=1000)
    _run(mw, [{"type": "http.request", "body": b"{}", "more_body": False}], [])
    assert seen[0] == ("arrival", None)


def test_a_chunked_body_is_gathered_and_one_over_the_limit_is_413_naming_it():
    seen: list = []
    mw = RequestLimits(_app(seen), max_body_bytes=10)
    parts = [{"type": "http.request", "body": b"12345", "more_body": True},
             {"type": "http.request", "body": b"678", "more_body": False}]
    _, sent = _run(mw, parts, [])
    assert sent[0]["status"] == 200 and seen[1]["body"] == b"12345678" and not seen[1]["more_body"]
    seen.clear()
    parts = [{"type": "http.request", "body": b"123456", "more_body": True},
             {"type": "http.request", "body": b"789012", "more_body": True},
             {"type": "http.request", "body": b"never read", "more_body": False}]
    _, sent = _run(mw, parts, [])
    assert sent[0]["status"] == 413 and b"10 bytes" in sent[1]["body"] and not seen


def test_declared_length_over_the_limit_and_bad_length_are_refused_before_reading():
    seen: list = []
    mw = RequestLimits(_app(seen), max_body_bytes=10)
    _, sent = _run(mw, [], [(b"Content-Length", b"11")])
    assert sent[0]["status"] == 413 and b"11 bytes" in sent[1]["body"]
    _, sent = _run(mw, [], [(b"content-length", b"ten")])
    assert sent[0]["status"] == 400 and b"not a number" in sent[1]["body"] and not seen


def _guarded_app(guard):
    """An ASGI app that runs a guarded function (as BentoML would, in this task) and answers 200."""
    import numpy as np

    @guard
    def predict(inputs):
        return {"ok": True}

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body", False):
            pass
        predict(np.zeros((1, 2)))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})
    return app


def test_the_guards_response_headers_are_added_to_the_response_start_by_the_middleware():
    """With mark_arrival the middleware sends the guard's headers (no framework request context needed):
    X-Request-Id on every call, the framework's own headers kept, each header once."""
    from guarded_serving import Guard
    from guarded_serving.serving.bentoml import RequestTiming

    guard = Guard(name="m")
    for mw in (RequestLimits(_guarded_app(guard), mark_arrival=True), RequestTiming(_guarded_app(guard))):
        _, sent = _run(mw, [{"type": "http.request", "body": b"{}", "more_body": False}], [])
        start = sent[0]
        assert start["type"] == "http.response.start" and start["status"] == 200
        names = [k for k, _ in start["headers"]]
        assert names.count(b"x-request-id") == 1 and b"content-type" in names, names
        rid = dict(start["headers"])[b"x-request-id"].decode()
        assert len(rid) == 49 and rid[16] == "-", rid
        assert sent[1] == {"type": "http.response.body", "body": b"{}"}  # the body passes untouched
    guard.stop()


def test_without_the_mark_no_header_is_added_and_a_header_set_twice_is_sent_once():
    from guarded_serving.arrival import mark_request, reset_arrival
    from guarded_serving.call import Call

    seen: list = []
    mw = RequestLimits(_app(seen), max_body_bytes=1000)  # no mark_arrival: nothing to add
    _, sent = _run(mw, [{"type": "http.request", "body": b"{}", "more_body": False}], [])
    assert sent[0]["headers"] == []

    sink: list = []
    token = mark_request(headers=sink)
    try:
        call = Call((), {}, None, None, None, header_sink=sink)
        call.set_header("X-Guard-Edge", "ok")
        call.set_header("X-Other", "1")
        call.set_header("X-Guard-Edge", "flagged; rows=0")
    finally:
        reset_arrival(token)
    assert sink == [(b"x-other", b"1"), (b"x-guard-edge", b"flagged; rows=0")]
    assert call.headers == {"X-Guard-Edge": "flagged; rows=0", "X-Other": "1"}
    again = Call((), {}, None, None, None, header_sink=sink)  # the same list: the last value set wins
    again.set_header("x-other", "2")
    assert sink == [(b"x-guard-edge", b"flagged; rows=0"), (b"x-other", b"2")]


def test_a_guarded_call_inside_another_keeps_the_outer_calls_request_id():
    import numpy as np

    from guarded_serving import Guard
    from guarded_serving.arrival import mark_request, reset_arrival

    outer_guard, inner_guard = Guard(name="outer"), Guard(name="inner")
    seen: dict = {}

    @inner_guard
    def inner(inputs):
        return 1

    @outer_guard
    def outer(inputs):
        seen["outer_id"] = dict(sink)[b"x-request-id"]  # set before the model runs
        return inner(inputs)

    sink: list = []
    token = mark_request(headers=sink)
    try:
        outer(np.zeros((1, 2)))
    finally:
        reset_arrival(token)
    assert [v for k, v in sink if k == b"x-request-id"] == [seen["outer_id"]]
    outer_guard.stop()
    inner_guard.stop()


def test_headers_reach_an_error_response_and_cross_into_the_worker_thread():
    """The guarded function runs in a worker thread (as BentoML's sync APIs do, the context copied); when it
    raises, the error response the app sends still carries the call's X-Request-Id."""
    import numpy as np

    from guarded_serving import Guard

    guard = Guard(name="m")

    @guard
    def predict(inputs):
        raise RuntimeError("model down")

    async def app(scope, receive, send) -> None:
        await receive()
        try:
            await asyncio.to_thread(predict, np.zeros((1, 2)))
            status = 200
        except RuntimeError:
            status = 500
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    _, sent = _run(RequestLimits(app, mark_arrival=True), [{"type": "http.request", "body": b"{}",
                                                            "more_body": False}], [])
    assert sent[0]["status"] == 500 and [k for k, _ in sent[0]["headers"]] == [b"x-request-id"]
    guard.stop()
