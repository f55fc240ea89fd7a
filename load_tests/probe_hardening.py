"""Replay the hardening probe (issue 18) against the served example and print what it costs now.

    PYTHONPATH=. python load_tests/probe_hardening.py [--paths 6000] [--big-mb 52] [--invalid 500] [--reps 20]

Serves services.cancer with `bentoml serve` on 127.0.0.1 (one worker, a health token set) and prints:

1. readiness after the two readiness attacks (100 POSTs to the disabled /predict_chaos, 40
   text/plain POSTs of 1e308 in the lowest-variance feature) and the model errors counted;
2. server-tree RSS before and after four concurrent ``--big-mb`` MB bodies (answered 413);
3. /metrics size and scrape time (median and spread of ``--reps`` scrapes) before and after
   ``--paths`` random unknown paths;
4. log bytes per invalid request over ``--invalid`` invalid requests (one-line, rate-limited);
5. the median time of a valid single-row POST /predict (``--reps`` x 50 requests) for reference.

Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guarded_serving.serving.process import BentoServer, tree_rss_mb
from guarded_serving.testing import free_port

TOKEN = "probe-token"


def spread(xs: list[float]) -> str:
    q = np.quantile(xs, [0.1, 0.5, 0.9])
    return f"median {q[1]:.3g} (p10 {q[0]:.3g}, p90 {q[2]:.3g}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paths", type=int, default=6000)
    ap.add_argument("--big-mb", type=int, default=52)
    ap.add_argument("--invalid", type=int, default=500)
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    X = np.load(ROOT / "services" / "artifacts" / "reference.npz")["X_train"]
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GUARDED_HEALTH_TOKEN": TOKEN, "GUARDED_STATE_DIR": str(Path(tmp) / "state")}
        os.environ.pop("GUARDED_CHAOS", None)
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT,
                         log_path=Path(tmp) / "serve.log") as s:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            sess = requests.Session()

            # 1. readiness attacks
            codes = [sess.post(s.url + "/predict_chaos", json={"inputs": X[:1].tolist(), "fail": True}).status_code
                     for _ in range(100)]
            row = X[0].tolist()
            row[int(np.argmin(X.std(axis=0)))] = 1e308
            codes2 = [sess.post(s.url + "/predict", data=json.dumps({"inputs": [row]}),
                                headers={"Content-Type": "text/plain"}).status_code for _ in range(40)]
            stats = sess.get(s.url + "/guard/stats", headers=auth).json()
            print(f"1. attacks: chaos answers {sorted(set(codes))}, 1e308 answers {sorted(set(codes2))}; "
                  f"model errors counted {stats['errors']}; /readyz {sess.get(s.url + '/readyz').status_code}")

            # 2. big bodies
            rss0, _ = tree_rss_mb(s.proc.pid)
            big = b'{"inputs": [[' + b"1.0," * (a.big_mb * 2**20 // 4) + b"1.0]]}"
            got: list[int] = []

            def post_big() -> None:
                got.append(requests.post(s.url + "/predict", data=big,
                                         headers={"Content-Type": "application/json"}).status_code)

            ts = [threading.Thread(target=post_big) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            rss1, _ = tree_rss_mb(s.proc.pid)
            print(f"2. four concurrent {a.big_mb} MB bodies: answers {got}; server-tree RSS {rss0:.0f} MB -> "
                  f"{rss1:.0f} MB ({rss1 - rss0:+.0f} MB)")

            # 3. /metrics after unknown paths
            def scrape() -> tuple[int, list[float]]:
                times, size = [], 0
                for _ in range(a.reps):
                    t0 = time.perf_counter()
                    size = len(sess.get(s.url + "/metrics").content)
                    times.append((time.perf_counter() - t0) * 1000)
                return size, times

            size0, t_before = scrape()
            rss0, _ = tree_rss_mb(s.proc.pid)
            for i in range(a.paths):
                sess.get(f"{s.url}/probe-{i}-{os.urandom(3).hex()}")
            size1, t_after = scrape()
            rss1, _ = tree_rss_mb(s.proc.pid)
            print(f"3. /metrics {size0} bytes -> {size1} bytes after {a.paths} unknown paths; scrape ms before "
                  f"{spread(t_before)}, after {spread(t_after)}; RSS {rss1 - rss0:+.0f} MB")

            # 4. log bytes per invalid request
            log = Path(tmp) / "serve.log"
            n0 = log.stat().st_size
            for _ in range(a.invalid):
                sess.post(s.url + "/predict", json={"inputs": [[1.0, 2.0]]})
            time.sleep(0.5)
            n1 = log.stat().st_size
            text = log.read_text(errors="replace")
            print(f"4. {a.invalid} invalid requests wrote {n1 - n0} log bytes ({(n1 - n0) / a.invalid:.1f} per request, "
                  f"access log included); client-error lines in the whole log: {text.count('client error on')}; "
                  f"tracebacks: {text.count('Traceback')}")

            # 5. a valid request, for reference
            per = []
            body = {"inputs": X[:1].tolist()}
            for _ in range(a.reps):
                t0 = time.perf_counter()
                for _ in range(50):
                    sess.post(s.url + "/predict", json=body)
                per.append((time.perf_counter() - t0) / 50 * 1000)
            print(f"5. valid single-row POST /predict ms: {spread(per)}")
            print(f"   health status {sess.get(s.url + '/guard/health').json()}")
    print(f"6. RequestLimits in process, one-row JSON body, us per request: {spread(middleware_cost(X, a.reps))}")


def middleware_cost(X: np.ndarray, reps: int, n: int = 2000) -> list[float]:
    """The middleware's own cost per request (an app that answers nothing), median over ``reps``."""
    import asyncio

    from guarded_serving.serving.limits import RequestLimits

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await receive()

    mw = RequestLimits(app)
    body = json.dumps({"inputs": X[:1].tolist()}).encode()
    scope = {"type": "http", "method": "POST", "path": "/predict",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}

    async def receive():  # type: ignore[no-untyped-def]
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):  # type: ignore[no-untyped-def]
        pass

    async def run() -> list[float]:
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(n):
                await mw(scope, receive, send)
            out.append((time.perf_counter() - t0) / n * 1e6)
        return out

    return asyncio.run(run())


if __name__ == "__main__":
    main()
