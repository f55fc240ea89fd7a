"""A stand-in feature store: the example model's downstream component, on 127.0.0.1.

    python -m services.feature_store --port 8701

``GET /health`` answers 200 ``{"status": "ok"}``. The demo starts one, points
the served example's probe at it (``GUARDED_PROBES``), and stops and restarts
it to show the guard catching a downstream outage and its recovery.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FeatureStore"]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server API
        code, body = (200, {"status": "ok"}) if self.path.rstrip("/") == "/health" else (404, {"error": "not found"})
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True


class FeatureStore:
    """An HTTP health endpoint that can go down and come back on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/health"
        self._httpd: _Server | None = None

    @property
    def up(self) -> bool:
        return self._httpd is not None

    def start(self) -> "FeatureStore":
        if self._httpd is None:
            self._httpd = _Server(("127.0.0.1", self.port), _Handler)
            threading.Thread(target=self._httpd.serve_forever, name="feature-store", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FeatureStore":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8701)
    args = ap.parse_args(argv)
    with FeatureStore(args.port) as fs:
        print(f"feature store health at {fs.url} (Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
