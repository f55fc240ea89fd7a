"""A real Prometheus (Debian's ``prometheus`` package) on 127.0.0.1 for tests.

:class:`LocalPrometheus` writes a config that scrapes the given targets every
second and loads rule files, starts ``prometheus`` on a free loopback port with
its storage in a temp dir, and answers PromQL through the HTTP API.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from guarded_serving.testing import free_port, wait_until
from tests.child_process import ChildProcess

__all__ = ["LocalPrometheus", "PROMETHEUS", "PROMTOOL"]

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


class LocalPrometheus(ChildProcess):
    """``prometheus`` scraping ``targets`` (``host:port``) every second, evaluating ``rule_files`` every second."""

    stop_timeout_s = 20.0

    def __init__(self, targets: Sequence[str], rule_files: Sequence[Path] = (), *, interval: str = "1s") -> None:
        if PROMETHEUS is None:
            raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="gs-prometheus-")
        d = Path(self._tmp.name)
        self.log_path = d / "prometheus.log"
        config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
                  "rule_files": [str(p) for p in rule_files],
                  "scrape_configs": [{"job_name": "guarded-serving", "metrics_path": "/metrics",
                                      "static_configs": [{"targets": list(targets)}]}]}
        self.config = d / "prometheus.yml"
        self.config.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.args = [PROMETHEUS, f"--config.file={self.config}", f"--storage.tsdb.path={d / 'data'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> "LocalPrometheus":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        if not wait_until(ready, timeout, 0.2):
            self.stop()
            raise TimeoutError(f"prometheus not ready in {timeout} s:\n{self.log_tail()}")
        return self

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>``; the ``data`` member of a successful answer."""
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{url}: HTTP {e.code}: {e.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        data = self.api("query", query=expr)
        return data["result"] if data["resultType"] == "vector" else [{"metric": {}, "value": data["result"]}]

    def alerts(self) -> list[dict[str, Any]]:
        return self.api("alerts")["alerts"]

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        shutil.rmtree(self._tmp.name, ignore_errors=True)
