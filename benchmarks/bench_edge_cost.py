"""Request-path cost of the edge-case verdict: one row of 30 features (target: <= 20 µs p50).

    PYTHONPATH=. python benchmarks/bench_edge_cost.py [--reps 20000]

Measures, on the breast-cancer example's profile (built here if missing):
1. scoring: the default detector's outlyingness + conformal p-value of one row;
2. the component's whole ``before_call`` (scoring, p-values into call.state, verdict);
3. a guarded no-op model with and without a profile (what the guard adds in all);
4. batch throughput of the tail, Mahalanobis and default scores on 1,000,000 rows x 30
   features (goal: millions of rows per second), best of ``--batch-reps`` runs.
Figures are p50 / p99 over repetitions, in microseconds, on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(f, reps):
    for _ in range(200):
        f()
    ts = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter_ns()
        f()
        ts[i] = time.perf_counter_ns() - t0
    return np.median(ts) / 1000, np.quantile(ts, 0.99) / 1000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--batch-reps", type=int, default=3)
    args = ap.parse_args(argv)
    from guarded_serving import Guard
    from guarded_serving.call import Call
    from services import train

    art = ROOT / "services" / "artifacts"
    if not (art / "profile.npz").exists():
        train.train(art)
    ref = np.load(art / "reference.npz")
    x = np.ascontiguousarray(ref["X_test"][:1])
    g_edge = Guard(name="cost", profile=str(art / "profile.npz"))
    g_none = Guard(name="cost", n_features=30)
    comp = g_edge.component("edge_cases")
    det, cal = comp.detector_, comp.calibrator_

    def score():
        return cal.p_values(det.outlyingness(x))

    def hook():
        comp.before_call(Call((x,), {}, x, "x", 0))

    model = lambda inputs: inputs  # noqa: E731
    with_edge, without = g_edge(model), g_none(model)
    rows = [("default detector + p-value (1 row, 30 features)", score),
            ("component before_call", hook),
            ("guarded no-op model, with profile", lambda: with_edge(x)),
            ("guarded no-op model, without profile", lambda: without(x))]
    print(f"{'what':<52} {'p50 µs':>8} {'p99 µs':>8}")
    out = {}
    for name, f in rows:
        p50, p99 = timed(f, args.reps)
        out[name] = p50
        print(f"{name:<52} {p50:8.1f} {p99:8.1f}")
    added = out["guarded no-op model, with profile"] - out["guarded no-op model, without profile"]
    print(f"\nedge-case verdict adds {added:.1f} µs p50 to a guarded call (target <= 20 µs)")
    throughput(args.batch_reps)


def throughput(reps):
    """Rows per second of each detector's batch path on synthetic Gaussian rows (fit on 50,000)."""
    from guarded_serving.edge_cases import CombinedDetector, MahalanobisDetector, TailDetector

    big = np.random.default_rng(1).normal(size=(1_000_000, 30))
    print("\nbatch throughput, 1,000,000 rows x 30 features (best of %d):" % reps)
    for name, d in (("tail", TailDetector()), ("mahalanobis", MahalanobisDetector()),
                    ("default detector", CombinedDetector())):
        d.fit(big[:50_000])
        d.outlyingness(big[:1000])
        best = min(_seconds(d.outlyingness, big) for _ in range(reps))
        print(f"  {name:<20} {len(big) / best / 1e6:6.2f} M rows/s")


def _seconds(f, X):
    t0 = time.perf_counter()
    f(X)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
