"""Many hosts: throughput and detection delay of two hosts sharing Redis vs one host on SQLite.

    python -m load_tests.bench_many_hosts [--seconds 10] [--concurrency 4]

Starts a private redis-server and the example service as separate ``bentoml serve`` "hosts" on
127.0.0.1 (two workers each, own state directories; see tests/hosts.py), then prints:

1. throughput: one host with its SQLite store vs two hosts with one Redis, both driven at once
   with 1-row predictions (requests/s in total and per host, and the ratio per host). On one
   machine the "hosts" share its CPUs, so the ratio per host measures the store's cost, not
   the scaling of real hosts;
2. detection delay, in shifted rows, of a +1 std shift of mean_radius split half to each host:
   one host, two hosts pooling through Redis, two hosts each with its own SQLite store.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.client import drive  # noqa: E402
from tests.hosts import ARTIFACTS, detection_delay, serve_hosts  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


def throughput(servers, seconds: float, concurrency: int) -> list:
    X = np.load(ARTIFACTS / "reference.npz")["X_test"]
    payloads = [{"inputs": X[i:i + 1].tolist()} for i in range(len(X))]
    drive(servers[0].url + "/predict", payloads, seconds=1, concurrency=2)  # warm up
    results: list = [None] * len(servers)

    def run(i: int) -> None:
        results[i] = drive(servers[i].url + "/predict", payloads, seconds=seconds, concurrency=concurrency)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(servers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=4, help="client threads per host")
    ap.add_argument("--skip-delay", action="store_true")
    args = ap.parse_args()
    if not (ARTIFACTS / "model.pkl").exists():
        from services.train import train

        train(ARTIFACTS)
    with tempfile.TemporaryDirectory() as d, RedisServer() as redis:
        root = Path(d)
        with serve_hosts(1, root / "t1", store_url=None) as one:
            r1 = throughput(one, args.seconds, args.concurrency)
        with serve_hosts(2, root / "t2", store_url=redis.url) as two:
            r2 = throughput(two, args.seconds, args.concurrency)
        print(f"{'setup':<24} {'req/s total':>11} {'req/s/host':>10} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}")
        for name, rs in (("1 host, SQLite", r1), ("2 hosts, one Redis", r2)):
            total = sum(r.rps for r in rs)
            lat = np.concatenate([r.latencies_ms for r in rs])
            print(f"{name:<24} {total:>11.1f} {total / len(rs):>10.1f} {np.percentile(lat, 50):>7.1f} "
                  f"{np.percentile(lat, 99):>7.1f} {sum(r.failures for r in rs):>6}")
        print(f"ratio per host (2 hosts + Redis / 1 host + SQLite): "
              f"{sum(r.rps for r in r2) / 2 / sum(r.rps for r in r1):.2f}")
        if args.skip_delay:
            return
        redis.client().flushall()
        with serve_hosts(1, root / "d1", store_url=None) as one:
            d1, _ = detection_delay(one)
        with serve_hosts(2, root / "d2", store_url=redis.url) as two:
            d2, _ = detection_delay(two)
        with serve_hosts(2, root / "d3", store_url=None) as two:
            d3, _ = detection_delay(two, expect_total=False)
        fmt = lambda d: f"{d} shifted rows" if d is not None else "not within 500 shifted rows"  # noqa: E731
        print("detection delay of a +1 std shift of mean_radius (window 500, steps of 20 rows):")
        print(f"  1 host (SQLite):                     {fmt(d1)}")
        print(f"  2 hosts, one Redis (half each):      {fmt(d2)}")
        print(f"  2 hosts, own SQLite each (half each): {fmt(d3)}")


if __name__ == "__main__":
    main()
