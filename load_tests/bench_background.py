"""What the guard's background threads cost per served request, in process (the example's guard).

    PYTHONPATH=. nice -n 10 python load_tests/bench_background.py [--rate 300] [--seconds 20]
        [--history 200000] [--rounds 3] [--sequential-max-rows N]

Builds the example service's :class:`~guarded_serving.Guard` (``services.cancer``: drift,
performance with its expectation and label-free estimate, edge cases, Prometheus metrics; SQLite
stores in a temporary directory, tracing off), optionally fills the outcome store with
``--history`` stored predictions first (retained history: a week at a few hundred requests/s is
tens of millions), then calls the guarded model with one-row requests at ``--rate`` calls/s for
``--seconds`` and reads each thread's CPU time from ``/proc/self/task/<tid>/schedstat``.
Prints, per round and as medians (with min-max), the CPU microseconds per request of the
calling (model) thread, guarded and (a 5 s baseline first) unguarded, and of each background thread (``drift-*``, ``performance-*``, ...).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def thread_cpu_ns() -> dict[str, int]:
    """CPU nanoseconds of each live Python thread of this process, by thread name."""
    out: dict[str, int] = {}
    for t in threading.enumerate():
        tid = t.native_id
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (OSError, TypeError):
            continue
        out[t.name] = out.get(t.name, 0) + ns
    return out


def fill_history(path: Path, n: int) -> None:
    from guarded_serving.store.outcomes import PredictionRecord, SQLiteOutcomeStore

    store = SQLiteOutcomeStore(path)
    rng = np.random.default_rng(0)
    now = time.time()
    for start in range(0, n, 20_000):
        k = min(20_000, n - start)
        p = rng.random(k)
        recs = [PredictionRecord(f"h{start + i:012d}", 0, now - 3600 + (start + i) * 1e-3, "1", "*",
                                 "classification", float(p[i] > 0.5),
                                 np.array([1 - p[i], p[i]]).tobytes()) for i in range(k)]
        store.add_predictions(recs)
    store.close()


def one_round(rate: float, seconds: float, history: int, seq_max: int | None = None) -> dict[str, float]:
    state = tempfile.mkdtemp(prefix="gs-bench-bg-")
    os.environ["GUARDED_STATE_DIR"] = state
    os.environ.setdefault("GUARDED_MANIFEST", "none")
    if history:
        fill_history(Path(state) / "outcomes-breast_cancer.sqlite", history)
    sys.modules.pop("services.cancer", None)  # a fresh example guard each round
    from services import cancer
    from services.train import answer, load_model

    guard = cancer.guard
    if seq_max is not None:  # what-if: a lower drift_sequential_max_rows (the example does not expose it)
        for c in guard._components:
            if c.name == "drift":
                c.sequential_max_rows = seq_max
    model = load_model(cancer.ARTIFACT_DIR, read=guard.open_artifact)

    def plain(inputs: np.ndarray) -> dict:
        return answer(model, inputs)

    predict = guard(plain)

    with np.load(cancer.ARTIFACT_DIR / "reference.npz") as z:
        X = np.asarray(z[next(k for k in z.files if z[k].ndim == 2)], dtype=np.float64)
    rows = [X[i:i + 1].copy() for i in range(len(X))]
    guard.start()
    try:
        period = 1.0 / rate
        for i in range(200):  # warm-up
            predict(rows[i % len(rows)])
        time.sleep(1.0)
        main = threading.current_thread().name
        def drive(fn: object, secs: float) -> int:
            t0 = time.monotonic()
            n, nxt = 0, t0
            while time.monotonic() - t0 < secs:
                fn(rows[n % len(rows)])  # type: ignore[operator]
                n += 1
                nxt += period
                d = nxt - time.monotonic()
                if d > 0:
                    time.sleep(d)
            return n

        b0 = time.thread_time()
        nb = drive(plain, min(5.0, seconds))  # the same calls unguarded: the model's own CPU per call
        base_us = (time.thread_time() - b0) * 1e6 / nb
        c0 = thread_cpu_ns()
        n = drive(predict, seconds)
        time.sleep(0.5)
        c1 = thread_cpu_ns()
    finally:
        guard.stop()
        shutil.rmtree(state, ignore_errors=True)
    out = {"requests": float(n), "model thread, unguarded calls (baseline)": base_us}
    for name, ns in c1.items():
        d = ns - c0.get(name, 0)
        if d <= 0:
            continue
        key = "model thread, guarded calls" if name == main else name
        out[key] = d / 1e3 / n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=300.0, help="calls per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--history", type=int, default=200_000, help="predictions stored before the run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sequential-max-rows", type=int, default=None,
                    help="override the example's drift_sequential_max_rows (default: as configured, 1,000)")
    args = ap.parse_args(argv)
    results = [one_round(args.rate, args.seconds, args.history, args.sequential_max_rows)
               for _ in range(args.rounds)]
    names = sorted({k for r in results for k in r if k != "requests"},
                   key=lambda k: -statistics.median(r.get(k, 0.0) for r in results))
    print(f"{args.rounds} round(s) of {args.seconds:g} s at {args.rate:g} one-row calls/s, "
          f"{args.history} stored predictions before; CPU us per request by thread, median [min-max]:")
    for k in names:
        v = [r.get(k, 0.0) for r in results]
        if statistics.median(v) < 0.5:
            continue
        print(f"  {k:<36} {statistics.median(v):8.1f}  [{min(v):.1f}-{max(v):.1f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
