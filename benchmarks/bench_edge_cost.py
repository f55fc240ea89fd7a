"""Request-path cost of the edge-case verdict: one row of 30 features (target: <= 20 µs p50).

    PYTHONPATH=. python benchmarks/bench_edge_cost.py [--reps 20000]

Measures, on the breast-cancer example's profile (built here if missing):
1. scoring: the default detector's outlyingness + conformal p-value of one row;
2. the component's whole ``before_call`` (scoring, p-values into call.state, verdict);
3. a guarded no-op model with and without a profile (what the guard adds in all);
4. the component's ``before_call`` at 1, 2, 10 and 100 rows (30 features: the example's test
   rows as they come, so the 10 rows include one out of the training range and the 100 one
   flagged, explained row; then "clean" rows, in range and not flagged: the verdict alone),
   and at 1 and 10 rows of 1,000 features (synthetic Gaussian
   profile), with OpenBLAS's default threads and then after ``limit_blas_threads(1)``;
5. what scoping BLAS to one thread would cost per call (threadpoolctl), the reason the
   setting is per worker (``guarded_serving.operational.blas``);
6. batch throughput of the tail, Mahalanobis and default scores on 1,000,000 rows x 30
   features (goal: millions of rows per second), best of ``--batch-reps`` runs.
7. (issue 16, ``--only-flagged``) one row at 10, 30, 300 and 1,000 features (synthetic
   correlated Gaussian profiles): the default detector's score + p-value on a clean row and on
   a row with one value out of the training range, and the component's ``before_call`` on an
   unflagged row, on a flagged row (verdict only: the explanation is lazy), and on a flagged
   row whose explanation is read (a response header or an exported span asks for it).
8. (``--only-detectors``) each ``edge_detector`` choice on one breast-cancer row (a profile
   built here from the data set): score + p-value, and the component's ``before_call``;
   then batch throughput of the copula detector and the ``mahalanobis+copula`` combination.
Figures are p50 / p99 over repetitions, in microseconds, on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(f, reps):
    for _ in range(200):
        f()
    ts = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter_ns()
        f()
        ts[i] = time.perf_counter_ns() - t0
    return np.median(ts) / 1000, np.quantile(ts, 0.99) / 1000


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--batch-reps", type=int, default=3)
    ap.add_argument("--only-batches", action="store_true", help="only section 4 (before_call by batch size)")
    ap.add_argument("--no-wide", action="store_true", help="skip the 1,000-feature rows of section 4")
    ap.add_argument("--only-flagged", action="store_true", help="only section 7 (flagged vs unflagged rows)")
    ap.add_argument("--only-detectors", action="store_true", help="only section 8 (each edge_detector choice)")
    args = ap.parse_args(argv)
    if args.only_flagged:
        flagged_cost(args.reps)
        return
    if args.only_detectors:
        detector_choices(args.reps, args.batch_reps)
        return
    from guarded_serving import Guard
    from guarded_serving.call import Call
    from services import train

    art = ROOT / "services" / "artifacts"
    if not (art / "profile.npz").exists():
        train.train(art)
    ref = np.load(art / "reference.npz")
    x = np.ascontiguousarray(ref["X_test"][:1])
    g_edge = Guard(name="cost", profile=str(art / "profile.npz"))
    g_none = Guard(name="cost", n_features=30)
    comp = g_edge.component("edge_cases")
    det, cal = comp.detector_, comp.calibrator_

    def score():
        return cal.p_values(det.outlyingness(x))

    def hook():
        comp.before_call(Call((x,), {}, x, "x", 0))

    if args.only_batches:
        batches(comp, ref["X_test"], args.reps, wide=not args.no_wide)
        return
    model = lambda inputs: inputs  # noqa: E731
    with_edge, without = g_edge(model), g_none(model)
    rows = [("default detector + p-value (1 row, 30 features)", score),
            ("component before_call", hook),
            ("guarded no-op model, with profile", lambda: with_edge(x)),
            ("guarded no-op model, without profile", lambda: without(x))]
    print(f"{'what':<52} {'p50 µs':>8} {'p99 µs':>8}")
    out = {}
    for name, f in rows:
        p50, p99 = timed(f, args.reps)
        out[name] = p50
        print(f"{name:<52} {p50:8.1f} {p99:8.1f}")
    added = out["guarded no-op model, with profile"] - out["guarded no-op model, without profile"]
    print(f"\nedge-case verdict adds {added:.1f} µs p50 to a guarded call (target <= 20 µs)")
    throughput(args.batch_reps)  # with BLAS's default threads
    blas_scoping(args.reps)
    batches(comp, ref["X_test"], args.reps)  # ends by limiting BLAS to one thread for the process


def batches(comp, X, reps, wide=True):
    """The component's before_call by batch size: 30 features (the example), then 1,000 (synthetic)."""
    from guarded_serving.call import Call
    from guarded_serving.edge_cases import build_profile
    from guarded_serving.edge_cases.component import EdgeCaseComponent

    def cost(c, x):
        return timed(lambda: c.before_call(Call((x,), {}, x, "x", 0)), reps)[0]

    print("\nbefore_call by batch size (p50 µs; ratio to one row):")
    rng = np.random.default_rng(0)
    wide_rows = rng.normal(size=(100, 1000))
    o = comp.detector_.outlyingness(X)
    p = (comp._cal_n - np.searchsorted(comp._cal, o, side="left") + 1.0) / comp._cal_num
    tail = comp.detector_.detectors_.get("tail") if hasattr(comp.detector_, "detectors_") else None
    in_range = ~np.isnan(tail._lookup(X).sum(axis=1)) if tail is not None else np.ones(len(X), bool)
    clean = X[(p > comp.fpr) & in_range]  # in the training range and not flagged: the verdict alone
    cases = [("30 features", comp, X, (1, 2, 10, 100)), ("30, clean rows", comp, clean, (1, 2, 10, 100))]
    if wide:
        wide_comp = EdgeCaseComponent(build_profile(rng.normal(size=(6000, 1000))))
        wide_comp.bind(_Bindable(1000))
        cases.append(("1,000 features", wide_comp, wide_rows, (1, 10)))
    for label, c, data, sizes in cases:
        one = None
        for n in sizes:
            x = np.ascontiguousarray(np.resize(data, (n, data.shape[1])), dtype=np.float64)
            p50 = cost(c, x)
            one = one or p50
            print(f"  {label:<16} {n:>4} rows {p50:9.1f}   x{p50 / one:4.1f}")
    if not wide:
        return
    try:
        from guarded_serving.operational.blas import blas_threads, limit_blas_threads
    except ImportError:  # older checkouts
        return
    before = limit_blas_threads(1)  # the per-worker setting; process-wide from here on
    print(f"  after limit_blas_threads(1) (BLAS threads were {before}, now {blas_threads()}):")
    for n in (1, 10):
        x = np.ascontiguousarray(wide_rows[:n])
        print(f"  {'1,000 features':<16} {n:>4} rows {cost(wide_comp, x):9.1f}")


