"""What the drift background thread costs a served worker under load (the example, tracing off).

    PYTHONPATH=. nice -n 10 python load_tests/drift_cost_served.py [--seconds 20] [--concurrency 8] [--rounds 3]

Serves ``services.cancer`` (drift on, one worker, SQLite store in a temp dir, the default
5 s drift interval), warms it up, drives it flat out with one-row requests, and reads
``/guard/stats`` before and after: the drift thread's own CPU time (``drift.cpu_seconds``,
``time.thread_time`` around each cycle) against the server's CPU time and the requests served.
Prints, per round and as medians: requests/s, server CPU ms per request, drift CPU ms per
second and per request, and the drift thread's share of the server's CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guarded_serving.serving.process import BentoServer  # noqa: E402
from guarded_serving.testing import free_port  # noqa: E402
from load_tests.client import drive  # noqa: E402
from load_tests.compare_throughput import payload, tree_cpu_s  # noqa: E402


def _drift_stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/guard/stats", timeout=10) as r:
        return json.loads(r.read())["drift"]


def one_round(seconds: float, concurrency: int) -> dict[str, float]:
    body = payload(1)
    with tempfile.TemporaryDirectory(prefix="gs-state-") as state, \
            BentoServer("services.cancer:CancerClassifier", free_port(), env={"GUARDED_STATE_DIR": state},
                        cwd=ROOT) as server:
        url = server.url + "/predict"
        drive(url, body, seconds=3.0, concurrency=concurrency)
        d0, cpu0, t0 = _drift_stats(server.url), tree_cpu_s(server.proc.pid), time.monotonic()
        r = drive(url, body, seconds=seconds, concurrency=concurrency)
        d1, cpu1, t1 = _drift_stats(server.url), tree_cpu_s(server.proc.pid), time.monotonic()
    n, wall = r.ok, t1 - t0
    drift_s = d1["cpu_seconds"] - d0["cpu_seconds"]
    return {"rps": n / wall, "server_ms_per_req": (cpu1 - cpu0) * 1e3 / max(n, 1),
            "drift_ms_per_s": drift_s * 1e3 / wall, "drift_ms_per_req": drift_s * 1e3 / max(n, 1),
            "drift_share": drift_s / max(cpu1 - cpu0, 1e-9), "cycles": d1["background"]["runs"] - d0["background"]["runs"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    rows = []
    for i in range(args.rounds):
        m = one_round(args.seconds, args.concurrency)
        rows.append(m)
        print(f"round {i + 1}: {m['rps']:.0f} req/s, server CPU {m['server_ms_per_req']:.3f} ms/req, drift thread "
              f"{m['drift_ms_per_s']:.1f} ms CPU per s ({m['drift_ms_per_req']:.3f} ms/req, "
              f"{m['drift_share']:.1%} of the server's CPU), {m['cycles']} cycles", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"median of {args.rounds}: {med['rps']:.0f} req/s, server CPU {med['server_ms_per_req']:.3f} ms/req, "
          f"drift thread {med['drift_ms_per_s']:.1f} ms CPU per s ({med['drift_ms_per_req']:.3f} ms/req, "
          f"{med['drift_share']:.1%} of the server's CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
