"""Flush latency and throughput of the drift store: Redis vs SQLite, and Redis round trips per
1,000 guarded requests.

    python -m load_tests.bench_store                 # starts a private redis-server on 127.0.0.1
    python -m load_tests.bench_store --redis-url redis://127.0.0.1:6379/15   # an existing Redis (db emptied!)

Part 1 (store only): one flush = one ``append_batches`` call with the three drift streams of
``--rows`` buffered 1-row requests (30 features, one output column, one p-value column), as the
drift worker sends it. Prints p50/p99 flush latency and rows per second, for ``--writers``
processes flushing at once (the workers of one or many hosts).

Part 2 (guard): a guard with drift on Redis, ``--rps`` 1-row calls per second for ``--seconds``,
flushing every ``--interval`` s: the store's round trips (writes and window reads) per 1,000 requests.

Part 3 (prediction records, SQLite): ``--prediction-flushes`` flushes of ``--rows`` one-row prediction
records (the performance component's flush: request id, two probabilities, 30 inputs) into a growing
``SQLiteOutcomeStore``, with request ids in their current form (issue time first, then a random trace
id), in the earlier form (the trace id first: tracing on) and of tracing off in the earlier form (the
process's fixed part first), in the current layout and in the layout of earlier versions (a ``WITHOUT
ROWID`` table keyed by request id, and an index on ts): microseconds per record in the first and the
last fifth of the flushes (median), i.e. as the table grows.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guarded_serving.store import open_store  # noqa: E402


def _flushes(target: str, rows: int, flushes: int, wid: int, out: "mp.Queue") -> None:
    store = open_store(target, retention=100_000, namespace="bench:1:drift")
    rng = np.random.default_rng(wid)
    lat = []
    store.counter("warm-up")  # connect (Redis) / create the schema (SQLite) outside the timing
    t_start = time.perf_counter()
    for i in range(flushes):
        batch = {"m:inputs": rng.normal(size=(rows, 30)), "m:outputs": rng.random((rows, 1)),
                 "m:p_values": rng.random((rows, 1))}
        t0 = time.perf_counter()
        store.append_batches([(f"{wid}-{i}", batch)])
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t_start
    store.close()
    out.put((lat, wall))


def bench_store(target: str, *, rows: int, flushes: int, writers: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, rows/s) of ``writers`` processes each making ``flushes`` flushes of ``rows`` rows."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_flushes, args=(target, rows, flushes, w, q)) for w in range(writers)]
    for p in procs:
        p.start()
    got = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    a = np.array([x for lat, _ in got for x in lat]) * 1000
    wall = max(w for _, w in got)  # the writers run at once: rows of all of them over the longest loop
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), writers * flushes * rows / wall


_OLD_PREDICTIONS = ("CREATE TABLE predictions (request_id TEXT NOT NULL, row INTEGER NOT NULL, ts REAL NOT NULL, "
                    "version TEXT NOT NULL, segment TEXT NOT NULL, kind TEXT NOT NULL, predicted REAL, view BLOB, "
                    "inputs BLOB, PRIMARY KEY (request_id, row)) WITHOUT ROWID;"
                    "CREATE INDEX predictions_ts ON predictions(ts);")


_ID_FORMS = ("time first, then a trace id (now)", "a trace id first (earlier)", "the process first (earlier)")


def _request_id(form: int, trace_id: int) -> str:
    """A request id of ``_ID_FORMS[form]``: the current one, or the earlier one (its parts swapped)."""
    from guarded_serving.call import new_request_id

    rid = new_request_id(trace_id if form < 2 else 0)
    if form == 0:
        return rid
    head, tail = rid.split("-")
    return f"{tail}-{head}"


def bench_predictions(path: Path, *, old_layout: bool, form: int, rows: int, flushes: int) -> tuple[float, float]:
    """(us per record in the first fifth, in the last fifth) of ``flushes`` flushes of ``rows`` records."""
    import sqlite3
    import struct

    from guarded_serving.store.outcomes import PredictionRecord, SQLiteOutcomeStore

    if old_layout:
        conn = sqlite3.connect(path)
        conn.executescript(_OLD_PREDICTIONS)
        conn.close()
    store = SQLiteOutcomeStore(path)
    rng = np.random.default_rng(1)
    view = struct.pack("dd", 0.3, 0.7)
    lat = []
    t0 = time.time()
    try:
        for f in range(flushes):
            records = [PredictionRecord(_request_id(form, int(rng.integers(1, 2 ** 62))), 0,
                                        t0 + f + i / rows, "1", "*", "classification", 1.0, view,
                                        rng.random(30).tobytes()) for i in range(rows)]
            t = time.perf_counter()
            store.add_predictions(records)
            lat.append((time.perf_counter() - t) * 1e6 / rows)
    finally:
        store.close()
    k = max(1, flushes // 5)
    return float(np.median(lat[:k])), float(np.median(lat[-k:]))


def bench_round_trips(url: str, *, rps: float, seconds: float, interval: float) -> tuple[int, int, int]:
    """(requests, store round trips, flushes) of a guard with drift on Redis under steady traffic."""
    from guarded_serving import Guard

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(1000, 30))
    with tempfile.TemporaryDirectory() as d:
        np.savez(Path(d) / "ref.npz", X_train=ref)
        g = Guard(name="rt", operational=False, drift=True, drift_reference=str(Path(d) / "ref.npz"), drift_store=url,
                  drift_interval_s=interval, drift_window=500, drift_min_samples=100)

        @g
        def predict(inputs):
            return inputs[:, 0]

        g.start()
        n, t0 = 0, time.perf_counter()
        while (now := time.perf_counter() - t0) < seconds:
            predict(rng.normal(size=(1, 30)))
            n += 1
            ahead = n / rps - now
            if ahead > 0:
                time.sleep(ahead)
        st = g.component("drift").stats()
        g.stop()
        return n, int(st.get("store_round_trips", 0)), int(st.get("background", {}).get("runs", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--redis-url", help="an existing Redis to use (its namespace bench:1:drift is overwritten)")
    ap.add_argument("--rows", type=int, default=200, help="1-row requests buffered per flush (default 200)")
    ap.add_argument("--flushes", type=int, default=200)
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--rps", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--prediction-flushes", type=int, default=800,
                    help="part 3: flushes of --rows prediction records (default 800)")
    ap.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 3 (default 1,2,3)")
    args = ap.parse_args()
    parts = {p.strip() for p in args.parts.split(",")}

    server = None
    url = args.redis_url
    if url is None and parts & {"1", "2"}:
        from tests.redis_server import RedisServer

        server = RedisServer().start()
        url = server.url
    try:
        if "1" in parts:
            print(f"flush = {args.rows} rows x (30 inputs + 1 output + 1 p-value), one append_batches call")
            print(f"{'store':<8} {'writers':>7} {'p50 ms':>8} {'p99 ms':>8} {'rows/s':>10}")
            with tempfile.TemporaryDirectory() as d:
                for w in args.writers:
                    for name, target in (("sqlite", str(Path(d) / f"w{w}.sqlite")), ("redis", url)):
                        p50, p99, rps = bench_store(target, rows=args.rows, flushes=args.flushes, writers=w)
                        print(f"{name:<8} {w:>7} {p50:>8.2f} {p99:>8.2f} {rps:>10.0f}")
        if "2" in parts:
            n, rt, flushes = bench_round_trips(url, rps=args.rps, seconds=args.seconds, interval=args.interval)
            print(f"guard on Redis: {n} requests at {args.rps:g}/s, flush every {args.interval:g} s: "
                  f"{rt} round trips in {flushes} cycles = {1000 * rt / max(n, 1):.1f} per 1,000 requests "
                  f"(one write per cycle; the rest are window reads)")
        if "3" not in parts:
            return
        print(f"\nprediction records: {args.prediction_flushes} flushes of {args.rows} into one SQLite outcome "
              f"store, us per record (median), first fifth -> last fifth")
        with tempfile.TemporaryDirectory() as d:
            for old in (True, False):
                for form, label in enumerate(_ID_FORMS):
                    first, last = bench_predictions(Path(d) / f"p{old:d}{form}.sqlite", old_layout=old,
                                                    form=form, rows=args.rows, flushes=args.prediction_flushes)
                    print(f"  {'earlier layout' if old else 'current layout':<15} ids with {label:<34} "
                          f"{first:6.1f} -> {last:6.1f}")
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
