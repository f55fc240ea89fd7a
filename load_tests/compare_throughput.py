"""Guarded vs unguarded throughput of the example, tracing off and on, on this machine.

    PYTHONPATH=. python load_tests/compare_throughput.py [--pairs 20] [--slice 2.5] [--concurrency 8]
        [--tracing off,on] [--env KEY=VALUE ...] [--threads]
    PYTHONPATH=. python load_tests/compare_throughput.py --sequential [--seconds 15] [--rounds 1]
        [--driver threads|locust] ...

Interleaved (the default): for each tracing mode both services (the guarded
example services.cancer and its unguarded twin services.cancer_unguarded) are up
at the same time on two loopback ports, each is warmed up, and the same bounded
load (flat-out POST /predict, one row of 30 features, ``--concurrency`` client
threads) alternates between them in short slices, ``--pairs`` pairs of
``--slice`` seconds each, in ABBA order (pair 1 guarded then unguarded, pair 2
unguarded then guarded, ...). Each pair gives a ratio; slow drift in the host's
load (other jobs on a shared machine) hits both halves of a pair alike and
cancels out, so the medians and spreads of the per-pair ratios are what to
read. Two ratios per pair:

- rps ratio: guarded / unguarded requests per second within the pair;
- CPU ratio: unguarded / guarded server CPU per request (user + system of the
  server's process tree from /proc, exited children included), where each
  server's CPU is taken over the whole pair (its own slice and the other's), so
  its background work (drift, performance, sampler threads) is charged to it
  even when it runs while the other service is being driven. This is the rps
  ratio a CPU-bound server would show, and it does not depend on what else the
  host is doing.

``--threads`` adds each worker's CPU per request by thread (thread names from
``py-spy dump`` when py-spy is installed, else native ids). ``--twin serving``
serves the unguarded twin with the guarded example's serving setup minus the
guard (``RequestLimits``, bounded metric labels, a stored API signature): the
plain twin (default) lacks them, and they make BentoML's main thread do a little
less per request, to the guarded service's credit. ``--pin`` puts both servers on the
last CPU and this load generator (and Jaeger) on the others, so the two never share a
core (on the 2-core host it did not narrow the per-pair spread: the host's own noise).

Runtime: about 2.5 minutes per tracing mode with the defaults (start-up of both
services, 2 x 3 s warm-up, 20 pairs x 2 x 2.5 s), about 5 minutes for both.

Sequential (``--sequential``, the earlier method): for each tracing mode it serves the guarded example (services.cancer) and its
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
import concurrent.futures
import contextlib
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port
from load_tests.client import drive

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
        subprocess.run(cmd, cwd=ROOT, check=False, env={**os.environ, "GUARDED_LOAD_ROWS": str(rows)},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 60)
        with open(prefix + "_stats.csv") as fh:
            agg = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"][0]
    return float(agg["Requests/s"]), float(agg["50%"]), float(agg["99%"]), int(agg["Failure Count"])


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


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if xs else float("nan")


def worker_pid(server: BentoServer) -> int:
    """The pid of the server's (single) API worker: the descendant with the most threads."""
    root = psutil.Process(server.proc.pid)
    procs = [root, *root.children(recursive=True)]
    return max(procs, key=lambda p: p.num_threads()).pid


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of ``pid``, by native thread id, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return out


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from ``py-spy dump`` (empty when py-spy is missing)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        return {}
    try:
        txt = subprocess.run([spy, "dump", "--pid", str(pid), "--nonblocking"], check=False, capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    # 'Thread 6977 (idle): "guard-integrity"': the native thread id, then the Python thread's name
    return {int(m.group(1)): m.group(2) for m in re.finditer(r'^Thread (\d+) \([^)]*\): "([^"]*)"', txt, re.MULTILINE)}


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


def _start_both(env: dict, stack: contextlib.ExitStack, twin: str = "plain",
                server_cpus: set[int] | None = None) -> dict[str, BentoServer]:
    """Both services up at once on two loopback ports (each with a state directory of its own).

    ``server_cpus``: the CPUs both servers (and every process and thread they start) may run on; the calling
    thread is pinned to them while the servers start (a child inherits its parent thread's affinity) and
    gets its own affinity back afterwards.
    """
    servers = {}
    own = os.sched_getaffinity(0) if server_cpus else None
    if server_cpus:
        os.sched_setaffinity(0, server_cpus)
    for kind in ("guarded", "unguarded"):
        state = stack.enter_context(tempfile.TemporaryDirectory(prefix="gs-state-"))
        extra = {"GUARDED_TWIN_SERVING": "1"} if kind == "unguarded" and twin == "serving" else {}
        servers[kind] = BentoServer(TARGETS[kind], free_port(), env={**env, **extra, "GUARDED_STATE_DIR": state},
                                    cwd=ROOT)
    for server in servers.values():
        stack.callback(server.__exit__, None, None, None)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for fut in [pool.submit(server.start) for server in servers.values()]:
                fut.result()
    finally:
        if own is not None:
            os.sched_setaffinity(0, own)
    return servers


def interleaved(mode: str, env: dict, args: argparse.Namespace, body: dict) -> dict:
    """Both services up, the load alternating between them in ABBA slices; per-pair ratios."""
    with contextlib.ExitStack() as stack:
        servers = _start_both(env, stack, args.twin, args.server_cpus)
        urls = {k: s.url + "/predict" for k, s in servers.items()}
        pids = {k: s.proc.pid for k, s in servers.items()}
        for kind in ("guarded", "unguarded"):
            drive(urls[kind], body, seconds=args.warmup, concurrency=args.concurrency)
        workers = {k: worker_pid(s) for k, s in servers.items()} if args.threads else {}
        threads0 = {k: thread_cpu_s(pid) for k, pid in workers.items()}
        pairs: list[dict] = []
        lat: dict[str, list] = {"guarded": [], "unguarded": []}
        fails = {"guarded": 0, "unguarded": 0}
        for i in range(args.pairs):
            order = ("guarded", "unguarded") if i % 2 == 0 else ("unguarded", "guarded")
            cpu0 = {k: tree_cpu_s(pid) for k, pid in pids.items()}
            runs = {}
            for kind in order:
                runs[kind] = drive(urls[kind], body, seconds=args.slice, concurrency=args.concurrency)
                lat[kind].append(runs[kind].latencies_ms)
                fails[kind] += runs[kind].failures
            # each server's CPU over the whole pair: background work done during the other's slice is its own
            cpu = {k: (tree_cpu_s(pid) - cpu0[k]) * 1000.0 for k, pid in pids.items()}
            pair = {"order": order, "rps": {k: r.rps for k, r in runs.items()}, "n": {k: r.ok for k, r in runs.items()},
                    "cpu_ms": cpu}
            pair["cpu_per_req"] = {k: cpu[k] / max(pair["n"][k], 1) for k in runs}
            pair["rps_ratio"] = pair["rps"]["guarded"] / pair["rps"]["unguarded"] if pair["rps"]["unguarded"] else float("nan")
            pair["cpu_ratio"] = pair["cpu_per_req"]["unguarded"] / pair["cpu_per_req"]["guarded"]
            pairs.append(pair)
            print(f"  tracing {mode:<3} pair {i + 1:2d} {'GU' if order[0] == 'guarded' else 'UG'}  rps guarded "
                  f"{pair['rps']['guarded']:6.1f} unguarded {pair['rps']['unguarded']:6.1f} ratio "
                  f"{pair['rps_ratio']:.3f} | CPU ms/req guarded {pair['cpu_per_req']['guarded']:.3f} unguarded "
                  f"{pair['cpu_per_req']['unguarded']:.3f} ratio {pair['cpu_ratio']:.3f}", flush=True)
        by_thread: dict[str, dict[str, float]] = {}
        for kind, pid in workers.items():
            names = thread_names(pid)
            end = thread_cpu_s(pid)
            n = sum(p["n"][kind] for p in pairs)
            acc: dict[str, float] = {}
            for tid, t in end.items():
                name = names.get(tid, f"tid {tid}")
                name = "AnyIO worker thread(s)" if name.startswith("AnyIO worker") else name
                acc[name] = acc.get(name, 0.0) + (t - threads0[kind].get(tid, 0.0)) * 1000.0 / max(n, 1)
            by_thread[kind] = acc
    allat = {k: np.concatenate(v) if v else np.array([]) for k, v in lat.items()}
    total_n = {k: sum(p["n"][k] for p in pairs) for k in ("guarded", "unguarded")}
    total_cpu = {k: sum(p["cpu_ms"][k] for p in pairs) for k in ("guarded", "unguarded")}
    return {"pairs": pairs, "fails": fails, "by_thread": by_thread,
            "p50": {k: _pct(list(v), 50) for k, v in allat.items()},
            "p99": {k: _pct(list(v), 99) for k, v in allat.items()},
            "rps": {k: statistics.median(p["rps"][k] for p in pairs) for k in ("guarded", "unguarded")},
            "cpu_per_req": {k: total_cpu[k] / max(total_n[k], 1) for k in total_n},
            "rps_ratios": [p["rps_ratio"] for p in pairs], "cpu_ratios": [p["cpu_ratio"] for p in pairs]}


def _spread(xs: list[float]) -> str:
    return (f"median {statistics.median(xs):.3f}, IQR {_pct(xs, 25):.3f}-{_pct(xs, 75):.3f}, "
            f"10-90% {_pct(xs, 10):.3f}-{_pct(xs, 90):.3f}, min-max {min(xs):.3f}-{max(xs):.3f}")


def report_interleaved(results: dict, args: argparse.Namespace) -> None:
    env_txt = ", env " + " ".join(args.env) if args.env else ""
    print(f"\ninterleaved: both services up, {args.pairs} pairs of {args.slice:g} s slices per mode (ABBA), "
          f"threads driver, concurrency {args.concurrency}{env_txt}, {args.rows} row(s)/request, "
          f"twin {args.twin}" + (f", servers pinned to CPU {sorted(args.server_cpus)}" if args.server_cpus else ""))
    print(f"{'tracing':<8} {'variant':<10} {'rps (med)':>10} {'p50 ms':>8} {'p99 ms':>8} {'failed':>7} {'CPU ms/req':>11}")
    for mode, res in results.items():
        for kind in ("unguarded", "guarded"):
            print(f"{mode:<8} {kind:<10} {res['rps'][kind]:10.1f} {res['p50'][kind]:8.2f} {res['p99'][kind]:8.2f} "
                  f"{res['fails'][kind]:7d} {res['cpu_per_req'][kind]:11.3f}")
        for key, label in (("rps_ratios", "rps ratio"), ("cpu_ratios", "CPU ratio")):
            xs = res[key]
            res[key.replace("_ratios", "_median")] = med = statistics.median(xs)
            verdict = "meets" if med >= TARGET_RATIO else "MISSES"
            print(f"{mode:<8} {label:<10} {_spread(xs)}; {verdict} the >= {TARGET_RATIO:.0%} target")
        total = res["cpu_per_req"]["unguarded"] / res["cpu_per_req"]["guarded"]
        print(f"{mode:<8} {'CPU total':<10} {total:.3f}   unguarded/guarded CPU per request over all pairs together")
        for kind, acc in res["by_thread"].items():
            parts = ", ".join(f"{name} {ms:.3f}" for name, ms in sorted(acc.items(), key=lambda kv: -kv[1])
                              if ms >= 0.005)
            print(f"{mode:<8} {kind:<10} worker CPU ms/req by thread: {parts}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="interleaved: pairs of slices per mode (default 20)")
    ap.add_argument("--slice", type=float, default=2.5, help="interleaved: seconds of load per slice (default 2.5)")
    ap.add_argument("--threads", action="store_true",
                    help="interleaved: also print each worker's CPU per request by thread")
    ap.add_argument("--twin", choices=("plain", "serving"), default="plain",
                    help="interleaved: the unguarded twin as plain BentoML (default) or with the guarded example's "
                         "serving setup minus the guard (RequestLimits, bounded metric labels, stored signature)")
    ap.add_argument("--sequential", action="store_true",
                    help="the earlier method: one service at a time (implied by --seconds, --rounds, --driver locust)")
    ap.add_argument("--seconds", type=float, default=None, help="sequential: measured seconds per variant (default 15)")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per variant (default 3)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    ap.add_argument("--rounds", type=int, default=None, help="sequential: rounds (default 1)")
    ap.add_argument("--tracing", default="off,on", help="comma list of off,on (default both)")
    ap.add_argument("--driver", choices=("threads", "locust"), default=None, help="sequential: load driver")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for both servers, e.g. GUARDED_PROFILE=none (repeatable)")
    ap.add_argument("--pin", action="store_true",
                    help="interleaved: both servers on the last CPU, this load generator (and Jaeger) on the "
                         "others, so the load generator never takes the servers' CPU")
    args = ap.parse_args(argv)
    args.sequential = args.sequential or any(x is not None for x in (args.seconds, args.rounds, args.driver))
    args.seconds = 15.0 if args.seconds is None else args.seconds
    args.rounds = 1 if args.rounds is None else args.rounds
    args.driver = args.driver or "threads"
    if args.pairs < 1 or args.slice <= 0:
        ap.error(f"--pairs={args.pairs} --slice={args.slice:g}: expected at least one pair of slices longer than 0 s")
    modes = [m.strip() for m in args.tracing.split(",") if m.strip()]
    if not set(modes) <= {"off", "on"}:
        ap.error(f"--tracing={args.tracing!r} is invalid: expected a comma list of 'off' and 'on'")
    args.server_cpus = None
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2 or args.sequential:
            ap.error(f"--pin needs the interleaved method and at least 2 CPUs (this process may use {cpus})")
        args.server_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))
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
            if not args.sequential:
                results[mode] = interleaved(mode, env, args, body)
                continue
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

    if not args.sequential:
        report_interleaved(results, args)
        return results
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
