"""Per-call overhead of the guard against the bare function (1 x 30 float input).

    python load_tests/bench_overhead.py [--calls 20000]

Prints p50 and p99 in microseconds of: the bare function; the guarded function
with no SDK (API only: spans are no-ops); with a recording SDK span exported to
an in-memory exporter through a BatchSpanProcessor ("tracing on"); and the
guard's own logic with tracing off, i.e. guarded minus bare. The target is the
guard's own logic (all but the span) <= 15 us p50.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guarded_serving import Guard  # noqa: E402


def model(inputs: np.ndarray) -> float:
    return float(inputs[0, 0])


def measure(fn, x, calls: int) -> np.ndarray:
    for _ in range(1000):  # warm-up
        fn(x)
    out = np.empty(calls)
    pc = time.perf_counter_ns
    gc.collect()
    gc.disable()
    try:
        for i in range(calls):
            t0 = pc()
            fn(x)
            out[i] = pc() - t0
    finally:
        gc.enable()
    return out / 1000.0  # us


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--artifacts", type=Path, default=Path(__file__).resolve().parent.parent / "services" / "artifacts",
                    help="example artifacts (python -m services.train) for the all-capabilities variant")
    args = ap.parse_args(argv)

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    x = np.random.default_rng(0).normal(size=(1, 30))
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 20))

    rows = []
    bare = measure(model, x, args.calls)
    rows.append(("bare function", bare))
    # recording SDK, spans exported synchronously (SimpleSpanProcessor, in-memory): the guard's cost
    # beyond a bare span around the same function, the figure a traced service pays per call
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    simple = TracerProvider()
    simple.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer = simple.get_tracer("bench")

    def in_bare_span(v):
        with tracer.start_as_current_span("bare"):
            return model(v)

    bare_span = measure(in_bare_span, x, args.calls)
    rows.append(("bare function in a bare SDK span", bare_span))
    sdk_guarded = measure(Guard(name="bench", n_features=30, tracer_provider=simple)(model), x, args.calls)
    rows.append(("guarded, SDK span (SimpleSpanProcessor)", sdk_guarded))
    off = measure(Guard(name="bench", n_features=30)(model), x, args.calls)
    rows.append(("guarded, tracing off (API only)", off))
    g_on = Guard(name="bench", n_features=30, tracer_provider=provider)
    on = measure(g_on(model), x, args.calls)
    rows.append(("guarded, tracing on (SDK span)", on))
    sampled = measure(Guard(name="bench", n_features=30, tracer_provider=provider, trace_sample_ratio=0.1)(model),
                      x, args.calls)
    rows.append(("guarded, tracing on, ratio 0.1", sampled))
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    with_metrics = measure(Guard(name="bench", n_features=30, meter_provider=meters)(model), x, args.calls)
    rows.append(("guarded, tracing off, SDK histogram", with_metrics))
    if (args.artifacts / "profile.npz").exists():
        import tempfile

        # every capability on, as in the example service: manifest, operational health,
        # edge-case scoring (profile) and drift buffers; row taken from the training data
        x_in = np.load(args.artifacts / "reference.npz")["X_test"][:1].copy()
        with tempfile.TemporaryDirectory() as tmp:
            full = Guard(name="bench", n_features=30, manifest=str(args.artifacts / "manifest.json"),
                         profile=str(args.artifacts / "profile.npz"), drift=True,
                         drift_reference=str(args.artifacts / "reference.npz"),
                         drift_store=str(Path(tmp) / "drift.sqlite"))
            full.start()
            time.sleep(3.0)
            rows.append(("guarded, all capabilities, tracing off", measure(full(model), x_in, args.calls)))
            full_t = Guard(full.config, tracer_provider=provider, drift_store=str(Path(tmp) / "drift2.sqlite"))
            full_t.start()
            time.sleep(3.0)  # let start-up work (first samples, dependency imports, hashes) finish
            rows.append(("guarded, all capabilities, tracing on", measure(full_t(model), x_in, args.calls)))
            full.stop()
            full_t.stop()
    provider.shutdown()
    simple.shutdown()
    meters.shutdown()

    print(f"{'variant':<36} {'p50 us':>8} {'p99 us':>8}")
    for name, v in rows:
        print(f"{name:<36} {np.percentile(v, 50):8.2f} {np.percentile(v, 99):8.2f}")
    own50 = np.percentile(off, 50) - np.percentile(bare, 50)
    own99 = np.percentile(off, 99) - np.percentile(bare, 99)
    span50 = np.percentile(on, 50) - np.percentile(off, 50)
    print(f"{'guard own logic (off - bare)':<36} {own50:8.2f} {own99:8.2f}   target p50 <= 15 us")
    print(f"{'span cost (on - off)':<36} {span50:8.2f}")
    beyond50 = np.percentile(sdk_guarded, 50) - np.percentile(bare_span, 50)
    print(f"{'beyond a bare span, SDK recording':<36} {beyond50:8.2f}   target p50 <= 15 us")
    return {"own_p50_us": own50, "span_p50_us": span50, "beyond_bare_span_p50_us": beyond50}


if __name__ == "__main__":
    main()