def flagged_cost(reps):
    """Section 7: one row, clean / out of range / flagged, by feature count (p50 µs)."""
    from guarded_serving.call import Call
    from guarded_serving.edge_cases import build_profile
    from guarded_serving.edge_cases.component import EdgeCaseComponent
    from guarded_serving.keys import EDGE_VERDICT
    from guarded_serving.operational.blas import limit_blas_threads

    limit_blas_threads(1)  # the per-worker setting (see section 4)
    print("\none row, p50 µs (p99): score = default detector + p-value; before_call = the component's verdict")
    print(f"{'features':>8} {'score clean':>14} {'score out-of-range':>19} {'unflagged call':>15} "
          f"{'flagged call':>14} {'flagged, explained':>19}")
    for p in (10, 30, 300, 1000):
        rng = np.random.default_rng(p)
        z = rng.normal(size=(6000, 1))
        X = z + 0.5 * rng.normal(size=(6000, p))
        comp = EdgeCaseComponent(build_profile(X[:5000]), fpr=0.01)
        comp.bind(_Bindable(p))
        det, cal = comp.detector_, comp.calibrator_
        o = det.outlyingness(X[5000:])
        pv = cal.p_values(o)
        tail = det.detectors_["tail"]
        inr = ~np.isnan(tail._lookup(X[5000:]).sum(axis=1))
        clean = np.ascontiguousarray(X[5000:][(pv > 0.05) & inr][:1])
        out = clean.copy()
        out[0, 0] = tail.max_[0] + 0.05 * (tail.max_[0] - tail.min_[0])  # just past the training range
        flagged = clean.copy()
        flagged[0, 0] = 1e3  # a unit error: far out, flagged

        def explained(x=flagged, c=comp):
            call = Call((x,), {}, x, "x", 0)
            c.before_call(call)
            call.state[EDGE_VERDICT]["explanation"]

        row = [timed(lambda: comp._outlyingness_one(clean), reps),
               timed(lambda: comp._outlyingness_one(out), reps),
               timed(lambda: comp.before_call(Call((clean,), {}, clean, "x", 0)), reps),
               timed(lambda: comp.before_call(Call((flagged,), {}, flagged, "x", 0)), reps),
               timed(explained, max(reps // 10, 300))]
        print(f"{p:>8} " + " ".join(f"{a:7.1f} ({b:5.0f})".rjust(w) for (a, b), w in zip(row, (14, 19, 15, 14, 19))))


class _Bindable:
    """The least of a guard that EdgeCaseComponent.bind reads."""

    def __init__(self, n_features):
        from guarded_serving.config import GuardConfig

        self.config = GuardConfig(name="bench", n_features=n_features)


def blas_scoping(reps):
    """Per-call cost of limiting BLAS to one thread around a call (threadpoolctl), for the record."""
    try:
        from threadpoolctl import ThreadpoolController, threadpool_limits
    except ImportError:
        print("\nthreadpoolctl is not installed: BLAS scoping cost not measured")
        return
    ctl = ThreadpoolController()
    print("\nBLAS scoping cost per call (p50 / p99 µs):")
    for name, f in (("threadpool_limits(1, 'blas')", lambda: threadpool_limits(1, "blas").__exit__(None, None, None)),
                    ("cached controller .limit(1, 'blas')",
                     lambda: ctl.limit(limits=1, user_api="blas").__exit__(None, None, None))):
        p50, p99 = timed(f, max(reps // 10, 500))
        print(f"  {name:<40} {p50:8.1f} {p99:8.1f}")


def detector_choices(reps, batch_reps):
    """One row of 30 features through each ``edge_detector`` choice, then copula batch throughput."""
    from sklearn.datasets import load_breast_cancer

    from guarded_serving import Guard
    from guarded_serving.call import Call
    from guarded_serving.edge_cases import build_profile

    X = load_breast_cancer().data
    prof = build_profile(X[:500], calibration_fraction=0.4)
    rows = {"clean": np.ascontiguousarray(X[500:501])}
    rows["out of range"] = X[500:501].copy()
    rows["out of range"][0, 3] *= 1000
    print(f"{'edge_detector':<22} {'row':<14} {'score+p p50':>12} {'before_call p50':>16} {'p99':>8}")
    for name in ("combined", "mahalanobis", "copula", "mahalanobis+copula", "tail+copula"):
        comp = Guard(name="cost", profile=prof, edge_detector=name).component("edge_cases")
        det, cal = comp.detector_, comp.calibrator_
        for kind, x in rows.items():
            s50, _ = timed(lambda d=det, c=cal, r=x: c.p_values(d.outlyingness(r)), reps)
            h50, h99 = timed(lambda c=comp, r=x: c.before_call(Call((r,), {}, r, "x", 0)), reps)
            print(f"{name:<22} {kind:<14} {s50:12.1f} {h50:16.1f} {h99:8.1f}")
    throughput(batch_reps, copula=True)


def throughput(reps, copula=False):
    """Rows per second of each detector's batch path on synthetic Gaussian rows (fit on 50,000)."""
    from guarded_serving.edge_cases import CombinedDetector, CopulaDetector, MahalanobisDetector, TailDetector

    big = np.random.default_rng(1).normal(size=(1_000_000, 30))
    print("\nbatch throughput, 1,000,000 rows x 30 features (best of %d):" % reps)
    which = ((("copula", CopulaDetector()), ("mahalanobis+copula", CombinedDetector(parts=("mahalanobis", "copula"))))
             if copula else (("tail", TailDetector()), ("mahalanobis", MahalanobisDetector()),
                             ("default detector", CombinedDetector())))
    for name, d in which:
        d.fit(big[:50_000])
        d.outlyingness(big[:1000])
        best = min(_seconds(d.outlyingness, big) for _ in range(reps))
        print(f"  {name:<20} {len(big) / best / 1e6:6.2f} M rows/s")


def _seconds(f, X):
    t0 = time.perf_counter()
    f(X)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
