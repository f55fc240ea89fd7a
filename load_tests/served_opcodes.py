"""The guard's served cost per request, counted rather than timed: Python opcodes on the request threads.

    PYTHONPATH=. python load_tests/served_opcodes.py [--requests 300] [--tracing off|on] [--top 25]
        [--count opcodes|instructions]

(``--tracing on`` sends the spans to the local Jaeger of ``scripts/jaeger.sh``, built and started if needed.)

``compare_throughput.py`` times the served example against its unguarded twin over
HTTP; on this shared 2-core host one server's CPU per request moves by 20-30% from
slice to slice, so a change worth 1% takes many runs to see. This script counts
instead. For each of the guarded example (``services.cancer``) and its twin with the
same serving setup (``services.cancer_unguarded`` with ``GUARDED_TWIN_SERVING=1``) it
loads BentoML's ASGI app for the service in a fresh process (what a worker serves,
middlewares included), sends it one-row ``POST /predict`` requests in process (8 at
a time, no sockets), and after a warm-up counts, with ``sys.settrace`` opcode events,
the Python opcodes and calls executed per request on the threads that serve it (the
event loop's and BentoML's model thread), by function. Background threads (the
guard's workers, the span exporter) are left out: ``compare_throughput.py --threads``
reports their CPU. The counts are exact and repeat from run to run within a few
opcodes; what they leave out is the work done in C (numpy, the compiled edge verdict,
SQLite) and the cache misses the extra code causes, so they measure the guard's
Python work on the path, not its time.

Under tracing every call is ~10x slower, so the guarded example is given a latency
budget it cannot break (``GUARDED_LATENCY_SLO_MS``): otherwise every call would be
an SLO violation and take the anomalous path, which a served call at normal speed
does not.

To settle a change, count an earlier commit the same way: ``git worktree add /tmp/base REV``, copy
``services/artifacts``, ``guarded_serving/_native*.so`` (or build it there), ``.state/keys`` and this script
(into its ``load_tests/``) into it, and run the copy there: the services and the package are imported from
the checkout the script sits in.

``--count instructions`` counts what the opcodes leave out: the CPU instructions per request, C
included (NumPy, the compiled kernels, the interpreter's own work per opcode, allocation), with
valgrind's callgrind (Debian package ``valgrind``). Each service runs twice under callgrind, in
parallel, with ``requests/3`` and ``4 x requests/3`` requests after ``warmup/3`` warm-up ones, and the
difference of the two runs' totals over the extra requests is the per-request figure (start-up and
warm-up cancel out), in all and by thread (valgrind's ids, in start order: 1 is the event loop's). Under
callgrind a process runs about 50 times slower, so the guard's periodic background cycles (every 1-5 s)
are given intervals of an hour and every call a latency budget it cannot break: each run's cycles then
happen once, when the service stops, over all that was buffered, so the per-row part of the background
work (the drift buffer, the prediction records) is in the figure and the per-cycle part (window tests,
the alarm, gauges) cancels out. Counted: the request threads, the span processor, the background per
row. It is a count of instructions, not of cycles: cache misses and stalls are not in it.

It needs the example's artifacts (``python -m services.train``). Runtime about 1.5
minutes (two processes, one after the other, each with its own state directory); with
``--count instructions`` about 5 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"guarded": "services.cancer:CancerClassifier",
           "unguarded": "services.cancer_unguarded:CancerClassifierUnguarded"}
BACKGROUND = ("guard-", "Otel", "prometheus")  # thread-name prefixes left out of the count


def _child(target: str, n: int, concurrency: int, warmup: int, out: str, trace: bool = True) -> None:
    """In the child process: serve ``target`` in process, warm up, count ``n`` requests, write JSON
    (``trace`` False: no opcode counting, for a run under callgrind, which counts instructions)."""
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    import logging

    import numpy as np
    from _bentoml_impl.loader import load
    from bentoml._internal.context import server_context

    service = load(target, standalone_load=True)
    server_context.service_name = server_context.bento_name = service.name
    server_context.service_type, server_context.bento_version = "entry_service", "not available"
    app = service.to_asgi(is_main=True)
    logging.getLogger("bentoml.access").disabled = True
    x = np.load(ROOT / "services" / "artifacts" / "reference.npz")["X_test"]
    bodies = [json.dumps({"inputs": x[i:i + 1].tolist()}).encode() for i in range(len(x))]

    ops: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    frame_key: dict[int, str] = {}
    on = [False]

    def tracer(frame, event, arg):
        if not on[0]:
            return None
        if event == "call":
            co = frame.f_code
            if threading.current_thread().name.startswith(BACKGROUND):
                return None
            key = f"{co.co_filename.split('site-packages/')[-1].replace(str(ROOT) + '/', '')}:{co.co_name}"
            frame_key[id(frame)] = key
            calls[key] += 1
            frame.f_trace_opcodes = True
            return tracer
        if event == "opcode":
            ops[frame_key.get(id(frame), "?")] += 1
        return tracer

    # threads started from now on (BentoML's model thread, at the first request) carry the tracer, idle until `on`
    if trace:
        threading.settrace(tracer)
        sys.settrace(tracer)

    async def one(body: bytes) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000),
                 "headers": [(b"host", b"127.0.0.1:3000"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        sent, status = False, []

        async def receive() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # no disconnect while the answer is written
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)
        return status[0]

    async def run(k: int) -> int:
        left, bad = [k], [0]

        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                if await one(bodies[left[0] % len(bodies)]) != 200:
                    bad[0] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return bad[0]

    async def main() -> int:
        lifespan_in: asyncio.Queue = asyncio.Queue()
        lifespan_out: asyncio.Queue = asyncio.Queue()
        await lifespan_in.put({"type": "lifespan.startup"})
        task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                         lifespan_in.get, lifespan_out.put))
        started = await lifespan_out.get()
        if started["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"{target} did not start: {started}")
        bad = await run(warmup)
        on[0] = True
        bad += await run(n)
        on[0] = False
        await lifespan_in.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(lifespan_out.get(), 30)
        task.cancel()
        return bad

    failed = asyncio.run(main())
    sys.settrace(None)
    threading.settrace(None)
    with open(out, "w") as fh:
        json.dump({"ops": ops, "calls": calls, "n": n, "failed": failed}, fh)


def _child_env(kind: str, tmp: str, env: dict[str, str]) -> dict[str, str]:
    child_env = {**os.environ, **env, "BENTOML_HOME": str(Path(tmp) / "bentoml"),
                 "GUARDED_STATE_DIR": str(Path(tmp) / "state"), "PYTHONPATH": str(ROOT),
                 "GUARDED_ARTIFACT_DIR": str(ROOT / "services" / "artifacts")}
    if kind == "guarded":
        child_env["GUARDED_LATENCY_SLO_MS"] = "1000000"  # see the module docstring
    else:
        child_env["GUARDED_TWIN_SERVING"] = "1"
    return child_env


def count(kind: str, n: int, concurrency: int, warmup: int, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"gs-opcodes-{kind}-") as tmp:
        out = str(Path(tmp) / "counts.json")
        subprocess.run([sys.executable, "-P", __file__, "--child", TARGETS[kind], "--requests", str(n),
                        "--concurrency", str(concurrency), "--warmup", str(warmup), "--out", out],
                       env=_child_env(kind, tmp, env), check=True, timeout=900, stdout=subprocess.DEVNULL)
        with open(out) as fh:
            return json.load(fh)


#: under callgrind the process runs ~50x slower: periodic background cycles (every 1-5 s) would land in the
#: counted window many times more often than at full speed, so each run has one, when the service stops
_QUIET = {f"GUARDED_{k}": "3600" for k in ("DRIFT_INTERVAL_S", "PERFORMANCE_INTERVAL_S", "HARDWARE_INTERVAL_S",
                                           "METRICS_INTERVAL_S", "INTEGRITY_INTERVAL_S", "PROBE_INTERVAL_S")}


def count_instructions(kind: str, n: int, concurrency: int, warmup: int, env: dict[str, str]) -> dict:
    """CPU instructions per request of ``kind`` under callgrind: two runs in parallel, ``n`` and ``4n``
    requests after the same warm-up; the difference of their instruction totals over the ``3n`` extra
    requests, in all and by valgrind thread id (ids in start order, 1 the event loop's; matched between
    the two runs by id, as both start their threads in the same order)."""
    with tempfile.TemporaryDirectory(prefix=f"gs-instructions-{kind}-") as tmp:
        procs = []
        try:
            for k in (n, 4 * n):
                run_dir = Path(tmp) / str(k)
                run_dir.mkdir()
                cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                       f"--callgrind-out-file={run_dir}/cg.out", sys.executable, "-P", __file__, "--child",
                       TARGETS[kind], "--requests", str(k), "--concurrency", str(concurrency), "--warmup",
                       str(warmup), "--out", str(run_dir / "counts.json"), "--no-trace"]
                with open(run_dir / "valgrind.log", "wb") as log:
                    procs.append(subprocess.Popen(cmd, env=_child_env(kind, str(run_dir), {**env, **_QUIET}),
                                                  stdout=subprocess.DEVNULL, stderr=log))
            for k, p in zip((n, 4 * n), procs):
                if p.wait(timeout=1800) != 0:
                    tail = (Path(tmp) / str(k) / "valgrind.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"valgrind run of {kind} ({k} requests) exited with {p.returncode}:\n{tail}")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        totals = []
        for k in (n, 4 * n):
            failed = json.loads((Path(tmp) / str(k) / "counts.json").read_text())["failed"]
            if failed:
                raise RuntimeError(f"{kind}: {failed} of the requests did not answer 200 under callgrind")
            per: dict[int, int] = {}
            for f in (Path(tmp) / str(k)).glob("cg.out-*"):
                for line in f.read_text(errors="replace").splitlines():
                    if line.startswith("summary:"):
                        per[int(f.name.rsplit("-", 1)[1])] = int(line.split()[1])
                        break
            if not per:
                raise RuntimeError(f"{kind}: callgrind wrote no totals for the run of {k} requests")
            totals.append(per)
        threads = sorted(set(totals[0]) | set(totals[1]))
        by_thread = {t: (totals[1].get(t, 0) - totals[0].get(t, 0)) / (3 * n) for t in threads}
        return {"per_request": sum(by_thread.values()), "by_thread": by_thread}


def _instructions_main(args: argparse.Namespace, env: dict[str, str]) -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package valgrind): --count instructions needs it")
        return 2
    n, warmup = max(1, args.requests // 3), max(1, args.warmup // 3)  # 3n extra requests counted
    res = {kind: count_instructions(kind, n, args.concurrency, warmup, env) for kind in TARGETS}
    g, u = res["guarded"]["per_request"], res["unguarded"]["per_request"]
    print(f"served one-row POST /predict, in process, under callgrind: {3 * n} requests (the "
          f"difference of runs of {n} and {4 * n} after {warmup} warm-up), "
          f"{args.concurrency} at a time, tracing {args.tracing}; periodic background cycles pushed to the end "
          f"(their per-row work is in the figures, their per-cycle work cancels)")
    print(f"CPU instructions per request: guarded {g:,.0f}, unguarded {u:,.0f}, guard's {g - u:+,.0f} "
          f"({(g - u) / u:+.1%}); instruction ratio unguarded/guarded {u / g:.3f}")
    for kind, r in res.items():
        big = {t: v for t, v in r["by_thread"].items() if abs(v) >= 0.01 * r["per_request"]}
        print(f"  {kind:9} by valgrind thread id (1 = event loop): " + ", ".join(f"{t}: {v:,.0f}" for t, v in big.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--tracing", choices=("off", "on"), default="off",
                    help="on: BentoML tracing at sample rate 1 to the local Jaeger (scripts/jaeger.sh), as "
                         "compare_throughput.py --tracing on")
    ap.add_argument("--top", type=int, default=25, help="functions listed, by their opcode difference")
    ap.add_argument("--count", choices=("opcodes", "instructions"), default="opcodes",
                    help="instructions: CPU instructions per request under valgrind's callgrind (see above)")
    ap.add_argument("--no-trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.requests, args.concurrency, args.warmup, args.out, trace=not args.no_trace)
        return 0
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "", "OTEL_EXPORTER_OTLP_ENDPOINT": ""}
    jaeger = None
    if args.tracing == "on":
        sys.path.insert(0, str(ROOT))
        from tests.jaeger import shared_jaeger

        jaeger = shared_jaeger()
        env.update(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=jaeger.traces_endpoint, OTEL_TRACES_SAMPLER_ARG="1.0")
    try:
        if args.count == "instructions":
            return _instructions_main(args, env)
        res = {kind: count(kind, args.requests, args.concurrency, args.warmup, env) for kind in TARGETS}
    finally:
        if jaeger is not None and jaeger.started:
            from tests.jaeger import stop_shared_jaeger

            stop_shared_jaeger()
    n = args.requests
    per = {k: sum(r["ops"].values()) / n for k, r in res.items()}
    calls = {k: sum(r["calls"].values()) / n for k, r in res.items()}
    g, u = per["guarded"], per["unguarded"]
    print(f"served one-row POST /predict, in process, {n} requests after {args.warmup} warm-up, {args.concurrency} at "
          f"a time, tracing {args.tracing}; request threads only")
    print(f"opcodes per request: guarded {g:.0f}, unguarded {u:.0f}, guard's {g - u:+.0f} ({(g - u) / u:+.1%}); "
          f"opcode ratio unguarded/guarded {u / g:.3f}")
    print(f"Python calls per request: guarded {calls['guarded']:.0f}, unguarded {calls['unguarded']:.0f}")
    failed = {k: r["failed"] for k, r in res.items() if r["failed"]}
    if failed:
        print(f"requests that did not answer 200: {failed}")
    rows = []
    for key in set(res["guarded"]["ops"]) | set(res["unguarded"]["ops"]):
        a, b = res["guarded"]["ops"].get(key, 0) / n, res["unguarded"]["ops"].get(key, 0) / n
        rows.append((a - b, a, b, res["guarded"]["calls"].get(key, 0) / n, key))
    rows.sort(key=lambda r: -abs(r[0]))
    print(f"{'diff':>8} {'guarded':>8} {'twin':>8} {'calls':>6}  function (opcodes per request)")
    for d, a, b, c, key in rows[:args.top]:
        print(f"{d:+8.1f} {a:8.1f} {b:8.1f} {c:6.2f}  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
