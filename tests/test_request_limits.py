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
