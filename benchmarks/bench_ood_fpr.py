"""What users get at the configured false-positive rate: the default edge detector, its parts and peers.

    PYTHONPATH=. nice -n 10 python benchmarks/bench_ood_fpr.py [--seeds 10] [--quick]

For every set and seed, every detector is fitted on the same fitting rows, calibrated on the
same held-out calibration rows (conformal p-values) and scored on the same test rows, row by row
(each peer's score of a row does not depend on the other test rows). Reported per set and
detector, mean ± standard deviation over seeds:

- TPR@1%, TPR@5%: share of edge-case rows flagged at p <= 0.01 / 0.05;
- clean@1%, clean@5%: share of clean held-out test rows flagged (pooled over seeds), with the
  binomial band: a calibrated detector has an expected rate of at most the target
  (``floor(a (n + 1)) / (n + 1)``), so the band is [0, a + 1.96 sqrt(a (1 - a) / N)] for N
  pooled clean rows;
- AUROC: clean test rows vs edge-case rows.

Sets (seeded per seed):
- corruptions of held-out breast-cancer rows (both classes; fit 250, calibrate 250, test the
  other 69 rows), one per row on a random feature: ``in_range_unusual`` (every value drawn
  from a different fitting row: each value in range, the combination not), ``unit_x1000`` and
  ``unit_div1000`` (unit errors both ways), ``sentinel_-999`` and ``sentinel_0``,
  ``stuck_min`` (the feature's training minimum), ``swap`` (two columns swapped),
  ``sign_flip``;
- rows from other data sets: digits (0-4 in, 5-9 out; fit 500, calibrate 200, test 200),
  breast cancer (benign in, malignant out; fit 157, calibrate 100, test 100), wine (class 0
  and 1 in, 2 out; fit 70, calibrate 40, test 20), and river's Shuttle when installed (fit
  5,000 normal rows, calibrate 1,000, test 1,000 vs 1,000 anomalies; 5 seeds).

Detectors: ``default`` (tail part + Mahalanobis, combined by null evidence), its parts
``tail part`` (the thresholded tail score) and ``mahalanobis``, the plain ``tail`` score,
``copula`` (Mahalanobis on per-feature normal scores) and ``mahalanobis+copula`` (the two
combined like the default; the last table compares each combination with its own parts);
peers on standardised features: LOF (novelty, 20 neighbours), MCD (scikit-learn MinCovDet
Mahalanobis), Ledoit-Wolf Mahalanobis (scikit-learn LedoitWolf), kNN (mean distance to 5
nearest fitting rows), IsolationForest, ECOD (a numpy ECOD scoring each row against the
fitting rows alone, as PyOD's ECOD does for one row appended to its training data; checked
against PyOD when installed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# BENCH_ROOT: another checkout whose guarded_serving to measure (e.g. the previous default, for a before/after)
sys.path.insert(0, os.environ.get("BENCH_ROOT") or str(Path(__file__).resolve().parent.parent))

from guarded_serving.edge_cases import (
    CombinedDetector,
    ConformalCalibrator,
    MahalanobisDetector,
    TailDetector,
)

try:
    from guarded_serving.edge_cases import CopulaDetector
except ImportError:  # a checkout before the copula part (BENCH_ROOT)
    CopulaDetector = None
from guarded_serving.edge_cases.combined import TAIL_THRESHOLD

# Shuttle without its anomaly column, read as bench_ood reads it
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ood import _shuttle

ALPHAS = (0.01, 0.05)
CORRUPTIONS = ("in_range_unusual", "unit_x1000", "unit_div1000", "sentinel_-999", "sentinel_0", "stuck_min",
               "swap", "sign_flip")


# -- data ----------------------------------------------------------------------------------------
def _split(X, rng, *sizes):
    idx = rng.permutation(len(X))
    out, a = [], 0
    for s in sizes:
        out.append(X[idx[a:a + s]])
        a += s
    return out


def corrupt(X, kind, rng, fit):
    X = X.copy()
    n, p = X.shape
    rows = np.arange(n)
    j = rng.integers(0, p, n)
    if kind == "in_range_unusual":
        return fit[rng.integers(0, len(fit), (n, p)), np.arange(p)[None, :]]
    if kind == "unit_x1000":
        X[rows, j] *= 1000.0
    elif kind == "unit_div1000":
        X[rows, j] /= 1000.0
    elif kind == "sentinel_-999":
        X[rows, j] = -999.0
    elif kind == "sentinel_0":
        X[rows, j] = 0.0
    elif kind == "stuck_min":
        X[rows, j] = fit.min(axis=0)[j]
    elif kind == "swap":
        k = (j + 1 + rng.integers(0, p - 1, n)) % p
        X[rows, j], X[rows, k] = X[rows, k], X[rows, j].copy()
    elif kind == "sign_flip":
        X[rows, j] = -X[rows, j]
    return X


def sets(seed, with_shuttle):
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine

    rng = np.random.default_rng(seed)
    bc = load_breast_cancer()
    fit, cal, test = _split(bc.data, rng, 250, 250, 69)
    for kind in CORRUPTIONS:
        yield f"bc {kind}", fit, cal, test, corrupt(test, kind, np.random.default_rng(seed * 100 + 7), fit)
    inn, out = bc.data[bc.target == 1], bc.data[bc.target == 0]
    fit, cal, test = _split(inn, rng, 157, 100, 100)
    yield "bc malignant", fit, cal, test, out
    d = load_digits()
    fit, cal, test = _split(d.data[d.target < 5], rng, 500, 200, 200)
    yield "digits 5-9", fit, cal, test, d.data[d.target >= 5][rng.permutation((d.target >= 5).sum())[:400]]
    w = load_wine()
    fit, cal, test = _split(w.data[w.target < 2], rng, 70, 40, 20)
    yield "wine class 2", fit, cal, test, w.data[w.target == 2]
    if with_shuttle:
        X, y = _shuttle()
        fit, cal, test = _split(X[y == 0], rng, 5000, 2000, 1000)
        anom = X[y == 1]
        yield "shuttle anomalies", fit, cal, test, anom[rng.permutation(len(anom))[:1000]]
        for kind in CORRUPTIONS:  # the same corruptions with 2,000 calibration rows
            yield f"shuttle {kind}", fit, cal, test, corrupt(test, kind, np.random.default_rng(seed * 100 + 8), fit)


# -- detectors ------------------------------------------------------------------------------------
class Ours:
    def __init__(self, kind):
        self.kind = kind

    def fit(self, X, cal):
        if self.kind == "mahalanobis+copula":
            self.d = CombinedDetector(parts=("mahalanobis", "copula")).fit(X, calibration=cal)
            self.c = ConformalCalibrator(self.d.calibration_scores_)
        elif self.kind == "default":
            try:
                self.d = CombinedDetector().fit(X, calibration=cal)
                self.c = ConformalCalibrator(self.d.calibration_scores_)
            except TypeError:  # a checkout before issue 16 (BENCH_ROOT): calibrate its scores
                self.d = CombinedDetector().fit(X)
                self.c = ConformalCalibrator(self.d.outlyingness(cal))
        else:
            self.d = (TailDetector(threshold=TAIL_THRESHOLD) if self.kind == "tail part" else
                      TailDetector() if self.kind == "tail" else CopulaDetector() if self.kind == "copula" else
                      MahalanobisDetector()).fit(X)
            self.c = ConformalCalibrator(self.d.outlyingness(cal))
        return self

    def score(self, X):
        return self.d.outlyingness(X)


class Peer:
    """A peer on standardised features, calibrated on the calibration rows' scores."""

    def __init__(self, kind, seed):
        self.kind, self.seed = kind, seed

    def fit(self, X, cal):
        self.mu, sd = X.mean(axis=0), X.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        Z = (X - self.mu) / self.sd
        k = self.kind
        if k == "LOF":
            from sklearn.neighbors import LocalOutlierFactor

            m = LocalOutlierFactor(n_neighbors=20, novelty=True).fit(Z)
            self.f = lambda A: -m.score_samples(A)
        elif k == "MCD":
            from sklearn.covariance import MinCovDet

            m = MinCovDet(random_state=self.seed).fit(Z)
            self.f = m.mahalanobis
        elif k == "LW-Mahalanobis":
            from sklearn.covariance import LedoitWolf

            m = LedoitWolf().fit(Z)
            self.f = m.mahalanobis
        elif k == "kNN":
            from sklearn.neighbors import NearestNeighbors

            m = NearestNeighbors(n_neighbors=5).fit(Z)
            self.f = lambda A: m.kneighbors(A)[0].mean(axis=1)
        elif k == "IsolationForest":
            from sklearn.ensemble import IsolationForest

            m = IsolationForest(random_state=self.seed).fit(Z)
            self.f = lambda A: -m.score_samples(A)
        elif k == "ECOD":
            self.f = NumpyECOD(Z).score
        self.c = ConformalCalibrator(self.score(cal))
        return self

    def score(self, X):
        return np.nan_to_num(self.f((X - self.mu) / self.sd), nan=1e300, posinf=1e300, neginf=-1e300)


