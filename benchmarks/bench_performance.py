"""Expectation checks and feedback: false alarms, labels to detection, ingestion, request-path cost.

    PYTHONPATH=. nice -n 10 python benchmarks/bench_performance.py [--quick]

1. **False alarms** of the expectation check (``accuracy >= 0.97`` at level 0.01): 20 clean
   streams of 100,000 labels whose accuracy is exactly the expectation (the hardest clean
   case), the check read after every label. A stream counts once if the check ever alarms.
   Beside it, a fixed-window Wilson test at the same level (one-sided 99% Wilson upper bound of
   the latest W labels below 0.97, read after every label once W labels arrived): not
   anytime-valid, so repeated looks make it alarm on clean streams.
2. **Labels to detection**: accuracy 0.90 or 0.95 against the expectation 0.97, from the first
   label and after 5,000 clean labels (accuracy 0.97); 20 streams each, labels counted from the
   change to the first alarm (median, quartiles; "missed" if none within 100,000).
3. **Ingestion**: bulk feedback through ``guard.record_feedback_many`` (SQLite, labels committed
   before the call returns) and through the HTTP endpoint (``POST /guard/feedback`` on Starlette's
   in-process test client: JSON, token check, the same store), batches of 5,000 labels for
   predictions already stored; labels per second, 20 repetitions.
4. **Request-path cost** of the performance component: ``after_call`` (request id into the
   result, one buffer append) and ``new_request_id``, per call, 20 repetitions of 20,000 calls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guarded_serving import Guard  # noqa: E402
from guarded_serving.call import Call, new_request_id  # noqa: E402
from guarded_serving.performance.confseq import RestartingCS, bounds_path  # noqa: E402

ALPHA = 0.01
TARGET = 0.97
Z = 2.3263478740408408  # one-sided 99%


def wilson_upper(k: np.ndarray, n: int) -> np.ndarray:
    p = k / n
    denom = 1 + Z * Z / n
    centre = p + Z * Z / (2 * n)
    return (centre + Z * np.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))) / denom


def wilson_alarms(x: np.ndarray, window: int) -> np.ndarray:
    """Indices (0-based label count - 1) where the fixed-window Wilson check alarms."""
    c = np.concatenate(([0.0], np.cumsum(x)))
    k = c[window:] - c[:-window]
    return np.flatnonzero(wilson_upper(k, window) < TARGET) + window - 1


def first_cs_alarm(x: np.ndarray, restarts: bool = True) -> int | None:
    """Index of the first label after which the check alarms: the guard's check (one sequence since
    the first label and one since each of the latest restarts, every 500 labels), or the plain
    sequence since the first label only."""
    if restarts:
        up = RestartingCS(ALPHA, side="upper").update(x, path=True)
    else:
        _, up = bounds_path(x, ALPHA, side="upper")
    hit = np.flatnonzero(up < TARGET)
    return int(hit[0]) if hit.size else None


def q(values: list[float]) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values, float)
    return f"{np.median(a):,.0f} [{np.quantile(a, 0.25):,.0f}-{np.quantile(a, 0.75):,.0f}]"


def false_alarms(n_streams: int, n_labels: int, windows: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    cs_hits = 0
    plain_hits = 0
    wilson_streams = {w: 0 for w in windows}
    wilson_looks = {w: 0 for w in windows}
    t0 = time.perf_counter()
    for _ in range(n_streams):
        x = (rng.random(n_labels) < TARGET).astype(float)
        cs_hits += first_cs_alarm(x) is not None
        plain_hits += first_cs_alarm(x, restarts=False) is not None
        for w in windows:
            a = wilson_alarms(x, w)
            wilson_streams[w] += a.size > 0
            wilson_looks[w] += a.size
    dt = time.perf_counter() - t0
    print(f"\n## False alarms: {n_streams} clean streams x {n_labels:,} labels (accuracy = expectation = {TARGET}), "
          f"checked after every label, level {ALPHA}\n")
    print("| check | streams that ever alarm | share of looks alarming |")
    print("|---|---:|---:|")
    print(f"| the guard's check: confidence sequences since the start and since restarts (anytime-valid) | "
          f"{cs_hits} / {n_streams} | - |")
    print(f"| one confidence sequence since the first label (anytime-valid) | {plain_hits} / {n_streams} | - |")
    for w in windows:
        looks = n_streams * (n_labels - w + 1)
        print(f"| Wilson, fixed window {w:,} | {wilson_streams[w]} / {n_streams} | {wilson_looks[w] / looks:.3%} |")
    print(f"\n({dt:.1f} s)")


def detection(n_streams: int, windows: tuple[int, ...], max_labels: int = 100_000) -> None:
    print(f"\n## Labels to detection (expectation accuracy >= {TARGET}, level {ALPHA}; {n_streams} streams; "
          "median [quartiles] of labels after the change)\n")
    print("| true accuracy | clean labels before | the guard's check | missed | one CS since the start | missed | "
          + " | ".join(f"Wilson W={w:,}" for w in windows) + " |")
    print("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(windows))
    for acc in (0.90, 0.95):
        for prefix in (0, 5000):
            rng = np.random.default_rng(int(acc * 100) + prefix)
            found: dict[bool, list[float]] = {True: [], False: []}
            missed = {True: 0, False: 0}
            wd: dict[int, list[float]] = {w: [] for w in windows}
            for _ in range(n_streams):
                x = np.concatenate([(rng.random(prefix) < TARGET), (rng.random(max_labels) < acc)]).astype(float)
                for restarts in (True, False):
                    hit = first_cs_alarm(x, restarts)
                    if hit is None or hit < prefix:  # an alarm before the change is a false alarm, not a detection
                        missed[restarts] += 1
                    else:
                        found[restarts].append(hit - prefix + 1)
                for w in windows:
                    a = wilson_alarms(x, w)
                    after = a[a >= prefix]
                    if after.size:
                        wd[w].append(after[0] - prefix + 1)
            print(f"| {acc:.2f} | {prefix:,} | {q(found[True])} | {missed[True]} | {q(found[False])} | "
                  f"{missed[False]} | "
                  + " | ".join(q(wd[w]) for w in windows) + " |")


def ingestion(reps: int, batch: int, redis_url: str | None = None) -> None:
    from starlette.testclient import TestClient

    from guarded_serving.serving.bentoml import health_app

    tmp = Path(tempfile.mkdtemp(prefix="bench-perf-"))
    api, http = [], []
    for rep in range(reps):
        store = redis_url if redis_url else str(tmp / f"o{rep}.sqlite")
        g = Guard(name=f"bench{rep}", operational=False, performance=True, performance_store=store,
                  performance_interval_s=3600)

        @g
        def predict(x):
            return {"probability": [0.9] * len(x)}

        ids = [predict(np.zeros((1, 2)))["request_id"] for _ in range(2 * batch)]
        g.component("performance").flush()
        items = [{"request_id": r, "label": 1} for r in ids[:batch]]
        t0 = time.perf_counter()
        res = g.record_feedback_many(items)
        api.append(batch / (time.perf_counter() - t0))
        assert all(r.status == "recorded" for r in res)
        import os

        os.environ["GUARDED_FEEDBACK_TOKEN"] = "bench"
        client = TestClient(health_app(g))
        body = {"items": [{"request_id": r, "label": 1} for r in ids[batch:]]}
        t0 = time.perf_counter()
        resp = client.post("/feedback", json=body, headers={"Authorization": "Bearer bench"})
        http.append(batch / (time.perf_counter() - t0))
        assert resp.status_code == 200 and resp.json()["kept"] == batch, resp.text[:300]
        g.stop()
    where = "Redis, two script calls per batch" if redis_url else "SQLite, committed before the answer"
    print(f"\n## Feedback ingestion: bulk batches of {batch:,} labels, {reps} repetitions ({where})\n")
    print("| path | labels/s median | min | max |")
    print("|---|---:|---:|---:|")
    for name, v in (("guard.record_feedback_many", api), ("POST /guard/feedback (in-process HTTP)", http)):
        print(f"| {name} | {statistics.median(v):,.0f} | {min(v):,.0f} | {max(v):,.0f} |")


def request_path(reps: int, calls: int) -> None:
    g = Guard(name="bench", operational=False, performance=True, performance_buffer_rows=10_000_000,
              performance_store=str(Path(tempfile.mkdtemp()) / "o.sqlite"), performance_interval_s=3600)
    comp = g.component("performance")
    after, rid = [], []
    for _ in range(reps):
        prepared = []
        for _ in range(calls):
            c = Call((None,), {}, None, "x", 0, request_id=new_request_id())
            c.result = {"probability": [0.9]}
            prepared.append(c)
        t0 = time.perf_counter_ns()
        for c in prepared:
            comp.after_call(c)
        after.append((time.perf_counter_ns() - t0) / calls / 1000)
        comp._buf.clear()
        t0 = time.perf_counter_ns()
        for _ in range(calls):
            new_request_id(0x1234)
        rid.append((time.perf_counter_ns() - t0) / calls / 1000)
    print(f"\n## Request-path cost ({reps} x {calls:,} calls; microseconds per call)\n")
    print("| step | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, v in (("performance after_call (id into result + buffer append)", after),
                    ("new_request_id", rid)):
        print(f"| {name} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for development")
    ap.add_argument("--redis-url", help="also measure ingestion into this Redis (its keys are written)")
    ap.add_argument("--only", choices=("alarms", "ingestion", "path"), help="run one part")
    args = ap.parse_args()
    quick = args.quick
    if args.only in (None, "alarms"):
        false_alarms(4, 20_000, (500, 2000)) if quick else false_alarms(20, 100_000, (500, 2000))
        detection(5, (500, 2000), 20_000) if quick else detection(20, (500, 2000))
    if args.only in (None, "ingestion"):
        ingestion(3 if quick else 20, 2000 if quick else 5000)
        if args.redis_url:
            ingestion(3 if quick else 20, 2000 if quick else 5000, args.redis_url)
    if args.only in (None, "path"):
        request_path(3 if quick else 20, 5000 if quick else 20_000)


if __name__ == "__main__":
    main()
