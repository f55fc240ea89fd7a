"""Benchmark: our streaming SHA-256 against ``sha256sum`` on the same 1 GB file.

    python benchmarks/bench_hash.py [--size-mb 1024] [--repeat 3] [--chunk-kb 1024]

Writes a file of random bytes in a temp dir (deleted afterwards), then hashes
it alternately with :func:`guarded_serving.integrity.hashing.sha256_file` and
``sha256sum``, ``--repeat`` times each, and prints the best throughput of
each and their ratio (target: ours within 1.2x of ``sha256sum``). Both read
the file from the page cache after the first pass, so this compares hashing
speed, not disk speed. Also checks both give the same digest and reports our
peak memory growth (bounded by one chunk).

Where ``openssl`` is installed, ``openssl dgst -sha256`` is timed too, as a
second reference: coreutils' ``sha256sum`` may be built without the CPU's SHA
instructions, in which case it is slower than the machine's SHA-256 speed and
the OpenSSL figure is the fairer bar.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guarded_serving.integrity.hashing import sha256_file  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-kb", type=int, default=1024)
    args = ap.parse_args(argv)
    tool = shutil.which("sha256sum")
    if tool is None:
        print("sha256sum not found; cannot compare", file=sys.stderr)
        return 2
    size = args.size_mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="gs-bench-hash-") as tmp:
        path = Path(tmp) / "blob.bin"
        block = os.urandom(8 * 1024 * 1024)
        t0 = time.perf_counter()
        with open(path, "wb") as fh:
            left = size
            while left > 0:
                fh.write(block[:min(left, len(block))])
                left -= len(block)
        print(f"wrote {args.size_mb} MiB in {time.perf_counter() - t0:.1f} s to {path}")
        openssl = shutil.which("openssl")
        ours, theirs, ossl = [], [], []
        digest_ours = digest_theirs = ""
        peak = 0
        for i in range(args.repeat):
            tracemalloc.start()
            t0 = time.perf_counter()
            d = sha256_file(path, chunk_size=args.chunk_kb * 1024)
            ours.append(time.perf_counter() - t0)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
            digest_ours = d.sha256
            t0 = time.perf_counter()
            out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=True).stdout
            theirs.append(time.perf_counter() - t0)
            digest_theirs = out.split()[0]
            line = f"  pass {i + 1}: ours {ours[-1]:.3f} s, sha256sum {theirs[-1]:.3f} s"
            if openssl:
                t0 = time.perf_counter()
                out = subprocess.run([openssl, "dgst", "-sha256", "-r", str(path)], capture_output=True,
                                     text=True, check=True).stdout
                ossl.append(time.perf_counter() - t0)
                if out.split()[0] != digest_ours:
                    print(f"openssl digest differs: {out.split()[0]}")
                    return 1
                line += f", openssl {ossl[-1]:.3f} s"
            print(line, flush=True)
    mib = size / (1024 * 1024)
    best_ours, best_theirs = min(ours), min(theirs)
    ratio = best_ours / best_theirs
    print(f"ours      : {mib / best_ours:8.1f} MiB/s (best of {args.repeat}, chunk {args.chunk_kb} KiB, "
          f"peak Python allocation {peak / 1024:.0f} KiB)")
    print(f"sha256sum : {mib / best_theirs:8.1f} MiB/s (best of {args.repeat}, includes process start)")
    if ossl:
        print(f"openssl   : {mib / min(ossl):8.1f} MiB/s (best of {args.repeat}, includes process start); "
              f"ours takes {best_ours / min(ossl):.3f}x its time")
    print(f"ratio     : {ratio:.3f}x sha256sum's time (target <= 1.2x) -> {'OK' if ratio <= 1.2 else 'OVER TARGET'}")
    if digest_ours != digest_theirs:
        print(f"DIGESTS DIFFER: ours {digest_ours}, sha256sum {digest_theirs}")
        return 1
    print(f"digests agree: {digest_ours}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