class NumpyECOD:
    """ECOD (Li et al. 2022; PyOD's ``ECOD.decision_function``) of each row appended alone to the
    fitting rows: per feature the left and right empirical tail probabilities, the skewness-chosen
    tail, the largest ``-log`` of them, summed over features."""

    def __init__(self, Z):
        from scipy.stats import skew

        self.sorted = np.sort(Z, axis=0)
        self.n = len(Z)
        self.s = np.sign(skew(Z, axis=0))

    def score(self, A):
        n = self.n
        le = np.stack([np.searchsorted(self.sorted[:, j], A[:, j], side="right") for j in range(A.shape[1])], 1)
        ge = np.stack([n - np.searchsorted(self.sorted[:, j], A[:, j], side="left") for j in range(A.shape[1])], 1)
        ul = -np.log((le + 1.0) / (n + 1.0))
        ur = -np.log((ge + 1.0) / (n + 1.0))
        us = ul * -np.sign(self.s - 1) + ur * np.sign(self.s + 1)
        return np.maximum(np.maximum(ul, ur), us).sum(axis=1)


OURS = ("default", "tail part", "mahalanobis", "tail") + (("copula", "mahalanobis+copula") if CopulaDetector else ())
#: each combination of ours and its own parts (the last table)
COMBINATIONS = {"default": ("tail part", "mahalanobis"), "mahalanobis+copula": ("mahalanobis", "copula")}
PEERS = ("LOF", "MCD", "LW-Mahalanobis", "kNN", "IsolationForest", "ECOD")


