"""Drift detectors: false alarms, detection delay, and the cost of one window test.

    PYTHONPATH=. python benchmarks/bench_drift.py [--quick]

Compares, on the same univariate streams (river's detectors are univariate):

- ``window``: our window test (KS / chi-squared + BH + min effect 0.15 + min
  samples 200), the latest 1,000 rows against 5,000 reference rows, run every
  100 rows;
- ``window + recent``: the same, also testing the latest 200 and 400 rows
  (Bonferroni over the three sizes);
- ``sequential``: our conformal test martingale (alpha 0.01) on conformal
  p-values of each row against the 5,000 reference rows (numeric: two
  one-sided scores x and -x; categorical: rarity -log freq, smoothed p-values);
- river's ``ADWIN``, ``PageHinkley`` and ``KSWIN`` with default settings, fed
  the raw values (category codes for the categorical stream).

False alarms: alarm episodes on 100,000 stationary rows. Delay: rows from the
change to the first alarm after it (mean over repetitions; "-" = missed within
the post-change horizon). Also times one window test for 100 features x
10,000 rows. Figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import numpy as np

from guarded_serving.drift.sequential import ConformalMartingale, conformal_p_values
from guarded_serving.drift.windows import WindowTest

N_REF = 5000
WINDOW = 1000
STEP = 100
PRE = 2000


# -- streams ---------------------------------------------------------------------------
def numeric_stream(rng: np.random.Generator, n_pre: int, n_post: int, kind: str) -> np.ndarray:
    pre = rng.normal(size=n_pre)
    post = rng.normal(size=n_post)
    if kind == "mean 0.25 std":
        post += 0.25
    elif kind == "mean 0.5 std":
        post += 0.5
    elif kind == "variance x1.5":
        post *= 1.5
    elif kind == "slow drift (1 std over 5,000 rows)":
        post += np.minimum(np.arange(n_post) / 5000.0, 1.0)
    return np.concatenate([pre, post])


CAT_P = np.array([0.5, 0.3, 0.2])
CAT_SHIFTED = np.array([0.375, 0.225, 0.4])  # category 2 doubles; others shrink in proportion


def cat_stream(rng: np.random.Generator, n_pre: int, n_post: int, shifted: bool = True) -> np.ndarray:
    return np.concatenate([rng.choice(3, n_pre, p=CAT_P),
                           rng.choice(3, n_post, p=CAT_SHIFTED if shifted else CAT_P)]).astype(float)


# -- detectors: each returns the 0-based indices at which it alarmed --------------------
def run_window(x: np.ndarray, ref: np.ndarray, categorical: bool, recent: tuple[int, ...] = ()) -> list[int]:
    t = WindowTest(alpha=0.01, min_effect=0.15, min_samples=200, categorical=[0] if categorical else [],
                   max_reference=N_REF, recent=recent).fit(ref[:, None])
    out, alarmed = [], False
    for end in range(STEP, len(x) + 1, STEP):
        rep = t.test(x[max(0, end - WINDOW):end, None])
        now = bool(rep.drifted)
        if now and not alarmed:
            out.append(end - 1)
        alarmed = now
    return out


def run_sequential(x: np.ndarray, ref: np.ndarray, categorical: bool) -> list[int]:
    rng = np.random.default_rng(123)
    if categorical:
        vals, counts = np.unique(ref, return_counts=True)
        freq = dict(zip(vals.tolist(), (counts / counts.sum()).tolist()))
        score = lambda v: -np.log(np.array([freq.get(c, 1e-9) for c in v.tolist()]))  # noqa: E731
        cal = score(ref)
        pv = lambda v: conformal_p_values(cal, score(v), rng)[:, None]  # noqa: E731  (smoothed: scores tie)
    else:
        pv = lambda v: np.column_stack([conformal_p_values(ref, v), conformal_p_values(-ref, -v)])  # noqa: E731
    m = ConformalMartingale(alpha=0.01).fit()
    for i in range(0, len(x), 500):
        if m.update(pv(x[i:i + 500])):
            return [m.alarm_at_ - 1]
    return []


def _river(factory: Callable[[], object]) -> Callable[[np.ndarray, np.ndarray, bool], list[int]]:
    def run(x: np.ndarray, ref: np.ndarray, categorical: bool) -> list[int]:
        d = factory()
        out = []
        for i, v in enumerate(x.tolist()):
            d.update(v)
            if d.drift_detected:
                out.append(i)
        return out

    return run


def detectors() -> dict[str, Callable[[np.ndarray, np.ndarray, bool], list[int]]]:
    from river import drift

    return {"window (ours)": run_window,
            "window + recent 200/400 (ours)": lambda x, ref, cat: run_window(x, ref, cat, recent=(200, 400)),
            "sequential (ours)": run_sequential,
            "ADWIN": _river(lambda: drift.ADWIN()), "PageHinkley": _river(lambda: drift.PageHinkley()),
            "KSWIN": _river(lambda: drift.KSWIN(seed=0))}


# -- benchmark ----------------------------------------------------------------------------
def false_alarms(n: int) -> None:
    print(f"\n## False alarms on {n:,} stationary rows (alarm episodes; ours at level 0.01)\n")
    print("| detector | numeric N(0,1) | categorical | time (s) |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    ref = rng.normal(size=N_REF)
    ref_c = cat_stream(rng, N_REF, 0)
    x = rng.normal(size=n)
    xc = cat_stream(rng, n, 0)
    for name, det in detectors().items():
        t0 = time.perf_counter()
        a, b = len(det(x, ref, False)), len(det(xc, ref_c, True))
        print(f"| {name} | {a} | {b} | {time.perf_counter() - t0:.1f} |", flush=True)


def delays(reps: int, n_post: int) -> None:
    kinds = ["mean 0.25 std", "mean 0.5 std", "variance x1.5", "category frequency x2",
             "slow drift (1 std over 5,000 rows)"]
    dets = detectors()
    print(f"\n## Detection delay (rows after the change; mean of {reps} runs, {PRE:,} rows before it, "
          f"{n_post:,} after; '-' = missed; (k) = k false alarms before the change)\n")
    print("| shift | " + " | ".join(dets) + " |")
    print("|---|" + "---|" * len(dets))
    for kind in kinds:
        cells = []
        res: dict[str, tuple[list[int], int, int]] = {name: ([], 0, 0) for name in dets}
        for r in range(reps):
            rng = np.random.default_rng(100 + r)
            cat = kind.startswith("category")
            ref = cat_stream(rng, N_REF, 0) if cat else rng.normal(size=N_REF)
            x = cat_stream(rng, PRE, n_post) if cat else numeric_stream(rng, PRE, n_post, kind)
            for name, det in dets.items():
                alarms = det(x, ref, cat)
                before = sum(1 for a in alarms if a < PRE)
                after = [a - PRE for a in alarms if a >= PRE]
                d, fa, miss = res[name]
                if after:
                    d.append(after[0])
                res[name] = (d, fa + before, miss + (0 if after else 1))
        for name in dets:
            d, fa, miss = res[name]
            cell = f"{np.mean(d):.0f}" if d else "-"
            if miss and d:
                cell += f" ({miss} missed)"
            if fa:
                cell += f" ({fa})"
            cells.append(cell)
        print(f"| {kind} | " + " | ".join(cells) + " |", flush=True)


def cost(reps: int) -> None:
    print("\n## Cost of one window test (100 features x 10,000 rows)\n")
    rng = np.random.default_rng(1)
    R = rng.normal(size=(10000, 100))
    W = rng.normal(size=(10000, 100))
    print("| reference rows kept | median ms | min ms |")
    print("|---|---|---|")
    for mr in (2000, 5000):
        t = WindowTest(max_reference=mr).fit(R)
        t.test(W)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            t.test(W)
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"| {mr:,} | {np.median(times):.1f} | {min(times):.1f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rows and repetitions (a smoke run)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cost(5 if args.quick else 20)
    false_alarms(20_000 if args.quick else 100_000)
    delays(1 if args.quick else 3, 4000 if args.quick else 10_000)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
