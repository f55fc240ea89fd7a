"""Downstream probes against real loopback servers that the tests start and stop."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from guarded_serving.errors import ConfigError
from guarded_serving.operational.downstream import DownstreamProber, backoff_delay, parse_probe, probe_once
from guarded_serving.testing import free_port


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class _Server:
    """A real HTTP server on 127.0.0.1:port that can be stopped and started again on the same port."""

    def __init__(self, port, handler=_Health):
        self.port, self.handler, self.httpd = port, handler, None

    def start(self):
        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server(free_port()).start()
    yield s
    if s.httpd.socket.fileno() != -1:
        s.stop()


def _status(prober, name):
    return {r.name: r for r in prober.checks()}[f"downstream.{name}"]


def test_http_component_goes_down_and_recovers_by_itself(server):
    """An HTTP probe is ok, fails with "connection refused" once the server stops, and recovers when it returns."""
    p = DownstreamProber([{"name": "fs", "url": f"http://127.0.0.1:{server.port}/health",
                           "failures_to_fail": 2, "interval_s": 0.1}])
    assert _status(p, "fs").status == "unavailable"
    p.run_due(force=True)
    assert _status(p, "fs").status == "ok"
    server.stop()
    p.run_due(force=True)
    r = _status(p, "fs")
    assert r.status == "degraded" and "connection refused" in r.reason
    p.run_due(force=True)
    r = _status(p, "fs")
    assert r.status == "failing" and "connection refused" in r.reason and r.details["consecutive_failures"] == 2
    server.start()
    p.run_due(force=True)
    assert _status(p, "fs").status == "ok"


def test_http_error_status_is_down(server):
    """A 503 answer counts as down, with the status in the reason."""
    class Unhealthy(_Health):
        status = 503

    s = _Server(free_port(), Unhealthy).start()
    try:
        (r,) = [probe_once(parse_probe({"name": "x", "url": f"http://127.0.0.1:{s.port}/health"}))]
        assert r is not None and "503" in r
    finally:
        s.stop()


def test_tcp_probe_against_a_real_listener():
    """A TCP probe is up while a socket listens and refused once it closes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    p = parse_probe({"name": "db", "tcp": f"127.0.0.1:{port}", "timeout_s": 1})
    assert probe_once(p) is None
    sock.close()
    assert probe_once(p) == "connection refused"


def test_probe_timeout_is_reported():
    """A listener that never answers HTTP times out within the probe's timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        p = parse_probe({"name": "slow", "url": f"http://127.0.0.1:{sock.getsockname()[1]}/", "timeout_s": 0.3})
        assert "0.3 s" in probe_once(p)
    finally:
        sock.close()


def test_backoff_doubles_while_down_up_to_the_cap():
    """The wait doubles per consecutive failure and stops at the cap."""
    assert [backoff_delay(k, 1.0, 10.0) for k in range(6)] == [1.0, 1.0, 2.0, 4.0, 8.0, 10.0]


def test_prober_schedules_with_backoff():
    """A down component is not probed again before its backoff delay has passed."""
    now = [100.0]
    p = DownstreamProber([{"name": "db", "tcp": f"127.0.0.1:{free_port()}", "interval_s": 1.0}],
                         backoff_max_s=8.0, clock=lambda: now[0])
    p.run_due()
    p.run_due()  # not due yet: still one probe
    assert _status(p, "db").details["probes"] == 1
    now[0] += 1.0
    p.run_due()
    assert _status(p, "db").details["next_probe_in_s"] == 2.0
    now[0] += 1.5
    p.run_due()
    assert _status(p, "db").details["probes"] == 2


def test_prober_thread_finds_a_down_component_and_stops():
    """The background thread turns a closed port failing by itself and stops when asked."""
    changed = threading.Event()
    p = DownstreamProber([{"name": "db", "tcp": f"127.0.0.1:{free_port()}", "interval_s": 0.05,
                           "failures_to_fail": 1}], on_change=changed.set)
    p.start()
    try:
        assert changed.wait(20)
    finally:
        p.stop()
    assert _status(p, "db").status == "failing"


@pytest.mark.parametrize("bad", [
    {"name": "x"}, {"name": "x", "url": "ftp://h/"}, {"name": "x", "tcp": "nohost"},
    {"name": "x y", "tcp": "h:1"}, {"name": "x", "tcp": "h:1", "timeout_s": 0}, {"name": "x", "tcp": "h:1", "oops": 1},
])
def test_bad_probe_specs_are_config_errors(bad):
    """Malformed probe specs raise ConfigError."""
    with pytest.raises(ConfigError):
        parse_probe(bad)