def auroc(neg, pos):
    from sklearn.metrics import roc_auc_score

    s = np.nan_to_num(np.r_[neg, pos], posinf=np.finfo(float).max)
    return roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], s)


def check_ecod():
    """Largest relative difference between the numpy ECOD and PyOD's, one row at a time."""
    try:
        from pyod.models.ecod import ECOD
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    Z = rng.gamma(2.0, size=(300, 5))
    m = ECOD().fit(Z)
    mine = NumpyECOD(Z)
    A = rng.gamma(2.0, size=(20, 5))
    theirs = np.array([m.decision_function(A[i:i + 1])[0] for i in range(len(A))])
    return float(np.max(np.abs(mine.score(A) - theirs) / np.abs(theirs)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--shuttle-seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="3 seeds, 1 for Shuttle")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.shuttle_seeds = 3, 1
    warnings.filterwarnings("ignore")
    try:
        import river  # noqa: F401
        has_shuttle = True
    except ImportError:
        has_shuttle = False
    t0 = time.monotonic()
    diff = check_ecod()
    print(f"numpy ECOD vs PyOD ECOD, one row at a time: largest relative difference "
          f"{'n/a (PyOD not installed)' if diff is None else f'{diff:.2e}'}")
    res: dict = {}  # (set, detector) -> list of (tpr1, tpr5, auroc); clean counts pooled
    clean: dict = {}
    for seed in range(args.seeds):
        for name, fit, cal, test, bad in sets(seed, has_shuttle and seed < args.shuttle_seeds):
            for det in OURS + PEERS:
                m = (Ours(det) if det in OURS else Peer(det, seed)).fit(fit, cal)
                s_in, s_out = m.score(test), m.score(bad)
                p_in, p_out = m.c.p_values(s_in), m.c.p_values(s_out)
                res.setdefault((name, det), []).append(
                    [float((p_out <= a).mean()) for a in ALPHAS] + [auroc(s_in, s_out)])
                c = clean.setdefault((name, det), np.zeros(3))
                c += [(p_in <= ALPHAS[0]).sum(), (p_in <= ALPHAS[1]).sum(), len(p_in)]
        print(f"seed {seed} done ({time.monotonic() - t0:.0f} s)", flush=True)
    report(res, clean)
    print(f"\ntotal run time {time.monotonic() - t0:.0f} s")


def _band(a, n):
    return a + 1.96 * np.sqrt(a * (1 - a) / n)


def report(res, clean):
    names = list(dict.fromkeys(k[0] for k in res))
    print("\n| set | detector | TPR@1% | TPR@5% | AUROC | clean@1% (band) | clean@5% (band) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for ds in names:
        for det in OURS + PEERS:
            r = np.array(res[(ds, det)])
            m, s = r.mean(axis=0), r.std(axis=0)
            c1, c5, n = clean[(ds, det)]
            bold = "**" if det == "default" else ""
            print(f"| {ds} | {bold}{det}{bold} | {m[0]:.1%} ± {s[0]:.1%} | {m[1]:.1%} ± {s[1]:.1%} | "
                  f"{m[2]:.3f} ± {s[2]:.3f} | {c1 / n:.2%} (≤{_band(0.01, n):.2%}) | "
                  f"{c5 / n:.2%} (≤{_band(0.05, n):.2%}) |")
    print("\ntargets per set: default TPR within 0.02 of its best part (at 1% and 5%), AUROC within 0.01 of "
          "the best peer, clean flag rate within its band")
    print("| set | TPR@1% default / best part | TPR@5% default / best part | AUROC default / best peer | "
          "clean in band |")
    print("|---|---|---|---|---|")
    met = {"tpr1": 0, "tpr5": 0, "auroc": 0, "clean": 0}
    for ds in names:
        mean = {det: np.mean(res[(ds, det)], axis=0) for det in OURS + PEERS}
        parts = ("tail part", "mahalanobis")
        bp1 = max(parts, key=lambda d: mean[d][0])
        bp5 = max(parts, key=lambda d: mean[d][1])
        peer = max(PEERS, key=lambda d: mean[d][2])
        d = mean["default"]
        c1, c5, n = clean[(ds, "default")]
        ok = [d[0] >= mean[bp1][0] - 0.02, d[1] >= mean[bp5][1] - 0.02, d[2] >= mean[peer][2] - 0.01,
              c1 / n <= _band(0.01, n) and c5 / n <= _band(0.05, n)]
        for k, v in zip(met, ok):
            met[k] += v
        mark = lambda b: "met" if b else "**missed**"
        print(f"| {ds} | {d[0]:.1%} / {mean[bp1][0]:.1%} ({bp1}) {mark(ok[0])} | {d[1]:.1%} / {mean[bp5][1]:.1%} "
              f"({bp5}) {mark(ok[1])} | {d[2]:.3f} / {mean[peer][2]:.3f} ({peer}) {mark(ok[2])} | {mark(ok[3])} |")
    print(f"\nmet on {met['tpr1']}/{len(names)} (TPR@1%), {met['tpr5']}/{len(names)} (TPR@5%), "
          f"{met['auroc']}/{len(names)} (AUROC), {met['clean']}/{len(names)} (clean rate) sets")
    print("\neach combination against its own parts and against the default's parts (sets with TPR within 0.02 "
          "of the best part; largest gap, points)")
    print("| combination | own parts @1% | @5% | largest gap @1% / @5% | default's parts @1% | @5% | "
          "largest gap @1% / @5% |")
    print("|---|---:|---:|---|---:|---:|---|")
    for combo, parts in COMBINATIONS.items():
        if (names[0], combo) not in res:
            continue
        row = []
        for against in (parts, COMBINATIONS["default"]):
            met_, worst = [0, 0], [0.0, 0.0]
            for ds in names:
                mean = {det: np.mean(res[(ds, det)], axis=0) for det in (combo, *against)}
                for a in range(2):
                    gap = max(mean[d][a] for d in against) - mean[combo][a]
                    met_[a] += gap <= 0.02
                    worst[a] = max(worst[a], gap)
            row += [f"{met_[0]}/{len(names)}", f"{met_[1]}/{len(names)}",
                    f"{100 * worst[0]:.1f} / {100 * worst[1]:.1f}"]
        print(f"| {combo} ({' + '.join(parts)}) | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
