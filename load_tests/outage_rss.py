"""RSS of the served example's worker over time under a paced load, with the OTLP collector down.

    python -m load_tests.outage_rss --mode closed --seconds 60 --rate 120
    python -m load_tests.outage_rss --mode closed --seconds 60 --rate 120 --env GUARDED_RELEASE_TIMERS=0

``--mode closed``: tracing on, OTLP pointed at a closed loopback port (an outage from the start; nothing
listens on 127.0.0.1:4999 unless ``--port`` says otherwise); ``sink``: tracing on, to an in-process
receiver that answers 200 and keeps nothing; ``stop``: the same receiver, closed when the measurement
starts (a collector that goes away mid-load, as in the Jaeger fault test); ``off``: no tracing. Drift cycles are off (as in
tests/test_faults.py), so the drift buffer fills to ``GUARDED_DRIFT_BUFFER_ROWS`` and stays there.

Prints the curve every ``--every`` seconds: seconds since the measurement started, calls so far, the
worker's RSS and anonymous memory (MB), growth (MB) and growth per call (KB); then the growth in the
first and second half and the RSS after the load stops. The load is paced (``--rate`` calls/s from
``--threads`` threads), so a run costs a fraction of a core, and growth per call can be compared
across rates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until
from load_tests.compare_throughput import payload

ROOT = Path(__file__).resolve().parent.parent


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _worker(pid: int) -> psutil.Process:
    """The service worker: the process of the tree with the most resident memory."""
    root = psutil.Process(pid)
    return max([root, *root.children(recursive=True)], key=lambda p: p.memory_info().rss)


def _anon_mb(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["closed", "sink", "stop", "off"], default="closed")
    ap.add_argument("--port", type=int, default=4999, help="the closed OTLP port (mode closed)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=120.0, help="calls per second, all threads together")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=float, default=4.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--target", default="services.cancer:CancerClassifier")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="extra server environment")
    args = ap.parse_args()

    artifacts = ROOT / "services" / "artifacts"
    state = tempfile.TemporaryDirectory(prefix="gs-rss-")  # removed when the script ends
    env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_STATE_DIR": state.name,
           "GUARDED_LATENCY_SLO_MS": "2000", "GUARDED_DRIFT_INTERVAL_S": "3600", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    sink = None
    if args.mode == "closed":
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://127.0.0.1:{args.port}/v1/traces"
    elif args.mode in ("sink", "stop"):
        sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        threading.Thread(target=sink.serve_forever, daemon=True).start()
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = f"http://127.0.0.1:{sink.server_port}/v1/traces"
    for item in args.env:
        name, _, value = item.partition("=")
        env[name] = value
    body = json.dumps(payload(1)).encode()

    with BentoServer(args.target, free_port(), env=env, cwd=ROOT) as server:
        url = server.url + "/predict"
        # the dependency check's child processes come and go at start-up: wait for them
        wait_until(lambda: all(", import " in c["reason"] for n, c in requests.get(
            server.url + "/guard/health", timeout=10).json()["checks"].items() if n.startswith("dependency.")),
            timeout=120, interval=0.5)
        calls, failures = [0], [0]
        stop = threading.Event()
        lock = threading.Lock()

        def load() -> None:
            period = args.threads / args.rate
            with requests.Session() as s:
                due = time.monotonic()
                while not stop.is_set():
                    r = s.post(url, data=body, headers={"content-type": "application/json"}, timeout=30)
                    with lock:
                        calls[0] += 1
                        failures[0] += r.status_code != 200
                    due += period
                    wait = due - time.monotonic()
                    if wait > 0:
                        stop.wait(wait)
                    else:
                        due = time.monotonic()

        threads = [threading.Thread(target=load, daemon=True) for _ in range(args.threads)]
        for t in threads:
            t.start()
        time.sleep(args.warmup)
        if args.mode == "stop" and sink is not None:
            sink.shutdown()
            sink.server_close()  # the port refuses connections from now on
            sink = None
        worker = _worker(server.proc.pid)
        t0, c0, r0 = time.monotonic(), calls[0], worker.memory_info().rss / 2**20
        print(f"mode={args.mode} rate={args.rate:g}/s env={args.env} worker pid {worker.pid}, "
              f"RSS {r0:.1f} MB after {args.warmup:g} s of warm-up")
        print(f"{'t_s':>6} {'calls':>7} {'rss_mb':>7} {'anon_mb':>7} {'grew_mb':>7} {'kb_call':>7}")
        curve = []
        try:
            while time.monotonic() - t0 < args.seconds:
                time.sleep(args.every)
                rss = worker.memory_info().rss / 2**20
                n = calls[0] - c0
                t = time.monotonic() - t0
                curve.append((t, n, rss))
                print(f"{t:6.1f} {n:7d} {rss:7.1f} {_anon_mb(worker.pid):7.1f} {rss - r0:7.1f} "
                      f"{(rss - r0) * 1024 / max(n, 1):7.2f}", flush=True)
        finally:
            stop.set()
            for t in threads:
                t.join(5)
        half = len(curve) // 2
        if half:
            (_, n_mid, r_mid), (_, n_end, r_end) = curve[half - 1], curve[-1]
            print(f"first half: +{r_mid - r0:.1f} MB over {n_mid} calls; second half: {r_end - r_mid:+.1f} MB over "
                  f"{n_end - n_mid} calls ({(r_end - r_mid) * 1024 / max(n_end - n_mid, 1):.2f} KB/call); "
                  f"failures {failures[0]}")
        time.sleep(args.every)
        print(f"idle {args.every:g} s after the load: RSS {worker.memory_info().rss / 2**20:.1f} MB")
    if sink is not None:
        sink.shutdown()


if __name__ == "__main__":
    main()
