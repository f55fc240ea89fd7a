"""The guard's per-call cost around a real model, with caches as cold as in serving, and each capability's share.

    PYTHONPATH=. python load_tests/bench_cold_path.py [--reps 20] [--calls 1000]

``bench_overhead.py`` times the guard around a one-line function called in a tight
loop: its code and data stay in the CPU's caches and branch predictors, which a
served call never enjoys (between two calls the framework parses, routes and
serialises a request and the model runs). This script takes the example service's
own guard (``services.cancer``: integrity, operational health, edge-case verdicts,
drift sampling, ML-performance records, the range rule, Prometheus counters; its
background workers running, tracing off) and the example's scikit-learn pipeline,
and alternates, call by call, the bare model and the guarded model on the same
one-row input (30 features, rows of the test split), at most ``--rate`` pairs a
second (default 300, about what the served example answers here: the background
workers' load grows with the call rate, and a tight loop would give them ten times
a served rate's rows to flush, test and store). The guard's cost is the
difference of the two medians; repeated ``--reps`` times (the variants below in a
fresh random order each time), medians and spread reported.

Then each capability's on-path share: the same difference with that capability's
request-path hooks taken out (``before_call``/``after_call``; its background work
keeps running), and with every hook out (what is left: the wrapper itself, the
call's request id and response header, the span decision, the input check). The
shares do not add up exactly: code that runs on every call also evicts the other
parts' cache lines.

It needs the example's artifacts (``python -m services.train``); state goes to a
temporary directory, removed at the end. Runtime about 4 minutes with the defaults (1.5 with --rate 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _pair_medians(bare, guarded, rows: list[np.ndarray], calls: int, rate: float) -> tuple[float, float]:
    """Median µs of the bare and guarded calls, alternating call by call, ``rate`` pairs a second at most
    (each call after its own pause when paced, so neither one runs right after the other's warm-up)."""
    tb, tg = np.empty(calls), np.empty(calls)
    pc = time.perf_counter_ns
    half = 0.5e9 / rate if rate > 0 else 0.0
    start = pc()
    for i in range(calls):
        r = rows[i % len(rows)]
        for k, (fn, out) in enumerate(((bare, tb), (guarded, tg)) if i % 2 == 0 else ((guarded, tg), (bare, tb))):
            if half:  # paced like served traffic: the background work sees a served rate, not a tight loop's
                wait = start + (2 * i + k) * half - pc()
                if wait > 0:
                    time.sleep(wait / 1e9)
            t0 = pc()
            fn(r)
            out[i] = pc() - t0
    return float(np.median(tb)) / 1000.0, float(np.median(tg)) / 1000.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--rate", type=float, default=300.0,
                    help="pairs of calls per second at most (default 300, about the example's served rate here; "
                         "0: flat out)")
    ap.add_argument("--background", choices=("on", "off"), default="on",
                    help="off: stop the capabilities' background workers after the warm-up (request path only)")
    ap.add_argument("--stop", default="", help="comma list of capabilities whose background workers are stopped "
                                               "after the warm-up (e.g. operational,drift)")
    args = ap.parse_args(argv)
    if args.reps < 1 or args.calls < 10:
        ap.error(f"--reps={args.reps} --calls={args.calls}: expected at least 1 repetition of 10 calls")
    artifacts = ROOT / "services" / "artifacts"
    if not (artifacts / "profile.npz").exists():
        from services.train import train

        train(artifacts)
    state = tempfile.mkdtemp(prefix="gs-cold-")
    os.environ["GUARDED_STATE_DIR"] = state
    os.environ.pop("GUARDED_STORE_URL", None)

    import services.cancer as example
    from services.train import answer, load_model

    model = load_model(artifacts)

    def bare(inputs: np.ndarray) -> dict:  # the example's predict, without the guard
        return answer(model, inputs)

    guard = example.guard
    guard.start()
    guarded = guard.wrap(bare)
    x = np.load(artifacts / "reference.npz")["X_test"]
    rows = [x[i:i + 1].copy() for i in range(len(x))]
    for i in range(2000):  # warm-up: first-call work, the workers' first cycles
        guarded(rows[i % len(rows)])
    time.sleep(2.0)
    stopped = {n.strip() for n in args.stop.split(",") if n.strip()}
    for c in guard.components:
        if args.background == "off" or c.name in stopped:
            c.stop()

    before, after = list(guard._before), list(guard._after)
    names = sorted({h.__self__.name for h in before + after})
    variants = ["all capabilities", *[f"without {n}" for n in names], "no hooks (wrapper only)"]
    diffs: dict[str, list[float]] = {v: [] for v in variants}
    bare_us: list[float] = []
    try:
        rng = np.random.default_rng(0)
        for _ in range(args.reps):
            for v in rng.permutation(variants).tolist():  # a fresh order each time: host noise spreads evenly
                if v == "all capabilities":
                    guard._before, guard._after = list(before), list(after)
                elif v.startswith("without "):
                    name = v[len("without "):]
                    guard._before = [h for h in before if h.__self__.name != name]
                    guard._after = [h for h in after if h.__self__.name != name]
                else:
                    guard._before, guard._after = [], []
                b, g = _pair_medians(bare, guarded, rows, args.calls, args.rate)
                diffs[v].append(g - b)
                if v == "all capabilities":
                    bare_us.append(b)
    finally:
        guard._before, guard._after = before, after
        guard.stop()
        shutil.rmtree(state, ignore_errors=True)

    def spread(vals: list[float]) -> str:
        q = np.percentile(vals, [10, 90])
        return f"{statistics.median(vals):7.1f}   ({q[0]:6.1f} to {q[1]:6.1f})"

    print(f"example model alone (sklearn pipeline, 1 x 30): {statistics.median(bare_us):.1f} us median per call")
    print(f"{args.rate:g} pairs/s; background workers {args.background}{' except ' + ','.join(sorted(stopped)) if stopped else ''}; "
          f"{args.reps} repetitions of {args.calls} alternating bare/guarded calls; guard cost = guarded - bare "
          "median, us (10th to 90th percentile of the repetitions)")
    print(f"{'variant':<34} {'guard cost':>10}")
    for v in variants:
        print(f"{v:<34} {spread(diffs[v])}")
    full = statistics.median(diffs["all capabilities"])
    print("on-path share of each capability (all - without it), us:")
    for n in names:
        print(f"  {n:<32} {full - statistics.median(diffs[f'without {n}']):7.1f}")
    return {"guard_cold_us": full, "bare_us": statistics.median(bare_us),
            "wrapper_us": statistics.median(diffs["no hooks (wrapper only)"])}


if __name__ == "__main__":
    main()
