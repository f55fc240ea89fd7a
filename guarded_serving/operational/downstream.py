"""Downstream probes: is what the model needs at serving time (a feature store, a database) up?

A probe is ``{"name": "feature_store", "url": "http://127.0.0.1:8000/health"}``
(HTTP GET; a 2xx or 3xx answer is up) or ``{"name": "db", "tcp": "127.0.0.1:5432"}``
(a TCP connect). Optional keys: ``timeout_s``, ``interval_s``,
``failures_to_fail`` and ``readiness`` (False: a failing probe never makes
the service not ready).

A background thread probes each component every ``interval_s`` while it is
up; while it is down the delay doubles after each failure, up to
``backoff_max_s``, and the first success brings it back by itself. One
failed probe makes the check ``degraded``; ``failures_to_fail`` consecutive
ones make it ``failing`` with the reason (connection refused, timeout, HTTP
status). HTTP probes bypass proxy settings: they are meant for the service's
own network.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .. import health as H
from ..errors import ConfigError
from ..health import CheckResult
from ..worker import PeriodicWorker

__all__ = ["DownstreamProber", "Probe", "backoff_delay", "parse_probe", "probe_once"]

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_KEYS = {"name", "url", "tcp", "timeout_s", "interval_s", "failures_to_fail", "readiness"}


@dataclass(frozen=True)
class Probe:
    name: str
    url: str | None = None
    host: str | None = None
    port: int | None = None
    timeout_s: float = 2.0
    interval_s: float = 10.0
    failures_to_fail: int = 2
    readiness: bool = True

    @property
    def target(self) -> str:
        return self.url if self.url is not None else f"tcp://{self.host}:{self.port}"


def parse_probe(spec: Any, *, timeout_s: float = 2.0, interval_s: float = 10.0,
                failures_to_fail: int = 2) -> Probe:
    """A :class:`Probe` from its dict form; ConfigError naming the bad key otherwise."""
    if isinstance(spec, Probe):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"probe {spec!r} is invalid: expected a dict like "
                          "{'name': 'db', 'tcp': '127.0.0.1:5432'} or {'name': 'fs', 'url': 'http://...'}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise ConfigError(f"probe {spec!r} has unknown keys {sorted(unknown)}: valid keys are {sorted(_KEYS)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name or not set(name) <= _NAME_OK:
        raise ConfigError(f"probe name {name!r} is invalid: expected letters, digits, '_', '-', '.'")
    if ("url" in spec) == ("tcp" in spec):
        raise ConfigError(f"probe {name!r} is invalid: give exactly one of 'url' (HTTP) or 'tcp' (host:port)")
    kw: dict[str, Any] = {"timeout_s": spec.get("timeout_s", timeout_s),
                          "interval_s": spec.get("interval_s", interval_s),
                          "failures_to_fail": spec.get("failures_to_fail", failures_to_fail),
                          "readiness": spec.get("readiness", True)}
    for k in ("timeout_s", "interval_s"):
        v = kw[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 3600:
            raise ConfigError(f"probe {name!r}: {k}={v!r} is invalid: expected seconds, > 0 and <= 3600")
    f = kw["failures_to_fail"]
    if isinstance(f, bool) or not isinstance(f, int) or f < 1:
        raise ConfigError(f"probe {name!r}: failures_to_fail={f!r} is invalid: expected an integer >= 1")
    if not isinstance(kw["readiness"], bool):
        raise ConfigError(f"probe {name!r}: readiness={kw['readiness']!r} is invalid: expected True or False")
    if "url" in spec:
        url = spec["url"]
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"probe {name!r}: url={url!r} is invalid: expected http(s)://host[:port]/path")
        return Probe(name, url=url, **kw)
    tcp = spec["tcp"]
    host, _, port = tcp.rpartition(":") if isinstance(tcp, str) else ("", "", "")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"probe {name!r}: tcp={tcp!r} is invalid: expected 'host:port'")
    return Probe(name, host=host.strip("[]"), port=int(port), **kw)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def probe_once(p: Probe) -> str | None:
    """Probe once: ``None`` when up, else why it is down."""
    try:
        if p.url is not None:
            with _OPENER.open(p.url, timeout=p.timeout_s) as r:
                if r.status >= 400:  # pragma: no cover - urllib raises HTTPError for these
                    return f"HTTP {r.status}"
            return None
        with socket.create_connection((p.host, p.port), timeout=p.timeout_s):
            return None
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.reason}"
    except urllib.error.URLError as e:
        return _oserror_text(e.reason, p)
    except OSError as e:
        return _oserror_text(e, p)


def _oserror_text(e: Any, p: Probe) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no answer within {p.timeout_s:g} s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"cannot resolve host ({e})"
    return f"{type(e).__name__}: {e}" if isinstance(e, BaseException) else str(e)


def backoff_delay(failures: int, base_s: float, cap_s: float) -> float:
    """Seconds until the next probe after ``failures`` consecutive failures (0: up)."""
    if failures <= 0:
        return base_s
    return min(base_s * (2.0 ** (failures - 1)), cap_s)


class _State:
    __slots__ = ("failures", "last_error", "down_since", "next_due", "last_ok", "probes", "last_ms")

    def __init__(self) -> None:
        self.failures = 0
        self.last_error: str | None = None
        self.down_since: float | None = None
        self.next_due = 0.0
        self.last_ok: float | None = None
        self.probes = 0
        self.last_ms: float | None = None


class DownstreamProber:
    """Probe downstream components in a background thread; cache one check per probe.

    Parameters
    ----------
    probes : iterable of Probe or dict
    backoff_max_s : float, default=60
        Longest wait between probes of a component that is down.
    on_change : callable, optional
        Called (in the prober thread) after each round that changed a verdict.
    clock : callable, default=time.monotonic
    """

    def __init__(self, probes: Iterable[Probe | Mapping[str, Any]], *, backoff_max_s: float = 60.0,
                 on_change: Callable[[], None] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.probes = [parse_probe(p) for p in probes]
        names = [p.name for p in self.probes]
        if len(set(names)) != len(names):
            raise ConfigError(f"probes have duplicate names {names}: each needs its own name")
        self.backoff_max_s = float(backoff_max_s)
        self.on_change = on_change
        self._clock = clock
        self._state = {p.name: _State() for p in self.probes}
        self._results: dict[str, CheckResult] = {p.name: self._verdict(p, self._state[p.name])
                                                 for p in self.probes}
        self._worker: PeriodicWorker | None = None

    # -- probing ----------------------------------------------------------------------
    def run_due(self, now: float | None = None, *, force: bool = False) -> bool:
        """Probe every component due at ``now`` (all of them with ``force``); True if a verdict changed."""
        now = self._clock() if now is None else now
        changed = False
        for p in self.probes:
            st = self._state[p.name]
            if not force and now < st.next_due:
                continue
            t0 = time.perf_counter()
            err = probe_once(p)
            st.last_ms = (time.perf_counter() - t0) * 1000.0
            st.probes += 1
            if err is None:
                st.failures, st.last_error, st.down_since, st.last_ok = 0, None, None, time.time()
            else:
                st.failures += 1
                st.last_error = err
                if st.down_since is None:
                    st.down_since = time.time()
            delay = backoff_delay(st.failures, p.interval_s, max(self.backoff_max_s, p.interval_s))
            st.next_due = self._clock() + delay
            old = self._results[p.name]
            new = self._verdict(p, st, delay)
            self._results[p.name] = new
            changed |= (old.status != new.status)
        return changed

    def _verdict(self, p: Probe, st: _State, delay: float | None = None) -> CheckResult:
        name = f"downstream.{p.name}"
        details = {"target": p.target, "consecutive_failures": st.failures, "last_error": st.last_error,
                   "probes": st.probes, "last_probe_ms": None if st.last_ms is None else round(st.last_ms, 2),
                   "next_probe_in_s": delay, "down_since": st.down_since}
        if st.probes == 0:
            return CheckResult(name, H.UNAVAILABLE, f"{p.target} not probed yet", details, p.readiness)
        if st.failures == 0:
            return CheckResult(name, H.OK, f"{p.target} answered in {st.last_ms:.1f} ms", details, p.readiness)
        text = (f"{p.name} at {p.target} is down: {st.last_error} ({st.failures} failed probe"
                f"{'s' if st.failures > 1 else ''}; next in {delay:g} s)")
        status = H.FAILING if st.failures >= p.failures_to_fail else H.DEGRADED
        return CheckResult(name, status, text, details, p.readiness)

    def checks(self) -> list[CheckResult]:
        return list(self._results.values())

    # -- background -----------------------------------------------------------------------
    def _round(self) -> None:
        if self.run_due() and self.on_change is not None:
            self.on_change()

    def _until_next_due(self) -> float:
        now = self._clock()
        wait = min((s.next_due for s in self._state.values()), default=now + 60.0) - now
        return max(0.01, min(wait, 60.0))

    def start(self) -> None:
        if not self.probes or (self._worker is not None and self._worker.running):
            return
        # the wait is "until the next probe is due", so no jitter: backoff is per probe
        self._worker = PeriodicWorker("downstream-prober", self._round, self._until_next_due, jitter=0.0,
                                      run_first=True, join_timeout_s=10, weak=True).start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
