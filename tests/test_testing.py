"""guarded_serving.testing.wait_until: the one bounded polling loop the tests use."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time

import pytest

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import wait_until


def test_returns_the_first_truthy_value():
    """Polls until the predicate's value is truthy and returns that value."""
    calls = itertools.count(1)
    assert wait_until(lambda: (n := next(calls)) >= 3 and n, timeout=5, interval=0.001) == 3


def test_gives_up_after_the_timeout_with_the_last_value():
    """A predicate that never holds ends the loop after about ``timeout`` seconds with its last (falsy) value."""
    t0 = time.monotonic()
    assert wait_until(lambda: [], timeout=0.2, interval=0.01) == []
    assert 0.2 <= time.monotonic() - t0 < 5


def test_until_tests_the_value_and_returns_it_whatever_it_is():
    """With ``until`` the probe's last value comes back, met or not (e.g. a status code)."""
    codes = iter([200, 200, 503, 200])
    assert wait_until(lambda: next(codes), timeout=5, interval=0.001, until=lambda c: c == 503) == 503
    assert wait_until(lambda: 0, timeout=0.05, interval=0.01, until=lambda c: c == 503) == 0


def test_message_turns_a_timeout_into_an_assertion_error():
    """With ``message`` running out of time raises AssertionError naming it and the last value."""
    with pytest.raises(AssertionError, match=r"never ready \(not within 0.05 s; last value: \(200, 'x'\)\)"):
        wait_until(lambda: (200, "x"), timeout=0.05, interval=0.01, until=lambda v: v[0] == 503,
                   message="never ready")
    assert wait_until(lambda: 7, timeout=0.05, message="unused") == 7


def test_a_running_bento_server_is_not_started_twice(tmp_path):
    """A second start() while the first process runs is refused, naming it (it would leave that one serving)."""

    server = BentoServer("services.cancer:CancerClassifier", 1, cwd=tmp_path)
    server.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # stands for the first start
    try:
        with pytest.raises(RuntimeError, match=rf"already running as pid {server.proc.pid}: stop\(\) it"):
            server.start()
    finally:
        server.proc.kill()
        server.proc.wait(10)
    server._tmp.cleanup()
