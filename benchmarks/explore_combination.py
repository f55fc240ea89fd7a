"""Compare ways of combining the default detector's parts at the configured FPR (issue 16 follow-up).

    PYTHONPATH=. nice -n 15 python benchmarks/explore_combination.py [--seeds 10] [--shuttle-seeds 5]

Same sets, splits and seeds as ``bench_ood_fpr.py``; only the default's parts (tail part,
Mahalanobis) and combinations of them, each calibrated conformally on the calibration rows (190 s
for 10 seeds here). Prints TPR at 1% and 5% per set and rule, then per rule on how many sets its
TPR is within 0.02 of the best part's, the largest gap, and whether the clean flag rate stays in
its band. ``default (library)`` is ``CombinedDetector`` as it is in the checkout (run on the
commit before the null-evidence rule, it reproduced the rank rule's figures exactly). Rules:

- ``minp oof*``: min-p over tail probabilities from out-of-fold scores of the fitting rows, an
  exponential fitted from the top 10% (``q.05``: 5%; ``ebeta``: fixed scales 1 and 2; ``w.7``:
  the tail part given 70% of the budget); ``cauchy``/``fisher``: other combinations of them;
- ``emp *``: the empirical survival of the null, log-linearly interpolated, exponential only past
  the largest (``k3``/``k10``: exceedances behind it; ``nat``: fixed scales; ``oof10``/``oof20``:
  folds; ``in-sample``: the parts' scores of their own fitting rows; ``cal-loo``: the other
  calibration rows as null, leave-one-out calibration; ``hmp``: harmonic-mean combination;
  ``w.6``: weighted budget) -- ``emp oof k10`` is the adopted rule;
- ``max std (old)``: an approximation of the score-max rule (largest part score standardised on
  the fitting rows; the real one is measured by ``bench_ood_fpr.py`` with ``BENCH_ROOT``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_ood_fpr import ALPHAS, _band, sets

from guarded_serving.edge_cases import CombinedDetector, ConformalCalibrator
from guarded_serving.edge_cases.combined import TAIL_THRESHOLD
from guarded_serving.edge_cases.mahalanobis import MahalanobisDetector
from guarded_serving.edge_cases.tail import TailDetector


def make_parts(X):
    return [TailDetector(threshold=TAIL_THRESHOLD).fit(X), MahalanobisDetector().fit(X)]


def scores(parts, X):
    return np.column_stack([d.outlyingness(X) for d in parts])


def oof_scores(X, folds=5, seed=0):
    idx = np.random.default_rng(seed).permutation(len(X))
    out = np.empty((len(X), 2))
    for f in range(folds):
        te = idx[f::folds]
        tr = np.setdiff1d(idx, te)
        out[te] = scores(make_parts(X[tr]), X[te])
    return out


class TailModel:
    """-log of a part's tail probability under a null sample: empirical survival, exponential beyond
    the top ``q`` of the null scores (at least ``kmin`` exceedances)."""

    def __init__(self, null, q=0.1, kmin=10, beta=None):
        self.null = np.sort(null)
        m = len(null)
        pos = self.null[self.null > 0]
        k = int(min(max(kmin, q * m), max(len(pos) - 1, 1)))
        k = max(min(k, m - 1), 1)
        self.u = self.null[m - k - 1]
        ex = self.null[m - k:] - self.u
        self.beta = beta if beta is not None else max(float(ex.mean()), 1e-12)
        self.k, self.m = k, m
        self.logpu = np.log((k + 1.0) / (m + 1.0))

    def __call__(self, s):
        ge = self.m - np.searchsorted(self.null, s, side="left")
        lp = np.log((ge + 1.0) / (self.m + 1.0))
        above = s > self.u
        lp = np.where(above, self.logpu - (s - self.u) / self.beta, lp)
        return -lp  # nats of evidence


class EmpModel:
    """-log of a part's tail probability under a null sample: the empirical survival
    ``#{null >= s} / (m + 1)``, log-linearly interpolated between the distinct null scores, and
    beyond the largest an exponential tail with the mean excess of the top ``k`` (or ``beta``)."""

    def __init__(self, null, k=10, beta=None):
        v, cnt = np.unique(null, return_counts=True)
        m = len(null)
        ge = np.cumsum(cnt[::-1])[::-1]
        self.v, self.lp = v, np.log(ge / (m + 1.0))
        srt = np.sort(null)
        k = max(min(k, m - 1), 1)
        self.beta = beta if beta is not None else max(float((srt[m - k:] - srt[m - k - 1]).mean()), 1e-12)
        self.top, self.lptop = v[-1], self.lp[-1]

    def __call__(self, s):
        lp = np.interp(s, self.v, self.lp, left=0.0)
        lp = np.where(s > self.top, self.lptop - (s - self.top) / self.beta, lp)
        return -lp


RULES = ("tail part", "mahalanobis", "default (library)", "minp oof", "minp oof ebeta", "cauchy oof",
         "fisher oof", "minp cal-loo", "minp oof w.7", "minp in-sample", "minp oof q.05", "max std (old)",
         "emp oof k10", "emp oof k3", "emp oof nat", "emp in-sample", "emp cal-loo", "emp oof k10 w.7", "emp oof10", "emp oof20", "emp hmp", "emp fisher", "emp w.6")


def evaluate(fit, cal, test, bad, seed):
    parts = make_parts(fit)
    Sc, St, Sb = scores(parts, cal), scores(parts, test), scores(parts, bad)
    out = {}

    def conformal(name, tc, tt, tb):
        c = ConformalCalibrator(tc)
        out[name] = (c.p_values(tt), c.p_values(tb), tt, tb)

    conformal("tail part", Sc[:, 0], St[:, 0], Sb[:, 0])
    conformal("mahalanobis", Sc[:, 1], St[:, 1], Sb[:, 1])
    d = CombinedDetector().fit(fit, calibration=cal)
    conformal("default (library)", d.calibration_scores_, d.outlyingness(test), d.outlyingness(bad))
    oof = oof_scores(fit, seed=seed)
    for name, kw, null in (("minp oof", {}, oof), ("minp oof ebeta", {"beta": "nat"}, oof),
                           ("minp oof q.05", {"q": 0.05}, oof), ("minp in-sample", {}, scores(parts, fit))):
        ms = []
        for k in range(2):
            kk = dict(kw)
            if kk.get("beta") == "nat":
                kk["beta"] = 1.0 if k == 0 else 2.0
            ms.append(TailModel(null[:, k], **kk))
        E = [np.column_stack([ms[k](S[:, k]) for k in range(2)]) for S in (Sc, St, Sb)]
        conformal(name, *(e.max(axis=1) for e in E))
        if name == "minp oof":
            conformal("minp oof w.7", *(np.maximum(e[:, 0] + np.log(.7), e[:, 1] + np.log(.3)) for e in E))
            conformal("fisher oof", *(e.sum(axis=1) for e in E))

            def cauchy(e):
                p = np.clip(np.exp(-e), 1e-300, 1 - 1e-12)
                # tan((0.5 - p) pi) ~ 1 / (p pi) for small p
                t = np.where(p < 1e-8, 1.0 / (p * np.pi), np.tan((0.5 - p) * np.pi))
                return np.arcsinh(t.mean(axis=1))

            conformal("cauchy oof", *(cauchy(e) for e in E))
    for name, null, kw in (("emp oof k10", oof, {}), ("emp oof k3", oof, {"k": 3}), ("emp oof nat", oof, "nat"),
                           ("emp in-sample", scores(parts, fit), {})):
        ms = [EmpModel(null[:, k], **(kw if kw != "nat" else {"beta": (1.0, 2.0)[k]})) for k in range(2)]
        E = [np.column_stack([ms[k](S[:, k]) for k in range(2)]) for S in (Sc, St, Sb)]
        conformal(name, *(e.max(axis=1) for e in E))
        if name == "emp oof k10":
            conformal("emp oof k10 w.7", *(np.maximum(e[:, 0] + np.log(.7), e[:, 1] + np.log(.3)) for e in E))
            conformal("emp w.6", *(np.maximum(e[:, 0] + np.log(.6), e[:, 1] + np.log(.4)) for e in E))
            conformal("emp hmp", *(np.logaddexp(e[:, 0], e[:, 1]) for e in E))
            conformal("emp fisher", *(e.sum(axis=1) for e in E))
    for name, folds in (("emp oof10", 10), ("emp oof20", 20)):
        null = oof_scores(fit, folds=folds, seed=seed)
        ms = [EmpModel(null[:, k]) for k in range(2)]
        conformal(name, *(np.column_stack([ms[k](S[:, k]) for k in range(2)]).max(axis=1) for S in (Sc, St, Sb)))
    Ec = np.empty_like(Sc)
    for i in range(len(Sc)):
        others = np.delete(Sc, i, axis=0)
        Ec[i] = [EmpModel(others[:, k])(Sc[i:i + 1, k])[0] for k in range(2)]
    ms = [EmpModel(Sc[:, k]) for k in range(2)]
    conformal("emp cal-loo", Ec.max(axis=1), *(np.column_stack([ms[k](S[:, k]) for k in range(2)]).max(axis=1)
                                              for S in (St, Sb)))
    # min-p with each part's null = the other calibration rows (leave one out), continuous tail
    n = len(Sc)
    Ec = np.empty_like(Sc)
    for i in range(n):
        others = np.delete(Sc, i, axis=0)
        Ec[i] = [TailModel(others[:, k])(Sc[i:i + 1, k])[0] for k in range(2)]
    ms = [TailModel(Sc[:, k]) for k in range(2)]
    conformal("minp cal-loo", Ec.max(axis=1), *(np.column_stack([ms[k](S[:, k]) for k in range(2)]).max(axis=1)
                                               for S in (St, Sb)))
    # the old rule: largest part score standardised by its spread on the fitting rows
    F = scores(parts, fit)
    mu, sd = F.mean(axis=0), F.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    conformal("max std (old)", *(((S - mu) / sd).max(axis=1) for S in (Sc, St, Sb)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--shuttle-seeds", type=int, default=1)
    ap.add_argument("--no-shuttle", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    t0 = time.monotonic()
    res, clean = {}, {}
    for seed in range(args.seeds):
        for name, fit, cal, test, bad in sets(seed, not args.no_shuttle and seed < args.shuttle_seeds):
            for rule, (p_in, p_out, s_in, s_out) in evaluate(fit, cal, test, bad, seed).items():
                res.setdefault((name, rule), []).append([float((p_out <= a).mean()) for a in ALPHAS])
                c = clean.setdefault((name, rule), np.zeros(3))
                c += [(p_in <= ALPHAS[0]).sum(), (p_in <= ALPHAS[1]).sum(), len(p_in)]
        print(f"seed {seed} done ({time.monotonic() - t0:.0f} s)", flush=True)
    names = list(dict.fromkeys(k[0] for k in res))
    mean = {k: np.mean(v, axis=0) for k, v in res.items()}
    print("\n| set | " + " | ".join(RULES) + " |")
    for a in range(2):
        print(f"TPR@{ALPHAS[a]:.0%}")
        for ds in names:
            print(f"| {ds} | " + " | ".join(f"{mean[(ds, r)][a]:.1%}" for r in RULES) + " |")
    print("\n| rule | met@1% | met@5% | clean in band | worst gap@1% | worst gap@5% |")
    for r in RULES:
        met, gaps, inband = [0, 0], [0.0, 0.0], 0
        for ds in names:
            for a in range(2):
                best = max(mean[(ds, "tail part")][a], mean[(ds, "mahalanobis")][a])
                g = best - mean[(ds, r)][a]
                met[a] += g <= 0.02
                gaps[a] = max(gaps[a], g)
            c1, c5, n = clean[(ds, r)]
            inband += c1 / n <= _band(0.01, n) and c5 / n <= _band(0.05, n)
        print(f"| {r} | {met[0]}/{len(names)} | {met[1]}/{len(names)} | {inband}/{len(names)} | "
              f"{gaps[0]:.1%} | {gaps[1]:.1%} |")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
