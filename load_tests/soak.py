"""Bounded soak of the guarded example: steady loopback load, RSS of the server tree over time.

    PYTHONPATH=. python load_tests/soak.py [--minutes 10] [--interval 15] [--concurrency 4]
        [--tracing off|on] [--warmup-minutes 1]

Serves services.cancer with `bentoml serve` on 127.0.0.1, drives POST /predict
(mostly normal rows, one per request, cycling through the test split, plus a
steady trickle of invalid inputs and, with GUARDED_CHAOS, slow and failing calls
so every guard path runs), and prints every ``--interval`` seconds the resident
memory of the whole server process tree (the bentoml arbiter and its workers)
and the request counts. At the end it prints the growth after warm-up and the
health checks that are not ok. Target: no growth beyond a few MB after warm-up. Not part of
CI. With ``--tracing on`` spans go to the local Jaeger (scripts/jaeger.sh; started
if needed and stopped again if this script started it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guarded_serving.serving.process import BentoServer, tree_rss_mb  # noqa: E402
from guarded_serving.testing import free_port  # noqa: E402
from load_tests.client import drive  # noqa: E402


def side_traffic(url: str, X: np.ndarray, stop: threading.Event, counts: dict) -> None:
    """One invalid, one slow and one failing call every second until ``stop``."""
    bad = X[:1].tolist()
    bad[0][3] = float("nan")
    calls = [("predict", {"inputs": bad}), ("predict_chaos", {"inputs": X[:1].tolist(), "delay_ms": 120}),
             ("predict_chaos", {"inputs": X[:1].tolist(), "fail": True})]
    with requests.Session() as s:
        while not stop.wait(1.0):
            for api, body in calls:
                try:
                    r = s.post(f"{url}/{api}", data=json.dumps(body, allow_nan=True),
                               headers={"content-type": "application/json"}, timeout=30)
                    counts[r.status_code] = counts.get(r.status_code, 0) + 1
                except requests.RequestException as e:
                    counts[type(e).__name__] = counts.get(type(e).__name__, 0) + 1


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="total load time (default 10)")
    ap.add_argument("--warmup-minutes", type=float, default=1.0, help="excluded from the growth figure (default 1)")
    ap.add_argument("--interval", type=float, default=15.0, help="seconds between RSS lines (default 15)")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--tracing", choices=("off", "on"), default="off")
    args = ap.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        ap.error(f"--minutes={args.minutes} is invalid: expected 0 < minutes <= 1440")
    if not 0 <= args.warmup_minutes < args.minutes:
        ap.error(f"--warmup-minutes={args.warmup_minutes} is invalid: expected 0 <= it < --minutes")

    ref = ROOT / "services" / "artifacts" / "reference.npz"
    if not ref.exists():
        from services.train import train

        train(ref.parent)
    X = np.load(ref)["X_test"]
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(ref.parent),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    jaeger = None
    if args.tracing == "on":
        from tests.jaeger import shared_jaeger

        jaeger = shared_jaeger()
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = jaeger.traces_endpoint
    try:
        with tempfile.TemporaryDirectory(prefix="gs-state-") as state, \
                BentoServer("services.cancer:CancerClassifier", free_port(), env={**env, "GUARDED_STATE_DIR": state},
                            cwd=ROOT) as server:
            stop = threading.Event()
            side_counts: dict = {}
            results = []
            side = threading.Thread(target=side_traffic, args=(server.url, X, stop, side_counts), daemon=True)

            def load() -> None:
                results.append(drive(server.url + "/predict", [{"inputs": [row]} for row in X.tolist()],
                                     seconds=args.minutes * 60, concurrency=args.concurrency, stop=stop))

            loader = threading.Thread(target=load, daemon=True)
            t0 = time.monotonic()
            loader.start()
            side.start()
            series: list[tuple[float, float]] = []
            print(f"soak: {args.minutes:g} min, concurrency {args.concurrency}, tracing {args.tracing}, "
                  f"server pid {server.proc.pid}", flush=True)
            print(f"{'t s':>7} {'RSS MB':>9} {'procs':>5} {'calls':>8}", flush=True)
            try:
                while loader.is_alive():
                    loader.join(args.interval)
                    t = time.monotonic() - t0
                    rss, n = tree_rss_mb(server.proc.pid)
                    stats = requests.get(server.url + "/guard/stats", timeout=10).json()
                    series.append((t, rss))
                    print(f"{t:7.0f} {rss:9.1f} {n:5d} {stats['calls']:8d}", flush=True)
            finally:
                stop.set()
                loader.join(30)
                side.join(30)
            health = requests.get(server.url + "/guard/health", timeout=10).json()
    finally:
        if jaeger is not None and jaeger.started:
            from tests.jaeger import stop_shared_jaeger

            stop_shared_jaeger()

    r = results[0]
    after = [rss for t, rss in series if t >= args.warmup_minutes * 60]
    growth = (after[-1] - after[0]) if len(after) >= 2 else float("nan")
    print(f"\npredict: {r.ok} ok, {r.failures} failed, {r.rps:.1f} rps, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms")
    print(f"side traffic (invalid / slow / failing) by status: {side_counts}")
    print(f"RSS after warm-up: first {after[0] if after else float('nan'):.1f} MB, last "
          f"{after[-1] if after else float('nan'):.1f} MB, max {max(after) if after else float('nan'):.1f} MB, "
          f"growth {growth:+.1f} MB (target: a few MB at most)")
    print(f"health at the end: {health['status']}")
    for name, check in health["checks"].items():
        if check["status"] not in ("ok", "unavailable"):
            print(f"  {name}: {check['status']}: {check['reason']}")
    return {"growth_mb": growth, "series": series, "failures": r.failures}


if __name__ == "__main__":
    main()
