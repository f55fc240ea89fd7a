"""Quality and cost of the edge-case detectors against IsolationForest and PyOD's ECOD.

    PYTHONPATH=. python benchmarks/bench_ood.py [--quick]

Data sets (all ship inside installed packages, no download):
- shuttle: river's Shuttle (49,097 x 9, ~7% anomalies); fit on 15,000 normal
  rows, calibrate on 5,000, test on 5,000 held-out normal rows vs 3,000 anomalies
  (subsampled to keep the run short).
- digits: scikit-learn's digits, classes 0-4 in distribution, 5-9 out.
- breast_cancer: benign in distribution, malignant out.
- corruptions: held-out breast-cancer rows (both classes; fit on the rest) with one
  corruption per row on a random feature: unit error x1000, stuck at 0, sign flip,
  two swapped features, a feature missing (NaN; baselines that cannot take NaN get
  the column mean, i.e. they cannot see it).

For each detector: AUROC (in-distribution test vs out), flag rate of
in-distribution test rows at the 1% target (conformal p-value <= 0.01 against
the calibration rows, for every detector alike) and of out-of-distribution
rows; single-row scoring p50 (µs, one row of 30 features) and batch throughput.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from guarded_serving.edge_cases import (CombinedDetector, ConformalCalibrator, KNNDetector,  # noqa: E402
                                       MahalanobisDetector, TailDetector)

ALPHA = 0.01


def _shuttle():
    from river.datasets import Shuttle

    with gzip.open(Shuttle().path, "rt") as fh:
        header = fh.readline().strip().split(",")
        data = np.loadtxt(fh, delimiter=",")
    k = header.index("anomaly")
    return np.delete(data, k, axis=1), data[:, k].astype(int)


def _split(X, rng, n_fit, n_cal, n_test):
    idx = rng.permutation(len(X))
    a, b = n_fit, n_fit + n_cal
    return X[idx[:a]], X[idx[a:b]], X[idx[b:b + n_test]]


def datasets(rng):
    from sklearn.datasets import load_breast_cancer, load_digits

    from _edge_data import corrupt

    X, y = _shuttle()
    normal, anom = X[y == 0], X[y == 1]
    f, c, t = _split(normal, rng, 15000, 5000, 5000)
    yield "shuttle", f, c, t, anom[rng.permutation(len(anom))[:3000]]
    d = load_digits()
    inn, out = d.data[d.target < 5], d.data[d.target >= 5]
    f, c, t = _split(inn, rng, 500, 200, 200)
    yield "digits (5-9 held out)", f, c, t, out
    bc = load_breast_cancer()
    inn, out = bc.data[bc.target == 1], bc.data[bc.target == 0]
    f, c, t = _split(inn, rng, 200, 100, 57)
    yield "breast_cancer (malignant held out)", f, c, t, out
    f, c, t = _split(bc.data, rng, 300, 130, 139)
    for kind in ("unit_x1000", "stuck", "sign_flip", "swap", "missing"):
        yield f"breast_cancer + {kind}", f, c, t, corrupt(t, kind, np.random.default_rng(7))


class _Baseline:
    """IsolationForest / ECOD behind the same outlyingness interface (NaN -> training mean)."""

    def __init__(self, name):
        self.name = name

    def fit(self, X):
        self.mean_ = np.nanmean(X, axis=0)
        if self.name == "IsolationForest":
            from sklearn.ensemble import IsolationForest

            self.m = IsolationForest(random_state=0).fit(X)
            self.f = lambda Z: -self.m.score_samples(Z)
        else:
            from pyod.models.ecod import ECOD

            self.m = ECOD().fit(X)
            self.f = self.m.decision_function
        return self

    def outlyingness(self, X):
        X = np.where(np.isnan(X), self.mean_, X)
        return self.f(X)


def detectors():
    out = [("tail", lambda: TailDetector()), ("mahalanobis", lambda: MahalanobisDetector()),
           ("knn", lambda: KNNDetector()), ("default (tail+mahalanobis)", lambda: CombinedDetector()),  # fit(X) holds out 20% to rank
           ("IsolationForest", lambda: _Baseline("IsolationForest"))]
    try:
        import pyod.models.ecod  # noqa: F401

        out.append(("PyOD ECOD", lambda: _Baseline("ECOD")))
    except Exception as exc:  # pragma: no cover
        print(f"(PyOD not available: {exc})")
    return out


def auroc(neg, pos):
    from sklearn.metrics import roc_auc_score

    s = np.r_[neg, pos]
    s = np.where(np.isposinf(s), np.finfo(float).max, s)
    return roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], s)


def p50_us(f, x, reps):
    for _ in range(20):
        f(x)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        f(x)
        ts.append(time.perf_counter_ns() - t0)
    return float(np.median(ts)) / 1000.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    dets = detectors()
    t_start = time.monotonic()
    results = {}
    print(f"{'data set':<36} {'detector':<28} {'AUROC':>6} {'in-dist flag@1%':>15} {'OOD flag@1%':>11}")
    for ds, fit, cal, test, ood in datasets(rng):
        for name, make in dets:
            if name.startswith("default"):  # calibrated on its own combined scores of the calibration rows
                d = make().fit(fit, calibration=cal)
                c = ConformalCalibrator(d.calibration_scores_)
            else:
                d = make().fit(fit)
                c = ConformalCalibrator(np.nan_to_num(d.outlyingness(cal), posinf=1e300))
            s_in, s_out = d.outlyingness(test), d.outlyingness(ood)
            a = auroc(s_in, s_out)
            fi = float((c.p_values(s_in) <= ALPHA).mean())
            fo = float((c.p_values(s_out) <= ALPHA).mean())
            results[(ds, name)] = (a, fi, fo)
            print(f"{ds:<36} {name:<28} {a:6.3f} {fi:15.3%} {fo:11.1%}", flush=True)
    print("\nbest AUROC per data set vs the default:")
    for ds in dict.fromkeys(k[0] for k in results):
        best = max((v[0], n) for (d_, n), v in results.items() if d_ == ds)
        dflt = results[(ds, "default (tail+mahalanobis)")][0]
        print(f"  {ds:<36} best {best[0]:.3f} ({best[1]}), default {dflt:.3f}, gap {best[0] - dflt:+.3f}")

    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    row = X[:1].copy()
    reps = 300 if args.quick else 3000
    print("\nsingle-row scoring, one row of 30 features (breast_cancer), p50 over repetitions:")
    for name, make in dets:
        d = make().fit(X[:400])
        r = reps if name not in ("IsolationForest", "PyOD ECOD") else max(reps // 10, 50)
        print(f"  {name:<28} {p50_us(d.outlyingness, row, r):10.1f} µs")
    rng = np.random.default_rng(1)
    big = rng.normal(size=(1_000_000, 30))
    print("\nbatch throughput, 1,000,000 rows x 30 features:")
    for name, make in dets[:2] + dets[3:4]:
        d = make().fit(big[:50_000])
        d.outlyingness(big[:1000])
        t0 = time.perf_counter()
        d.outlyingness(big)
        dt = time.perf_counter() - t0
        print(f"  {name:<28} {len(big) / dt / 1e6:6.2f} M rows/s")
    print(f"\ntotal run time {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
