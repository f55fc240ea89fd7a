"""Per-call cost of the Prometheus exporter (guarded_serving.serving.prometheus) on the request path.

    python load_tests/bench_metrics.py [--calls 20000] [--multiprocess]

Times a guarded 1 x 30 call with and without the ``PrometheusMetrics`` component (tracing off)
and prints the p50/p99 difference in microseconds. ``--multiprocess`` runs as a BentoML worker
does: ``PROMETHEUS_MULTIPROC_DIR`` set before ``prometheus_client`` is imported, so every
increment writes to a memory-mapped file.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--multiprocess", action="store_true")
    args = ap.parse_args()
    if args.multiprocess:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gs-prom-")
    import numpy as np

    from guarded_serving import Guard
    from guarded_serving.serving.prometheus import PrometheusMetrics

    x = np.random.default_rng(0).normal(size=(1, 30))

    def build(with_metrics: bool):
        comps = [PrometheusMetrics(interval_s=3600)] if with_metrics else []
        g = Guard(name="bench", latency_slo_ms=1000, n_features=30, components=comps)
        return g(lambda inputs: float(inputs[0, 0]))

    def timed(f) -> np.ndarray:
        for _ in range(500):
            f(x)
        out = np.empty(args.calls)
        gc.disable()
        for i in range(args.calls):
            t0 = time.perf_counter_ns()
            f(x)
            out[i] = time.perf_counter_ns() - t0
        gc.enable()
        return out / 1000.0

    base, with_m = [], []
    for _ in range(3):  # interleave to share the machine's noise
        base.append(timed(build(False)))
        with_m.append(timed(build(True)))
    b, m = np.concatenate(base), np.concatenate(with_m)
    mode = "multiprocess (mmap files, as in a BentoML worker)" if args.multiprocess else "single process"
    print(f"{mode}: guard p50 {np.median(b):.1f} us, with exporter p50 {np.median(m):.1f} us "
          f"(+{np.median(m) - np.median(b):.1f} us); p99 {np.percentile(b, 99):.1f} -> {np.percentile(m, 99):.1f} us")


if __name__ == "__main__":
    main()
