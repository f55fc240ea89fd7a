"""GPU check: the guard around a torch model on a GPU under bf16 matmul load.

    bash scripts/gpu_check.sh [--load-seconds 60] [--slo-ms auto]     # installs torch, nvidia-ml-py if missing
    python -m load_tests.gpu_check --help                              # in a venv that has them

What it does (about 2 minutes with the defaults, well under 5):

1. Finds the GPU through NVML (the guard's own :class:`~guarded_serving.operational.gpu.NvmlProvider`)
   and CUDA through torch. Without either it prints why and exits 0 (``--require-gpu``: exit 3).
2. Builds a "model": a 1 x 30 input projected to ``--rows`` x ``--dim`` and pushed through
   ``--depth`` bf16 matmuls on the GPU, synchronised, so a call's latency is GPU time.
3. Idle phase: calls the guarded model for ``--idle-seconds``; its p50 sets the SLO when
   ``--slo-ms auto`` (twice the idle p50, so calls under load breach it).
4. Load phase: a background thread keeps the GPU busy with large bf16 matmuls on its own
   CUDA stream (``--load-dim``) for ``--load-seconds`` while the guarded model keeps being
   called; the hardware sampler reads NVML every ``--interval`` seconds.
5. Prints: the GPU readings over the run (power and limit, temperature and slowdown
   threshold, utilisation, clock-event reasons), the guard's checks (``hardware.gpu*``,
   ``runtime.gc``, ``runtime.latency_trend``, ``latency_slo``), the causes of the slow calls
   (``guard.latency.causes`` from their spans, with median shares), the NVML sample cost,
   and the guard's per-call overhead: guarded minus bare for a 1 x 30 no-op function (tracing
   off, and with a recording in-memory SDK), and for the GPU model (medians, interleaved).

Expected on a healthy GPU under this load: every ``hardware.gpu0.*`` check ``ok`` (power at the
cap with ``sw_power_cap`` only is a reading, not a problem), slow calls named ``gpu_saturation``.
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NO_GPU_EXIT = 3


def _p50(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def find_gpu() -> tuple[Any, str]:
    """``(torch, "")`` when NVML sees a GPU and torch can use CUDA, else ``(None, why)``."""
    from guarded_serving.operational.gpu import NvmlProvider

    p = NvmlProvider()
    try:
        r = p.readings()
    finally:
        p.close()
    if "gpu_unavailable" in r:
        return None, f"NVML: {r['gpu_unavailable']}"
    try:
        import torch
    except ImportError:
        return None, "torch is not installed (pip install torch)"
    if not torch.cuda.is_available():
        return None, f"torch {torch.__version__} sees no CUDA device (NVML sees {len(r['gpus'])} GPU(s))"
    return torch, ""


class MatmulModel:
    """1 x 30 features -> (rows x dim) bf16 activations -> ``depth`` matmuls -> one float, synchronised."""

    def __init__(self, torch: Any, *, rows: int, dim: int, depth: int, seed: int = 0) -> None:
        g = torch.Generator(device="cuda").manual_seed(seed)
        self.torch = torch
        self.rows = rows
        self.w_in = torch.randn(30, dim, device="cuda", dtype=torch.bfloat16, generator=g)
        self.w = [torch.randn(dim, dim, device="cuda", dtype=torch.bfloat16, generator=g) / dim ** 0.5
                  for _ in range(depth)]

    def __call__(self, x: np.ndarray) -> float:
        torch = self.torch
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to("cuda", torch.bfloat16)
        h = (t @ self.w_in).expand(self.rows, -1).contiguous()
        for w in self.w:
            h = torch.tanh(h @ w)
        out = float(h[0, 0].float().item())  # .item() synchronises with the GPU
        return out


class Load:
    """Large bf16 matmuls on their own CUDA stream in a background thread, until stopped."""

    def __init__(self, torch: Any, dim: int) -> None:
        self.torch = torch
        self.a = torch.randn(dim, dim, device="cuda", dtype=torch.bfloat16)
        self.b = torch.randn(dim, dim, device="cuda", dtype=torch.bfloat16)
        self.stream = torch.cuda.Stream()
        self.stop = threading.Event()
        self.matmuls = 0
        self.thread = threading.Thread(target=self._run, name="gpu-check-load", daemon=True)

    def _run(self) -> None:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            while not self.stop.is_set():
                for _ in range(8):
                    torch.matmul(self.a, self.b)
                self.matmuls += 8
                self.stream.synchronize()  # keep the queue short so stop() is prompt

    def __enter__(self) -> "Load":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(30)


def gpu_line(snapshot_readings: dict[str, Any]) -> str:
    parts = []
    for g in snapshot_readings.get("gpus") or []:
        reasons = [r for r in (g.get("clock_event_reasons") or []) if r != "gpu_idle"] or ["none"]
        parts.append(f"gpu{g['index']}: {g.get('power_w') or 0:.0f}/{g.get('power_limit_w') or 0:.0f} W, "
                     f"{g.get('temperature_c')} C (slowdown {g.get('slowdown_c')} C), "
                     f"util {g.get('utilization_percent')}%, mem {g.get('memory_used_mb') or 0:.0f}/"
                     f"{g.get('memory_total_mb') or 0:.0f} MB, reasons {','.join(reasons)}")
    return "; ".join(parts) or "no GPU readings"


def overhead_noop(calls: int) -> dict[str, float]:
    """p50 µs of a 1 x 30 no-op: bare, guarded (no SDK), guarded with a recording in-memory SDK."""
    from guarded_serving import Guard
    from guarded_serving.testing import in_memory_tracer_provider

    def model(x: np.ndarray) -> float:
        return float(x[0, 0])

    x = np.zeros((1, 30))
    provider, exporter = in_memory_tracer_provider()
    g_off = Guard(name="noop-off", hardware_interval_s=None, gpu=False)
    g_on = Guard(name="noop-on", hardware_interval_s=None, gpu=False, tracer_provider=provider)
    fns = {"bare": model, "guarded, tracing off": g_off(model), "guarded, recording SDK": g_on(model)}
    out: dict[str, list[float]] = {k: [] for k in fns}
    pc = time.perf_counter_ns
    for _ in range(calls // 100):  # interleaved rounds of 100 calls: drift hits all three alike
        for name, f in fns.items():
            for _ in range(100):
                t0 = pc()
                f(x)
                out[name].append((pc() - t0) / 1000.0)
        exporter.clear()
    g_off.stop()
    g_on.stop()
    return {k: _p50(v) for k, v in out.items()}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-seconds", type=float, default=10.0)
    ap.add_argument("--load-seconds", type=float, default=60.0)
    ap.add_argument("--slo-ms", default="auto", help="latency SLO in ms, or 'auto' (2x the idle p50)")
    ap.add_argument("--interval", type=float, default=0.5, help="hardware sampling interval, seconds")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--load-dim", type=int, default=8192)
    ap.add_argument("--overhead-calls", type=int, default=20000)
    ap.add_argument("--require-gpu", action="store_true", help=f"exit {NO_GPU_EXIT} (not 0) when there is no GPU")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    torch, why = find_gpu()
    if torch is None:
        print(f"gpu_check: SKIPPED, no usable GPU here: {why}. Nothing was checked.")
        return NO_GPU_EXIT if args.require_gpu else 0

    print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, device {torch.cuda.get_device_name(0)}")
    model = MatmulModel(torch, rows=args.rows, dim=args.dim, depth=args.depth)
    return run_check(model, lambda: Load(torch, args.load_dim), args)


def run_check(model: Any, make_load: Any, args: argparse.Namespace, providers: Any = None) -> int:
    """Idle phase, load phase, report (see the module docstring). ``providers``: hardware providers
    in place of the real psutil + NVML ones (a replay of recorded readings, the tests)."""
    from guarded_serving import Guard
    from guarded_serving.operational.component import OperationalHealth
    from guarded_serving.testing import in_memory_tracer_provider

    x = np.random.default_rng(0).normal(size=(1, 30))
    for _ in range(20):  # warm-up: kernels, allocator
        model(x)

    # idle: the model's own latency, bare
    idle, t_end = [], time.monotonic() + args.idle_seconds
    while time.monotonic() < t_end:
        t0 = time.perf_counter_ns()
        model(x)
        idle.append((time.perf_counter_ns() - t0) / 1e6)
    slo = 2.0 * _p50(idle) if args.slo_ms == "auto" else float(args.slo_ms)
    print(f"idle: {len(idle)} calls, p50 {_p50(idle):.2f} ms, p99 {np.quantile(idle, 0.99):.2f} ms; "
          f"SLO {slo:.2f} ms ({'2x idle p50' if args.slo_ms == 'auto' else 'given'})")

    provider, exporter = in_memory_tracer_provider()
    # only anomalous (slow) calls are exported: trace_sample_ratio=0
    if providers is None:
        guard = Guard(name="gpu-check", latency_slo_ms=slo, hardware_interval_s=args.interval, gpu=True,
                      trace_sample_ratio=0.0, tracer_provider=provider)
    else:
        guard = Guard(name="gpu-check", latency_slo_ms=slo, trace_sample_ratio=0.0, tracer_provider=provider,
                      operational=False,
                      components=[OperationalHealth(hardware_interval_s=args.interval, providers=providers)])
    guarded = guard(model)
    guard.start()
    op = guard.component("operational")
    lat, readings_log = [], []
    try:
        with make_load() as load:
            t_start = time.monotonic()
            t_end, next_log = t_start + args.load_seconds, t_start
            while time.monotonic() < t_end:
                t0 = time.perf_counter_ns()
                guarded(x)
                lat.append((time.perf_counter_ns() - t0) / 1e6)
                if time.monotonic() >= next_log:
                    next_log += max(args.load_seconds / 6, 1.0)
                    readings_log.append((time.monotonic() - t_start, gpu_line(op.sampler.snapshot.readings)))
            matmuls = load.matmuls
        readings_log.append((time.monotonic() - t_start, gpu_line(op.sampler.snapshot.readings)))
        health, stats = guard.health(), guard.stats()
        # the guard around the GPU model without load: guarded vs bare, interleaved
        bare_ms, guarded_ms = [], []
        for _ in range(200):
            for f, acc in ((model, bare_ms), (guarded, guarded_ms)):
                t0 = time.perf_counter_ns()
                f(x)
                acc.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        guard.stop()

    print(f"\nload: {args.load_seconds:.0f} s, {matmuls} background {args.load_dim}^2 bf16 matmuls, "
          f"{len(lat)} guarded calls, p50 {_p50(lat):.2f} ms, p99 {np.quantile(lat, 0.99):.2f} ms, "
          f"{sum(v > slo for v in lat)} over the {slo:.2f} ms SLO")
    print("\nGPU readings (hardware sampler, NVML):")
    for t, line in readings_log:
        print(f"  t={t:5.1f} s  {line}")
    print("\nguard checks:")
    for name, c in sorted(health["checks"].items()):
        if name.startswith(("hardware.gpu", "hardware.cpu", "runtime.", "latency_slo")):
            print(f"  {name:<28} {c['status']:<11} {c['reason']}")
    print(f"  overall: {health['status']}, ready: {health['ready']}")

    causes: collections.Counter[tuple[str, ...]] = collections.Counter()
    shares: dict[tuple[str, ...], list[list[float]]] = collections.defaultdict(list)
    for s in exporter.get_finished_spans():
        a = s.attributes or {}
        if not a.get("guard.slo.violated"):
            continue
        key = tuple(a.get("guard.latency.causes") or (a.get("guard.latency.cause", "unknown"),))
        causes[key] += 1
        if a.get("guard.latency.cause_shares"):
            shares[key].append(list(a["guard.latency.cause_shares"]))
    print(f"\ncauses of slow calls ({sum(causes.values())} slow-call spans; by share, largest first):")
    for key, n in causes.most_common():
        med = [statistics.median(col) for col in zip(*shares[key])] if shares[key] else []
        med_txt = f"  median shares {', '.join(f'{v:.2f}' for v in med)}" if med else ""
        print(f"  {n:6d}  {' > '.join(key)}{med_txt}")
    ops = stats.get("operational", {})
    hw = ops.get("hardware", {})
    print(f"\nslow calls by first cause (guard stats): {ops.get('slow_calls_by_cause')}")
    print(f"hardware sampler: {hw.get('samples')} samples, last one took {hw.get('last_sample_ms')} ms "
          f"(psutil + NVML, in the background thread)")
    print(f"latency trend: {ops.get('latency_trend')}")

    print("\nguard overhead per call (p50):")
    noop = overhead_noop(args.overhead_calls)
    for k, v in noop.items():
        print(f"  1x30 no-op, {k:<24} {v:8.2f} µs")
    print(f"  -> guard's own cost, tracing off:  {noop['guarded, tracing off'] - noop['bare']:.2f} µs; "
          f"with a recording SDK span: {noop['guarded, recording SDK'] - noop['bare']:.2f} µs")
    print(f"  GPU model, no load: bare {_p50(bare_ms):.3f} ms, guarded {_p50(guarded_ms):.3f} ms "
          f"(difference {1000 * (_p50(guarded_ms) - _p50(bare_ms)):+.1f} µs, noisy)")
    gpu_bad = {n: c["status"] for n, c in health["checks"].items()
               if n.startswith("hardware.gpu") and c["status"] not in ("ok", "unavailable")}
    print("\ngpu_check: done; " + ("all GPU checks ok" if not gpu_bad else f"GPU checks not ok: {gpu_bad}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
