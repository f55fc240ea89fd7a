"""Guarded vs unguarded throughput of the example, tracing off and on, on this machine.

    PYTHONPATH=. python load_tests/compare_throughput.py [--seconds 15] [--concurrency 8]
        [--rounds 1] [--tracing off,on] [--driver threads|locust] [--env KEY=VALUE ...]

For each tracing mode it serves the guarded example (services.cancer) and its
unguarded twin (services.cancer_unguarded) one after the other with `bentoml
serve` on 127.0.0.1, warms each up, drives it with the same bounded loopback
load (flat-out POST /predict, one row of 30 features), stops it, and prints
requests per second, p50 and p99 for both and their ratio. With ``--rounds N``
the pair is run N times (order alternating) and the median rps / p50 / p99 (and
the failures summed) are reported, with the median of each round's back-to-back
ratio. "Tracing on" means BentoML tracing at sample rate 1.0, OTLP/HTTP to the
local Jaeger of scripts/jaeger.sh (started if needed, stopped again if this
script started it). Target: guarded keeps >= 95% of unguarded throughput.

It also prints the server process tree's CPU time per request (user + system,
from psutil): on a shared machine that is a steadier basis for the comparison
than wall-clock rps. The load driver runs on the same machine as the server and competes with it for
CPU; figures on a shared machine are noisy, compare the ratio rather than the
absolute numbers.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guarded_serving.serving.process import BentoServer  # noqa: E402
from guarded_serving.testing import free_port  # noqa: E402
from load_tests.client import drive  # noqa: E402

TARGETS = {"guarded": "services.cancer:CancerClassifier",
           "unguarded": "services.cancer_unguarded:CancerClassifierUnguarded"}
TARGET_RATIO = 0.95


def payload(rows: int) -> dict:
    ref = ROOT / "services" / "artifacts" / "reference.npz"
    if not ref.exists():
        from services.train import train

        train(ref.parent)
    return {"inputs": np.load(ref)["X_test"][:rows].tolist()}


def run_locust(url: str, seconds: float, concurrency: int, rows: int) -> tuple[float, float, float, int]:
    with tempfile.TemporaryDirectory(prefix="gs-locust-") as tmp:
        prefix = str(Path(tmp) / "run")
        cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "locustfile.py"), "--headless",
               "-u", str(concurrency), "-r", str(concurrency), "-t", f"{int(seconds)}s", "--host", url,
               "--csv", prefix, "--only-summary", "--loglevel", "WARNING"]
        subprocess.run(cmd, cwd=ROOT, check=False, env={**_env(), "GUARDED_LOAD_ROWS": str(rows)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 60)
        with open(prefix + "_stats.csv") as fh:
            agg = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"][0]
    return float(agg["Requests/s"]), float(agg["50%"]), float(agg["99%"]), int(agg["Failure Count"])


def _env() -> dict:
    import os

    return dict(os.environ)


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants so far, short-lived ones included.

    A process's reaped children count too (``children_user``/``children_system``): without them a
    child that runs across the measured window (say a background check in a subprocess) would be
    counted at the start and vanish from the sum when it exits, making the difference wrong by its
    CPU time, in either direction.
    """
    root = psutil.Process(pid)
    total = 0.0
    for p in (root, *root.children(recursive=True)):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(kind: str, env: dict, args: argparse.Namespace, body: dict) -> tuple[float, float, float, int, float]:
    """Serve ``kind``, warm up, drive; return (rps, p50 ms, p99 ms, failures, server CPU ms per request)."""
    with tempfile.TemporaryDirectory(prefix="gs-state-") as state, \
            BentoServer(TARGETS[kind], free_port(), env={**env, "GUARDED_STATE_DIR": state}, cwd=ROOT) as server:
        url = server.url + "/predict"
        drive(url, body, seconds=args.warmup, concurrency=args.concurrency)
        cpu0 = tree_cpu_s(server.proc.pid)
        if args.driver == "locust":
            rps, p50, p99, fails = run_locust(server.url, args.seconds, args.concurrency, args.rows)
            n = rps * args.seconds
        else:
            r = drive(url, body, seconds=args.seconds, concurrency=args.concurrency)
            rps, p50, p99, fails, n = r.rps, r.p50_ms, r.p99_ms, r.failures, r.ok
        cpu_ms = (tree_cpu_s(server.proc.pid) - cpu0) * 1000.0 / max(n, 1)
        return rps, p50, p99, fails, cpu_ms


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per variant (default 15)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per variant (default 3)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--tracing", default="off,on", help="comma list of off,on (default both)")
    ap.add_argument("--driver", choices=("threads", "locust"), default="threads")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for both servers, e.g. GUARDED_PROFILE=none (repeatable)")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.tracing.split(",") if m.strip()]
    if not set(modes) <= {"off", "on"}:
        ap.error(f"--tracing={args.tracing!r} is invalid: expected a comma list of 'off' and 'on'")
    body = payload(args.rows)
    extra = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--env={item!r} is invalid: expected KEY=VALUE")
        extra[key] = value
    base_env = {"GUARDED_ARTIFACT_DIR": str(ROOT / "services" / "artifacts"),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "OTEL_EXPORTER_OTLP_ENDPOINT": "", **extra}
    jaeger = None
    results: dict = {}
    try:
        for mode in modes:
            env = dict(base_env)
            if mode == "on":
                if jaeger is None:
                    from tests.jaeger import shared_jaeger

                    jaeger = shared_jaeger()
                env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = jaeger.traces_endpoint
                env["OTEL_TRACES_SAMPLER_ARG"] = "1.0"
            runs: dict[str, list] = {"guarded": [], "unguarded": []}
            for rnd in range(args.rounds):
                order = ("guarded", "unguarded") if rnd % 2 == 0 else ("unguarded", "guarded")
                for kind in order:
                    res = measure(kind, env, args, body)
                    runs[kind].append(res)
                    print(f"  tracing {mode:<3} round {rnd + 1} {kind:<9} {res[0]:8.1f} rps  p50 {res[1]:6.2f} ms"
                          f"  p99 {res[2]:6.2f} ms  failures {res[3]}  server CPU {res[4]:.3f} ms/req", flush=True)
            results[mode] = {k: (*(statistics.median(x[i] for x in v) for i in range(3)), sum(x[3] for x in v),
                                 statistics.median(x[4] for x in v)) for k, v in runs.items()}
            # Each round's pair ran back to back: its ratio is less exposed to slow drift in machine load.
            results[mode]["paired"] = [g[0] / u[0] if u[0] else float("nan")
                                       for g, u in zip(runs["guarded"], runs["unguarded"])]
    finally:
        if jaeger is not None and jaeger.started:
            from tests.jaeger import stop_shared_jaeger

            stop_shared_jaeger()

    env_txt = ", env " + " ".join(args.env) if args.env else ""
    print(f"\n{args.driver} driver, concurrency {args.concurrency}{env_txt}, {args.rows} row(s)/request, "
          f"{args.seconds:g} s per variant, {args.rounds} round(s) (median)")
    print(f"{'tracing':<8} {'variant':<10} {'rps':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'CPU ms/req':>11}")
    for mode, res in results.items():
        for kind in ("unguarded", "guarded"):
            rps, p50, p99, fails, cpu = res[kind]
            print(f"{mode:<8} {kind:<10} {rps:8.1f} {p50:8.2f} {p99:8.2f} {int(fails):7d} {cpu:11.3f}")
        ratio = res["guarded"][0] / res["unguarded"][0] if res["unguarded"][0] else float("nan")
        res["ratio"] = ratio
        verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
        print(f"{mode:<8} {'ratio':<10} {ratio:8.3f}   guarded/unguarded rps; "
              f"{verdict} the >= {TARGET_RATIO:.0%} target")
        if len(res["paired"]) > 1:
            paired = ", ".join(f"{x:.3f}" for x in res["paired"])
            print(f"{mode:<8} {'per round':<10} {statistics.median(res['paired']):8.3f}   median of the rounds' "
                  f"ratios ({paired})")
        cpu_ratio = res["unguarded"][4] / res["guarded"][4] if res["guarded"][4] else float("nan")
        res["cpu_ratio"] = cpu_ratio
        print(f"{mode:<8} {'CPU-bound':<10} {cpu_ratio:8.3f}   unguarded/guarded server CPU per request: the rps ratio "
              f"when CPU-bound, less sensitive to other load on the machine")
    return results


if __name__ == "__main__":
    main()
