"""A real Jaeger (v1.76.0, pinned in tools/jaeger) for tests and load tests.

Two ways to get one:

- :func:`shared_jaeger` -- the instance ``scripts/jaeger.sh`` manages on the
  standard loopback ports (OTLP 4317/4318, query 16686, health 13133). It is
  built once into the cache if missing and started if not running; the caller
  stops it at the end only if it started it (``JaegerHandle.started``).
- :class:`PrivateJaeger` -- the same cached binary on other loopback ports,
  from a config copy written to a temp dir, for fault tests that stop and
  restart Jaeger without disturbing the shared one, and for the UI test
  (``PrivateJaeger(ui=...)`` serves the built Jaeger UI, see :func:`ui_source`).

Both expose :class:`JaegerQuery` (``/api/traces`` as plain dicts).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from guarded_serving.testing import wait_until
from tests.child_process import ChildProcess

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "jaeger.sh"
CONFIG = ROOT / "tools" / "jaeger" / "config.yaml"  # Badger storage in $JAEGER_BADGER_DIR
CONFIGS = {"badger": CONFIG, "memory": ROOT / "tools" / "jaeger" / "config-memory.yaml"}

#: The standard ports of tools/jaeger/config.yaml.
STANDARD_PORTS = {"otlp_grpc": 4317, "otlp_http": 4318, "query_http": 16686, "query_grpc": 16685, "health": 13133}

__all__ = ["JaegerHandle", "JaegerQuery", "PrivateJaeger", "build_jaeger", "shared_jaeger", "tags_of", "ui_assets",
           "ui_source"]


def ui_source() -> Path | None:
    """The built Jaeger UI to serve: ``$GUARDED_JAEGER_UI``, else ``../shared/jaeger-ui/`` beside the
    repository (CI and developers' machines), else None."""
    env = os.environ.get("GUARDED_JAEGER_UI")
    if env:
        return Path(env)
    shared = ROOT.parent / "shared" / "jaeger-ui"
    return shared if shared.exists() else None


def ui_assets(source: Path) -> Path:
    """The folder of UI assets for ``source`` (a folder, a tarball, or a folder holding one), unpacked
    into the cache once by ``scripts/jaeger.sh ui-assets``."""
    res = subprocess.run(["bash", str(SCRIPT), "ui-assets"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "GUARDED_JAEGER_UI": str(source)})
    if res.returncode != 0:
        raise RuntimeError(f"scripts/jaeger.sh ui-assets failed ({res.returncode}): {res.stderr.strip()}")
    return Path(res.stdout.strip().splitlines()[-1])


def _run_script(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def build_jaeger(timeout: float = 1200.0) -> Path:
    """Path of the cached Jaeger binary, building it first if missing (minutes on a fresh machine)."""
    res = _run_script("build", timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/jaeger.sh build failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return Path(res.stdout.strip().splitlines()[-1])


def tags_of(span: dict[str, Any]) -> dict[str, Any]:
    """A Jaeger API span's tags as a plain dict."""
    return {t["key"]: t["value"] for t in span.get("tags", ())}


class JaegerQuery:
    """Jaeger's HTTP query API (``/api/...``) on 127.0.0.1."""

    def __init__(self, query_port: int) -> None:
        self.base = f"http://127.0.0.1:{query_port}/api"

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.loads(r.read())

    def services(self) -> list[str]:
        return self._get("/services").get("data") or []

    def traces(self, service: str, *, tags: dict[str, Any] | None = None, limit: int = 1000,
               since_us: int | None = None) -> list[dict[str, Any]]:
        """Traces of ``service`` (optionally with all ``tags``), each with ``spans`` and ``processes``."""
        params: dict[str, Any] = {"service": service, "limit": limit}
        if tags:
            params["tags"] = json.dumps({k: str(v).lower() if isinstance(v, bool) else str(v)
                                         for k, v in tags.items()})
        if since_us is not None:
            params["start"] = since_us
            params["end"] = int(time.time() * 1e6) + 60_000_000
        try:
            return self._get("/traces", params).get("data") or []
        except urllib.error.HTTPError as e:
            if e.code == 404:  # unknown service: nothing arrived yet
                return []
            raise

    def spans(self, service: str, **kw: Any) -> list[dict[str, Any]]:
        """All spans of the matching traces, each with ``serviceName`` and ``processTags`` added."""
        out = []
        for tr in self.traces(service, **kw):
            procs = tr.get("processes", {})
            for sp in tr["spans"]:
                p = procs.get(sp.get("processID"), {})
                out.append({**sp, "serviceName": p.get("serviceName"), "processTags": tags_of(p)})
        return out

    def wait_spans(self, service: str, predicate: Callable[[dict[str, Any]], bool], *, count: int = 1,
                   timeout: float = 30.0, **kw: Any) -> list[dict[str, Any]]:
        """Poll until ``count`` spans match ``predicate`` or ``timeout`` passes; return the matches."""

        def matches() -> list[dict[str, Any]]:
            try:
                return [s for s in self.spans(service, **kw) if predicate(s)]
            except OSError:
                return []

        return wait_until(matches, timeout, 0.5, until=lambda found: len(found) >= count)


@dataclass
class JaegerHandle:
    """A running Jaeger: where to send OTLP, how to query, and whether we started it."""

    otlp_http: str
    otlp_grpc: str
    query: JaegerQuery
    started: bool

    @property
    def traces_endpoint(self) -> str:
        return self.otlp_http + "/v1/traces"


def shared_jaeger() -> JaegerHandle:
    """Ensure the ``scripts/jaeger.sh`` instance runs (build if missing); ``started`` says if we started it."""
    was_running = _run_script("status", timeout=30).returncode == 0
    if not was_running:
        build_jaeger()
        res = _run_script("start", timeout=180)
        if res.returncode != 0:
            raise RuntimeError(f"scripts/jaeger.sh start failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return JaegerHandle(otlp_http="http://127.0.0.1:4318", otlp_grpc="127.0.0.1:4317",
                        query=JaegerQuery(STANDARD_PORTS["query_http"]), started=not was_running)


def stop_shared_jaeger() -> None:
    _run_script("stop", timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateJaeger(ChildProcess):
    """The cached Jaeger binary on its own free loopback ports.

    ``storage="memory"`` (default): ``stop()`` then ``start()`` restarts it on the
    same ports with an empty store. ``storage="badger"``: the configuration of
    ``scripts/jaeger.sh``, Badger in a directory of this instance (``badger_dir``),
    kept across restarts. Use as a context manager.
    """

    def __init__(self, storage: str = "memory", *, ui: Path | None = None) -> None:
        if storage not in CONFIGS:
            raise ValueError(f"storage={storage!r}: expected one of {sorted(CONFIGS)}")
        self.storage = storage
        self.ui = ui_assets(ui) if ui is not None else None
        self.ports = {k: _free_port() for k in STANDARD_PORTS}
        self._tmp = tempfile.TemporaryDirectory(prefix="gs-jaeger-")
        self.config = Path(self._tmp.name) / "config.yaml"
        self.log_path = Path(self._tmp.name) / "jaeger.log"
        self.badger_dir = Path(self._tmp.name) / "badger"
        for sub in ("keys", "values"):
            (self.badger_dir / sub).mkdir(parents=True, exist_ok=True)
        text = CONFIGS[storage].read_text()
        for key, std in STANDARD_PORTS.items():
            text, n = re.subn(rf"127\.0\.0\.1:{std}\b", f"127.0.0.1:{self.ports[key]}", text)
            if n != 1:
                raise RuntimeError(f"{CONFIGS[storage]}: expected one 127.0.0.1:{std} endpoint, found {n}")
        self.config.write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None
        self.query = JaegerQuery(self.ports["query_http"])
        self.otlp_http = f"http://127.0.0.1:{self.ports['otlp_http']}"
        self.ui_url = f"http://127.0.0.1:{self.ports['query_http']}"

    @property
    def traces_endpoint(self) -> str:
        return self.otlp_http + "/v1/traces"

    def start(self, timeout: float = 60.0) -> "PrivateJaeger":
        binary = build_jaeger()
        log = open(self.log_path, "ab")
        extra = [] if self.ui is None else [f"--set=extensions.jaeger_query.ui.assets_path={self.ui}"]
        self.proc = subprocess.Popen([str(binary), "--config", str(self.config), *extra], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, "JAEGER_BADGER_DIR": str(self.badger_dir)})
        log.close()
        proc = self.proc
        health = f"http://127.0.0.1:{self.ports['health']}/status"

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"jaeger exited with {proc.returncode}:\n{self.log_tail()}")
            return _ok(health) and _ok(self.query.base + "/services")

        if wait_until(healthy, timeout, 0.3):
            return self
        self.stop()
        raise TimeoutError(f"private jaeger not healthy in {timeout} s:\n{self.log_tail()}")

    def __enter__(self) -> "PrivateJaeger":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self._tmp.name, ignore_errors=True)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


if __name__ == "__main__":  # pragma: no cover - manual check
    with PrivateJaeger() as j:
        print("private jaeger up on", j.ports, "services:", j.query.services(), os.getpid())
