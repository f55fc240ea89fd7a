"""Per-call guard overhead with the operational-health sampler off and on.

    PYTHONPATH=. python load_tests/bench_sampler.py [--calls 20000] [--rounds 5] [--interval 0.1]

Calls a trivial predict function (1x30 float input) bare and through guards
that differ only in operational health: none, the component without a
hardware sampler, and the sampler running every ``--interval`` seconds (0.1 s
stresses it; the default in service is 5 s), each with tracing off (no SDK:
no-op spans) and on (an SDK provider whose exporter drops spans). Configs
are interleaved in rounds so machine noise spreads evenly; prints p50 / p99
of the per-call time and the overhead over the bare call, in microseconds.
Figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np


def _tracer_provider():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(Drop()))
    return p


def _time_calls(f, x, n):
    out = np.empty(n)
    pc = time.perf_counter_ns
    for i in range(n):
        t0 = pc()
        f(x)
        out[i] = pc() - t0
    return out / 1000.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=20000, help="calls per config per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--interval", type=float, default=0.1, help="sampler interval in seconds")
    args = ap.parse_args(argv)

    import logging

    from opentelemetry.trace import NoOpTracerProvider

    logging.getLogger("guarded_serving.health").setLevel(logging.ERROR)  # CPU transitions under the load we make

    from guarded_serving import Guard

    x = np.random.default_rng(0).normal(size=(1, 30))

    def predict(inputs):
        return inputs[0, 0]

    variants = {"no operational component": dict(operational=False),
                "sampler off": dict(hardware_interval_s=None),
                f"sampler on ({args.interval:g} s)": dict(hardware_interval_s=args.interval)}
    guards, funcs = [], {}
    for tracing in ("off", "on"):
        for label, kw in variants.items():
            provider = NoOpTracerProvider() if tracing == "off" else _tracer_provider()
            g = Guard(name="bench", latency_slo_ms=1000, n_features=30, tracer_provider=provider, **kw)
            g.start()
            guards.append(g)
            funcs[(tracing, label)] = g(predict)
    funcs[("-", "bare function")] = predict
    samples = {k: [] for k in funcs}
    for f in funcs.values():  # warm up
        _time_calls(f, x, 500)
    gc.collect()
    for _ in range(args.rounds):
        for k, f in funcs.items():
            samples[k].append(_time_calls(f, x, args.calls))
    sampler_samples = [g.component("operational").sampler.samples for g in guards
                       if g.config.operational and g.config.hardware_interval_s]
    for g in guards:
        g.stop()

    bare = np.concatenate(samples[("-", "bare function")])
    b50, b99 = np.percentile(bare, [50, 99])
    print(f"{'tracing':<8} {'config':<28} {'p50 us':>8} {'p99 us':>8} {'overhead p50':>13} {'overhead p99':>13}")
    for (tracing, label), s in samples.items():
        a = np.concatenate(s)
        p50, p99 = np.percentile(a, [50, 99])
        print(f"{tracing:<8} {label:<28} {p50:8.2f} {p99:8.2f} {p50 - b50:13.2f} {p99 - b99:13.2f}")
    print(f"\n{args.rounds} rounds x {args.calls} calls per config; samples taken by the running samplers: "
          f"{sampler_samples}")


if __name__ == "__main__":
    main()
