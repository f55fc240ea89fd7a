"""Adapting the default's budget split to the traffic (issue 16 follow-up; prototyped, not adopted).

    PYTHONPATH=. nice -n 15 python benchmarks/explore_adaptive.py [--seeds 10] [--window 30] [--margin 2]
        [--delta 0.3] [--focus 4.6] [--calibrated]

A weighted min-p ``max_k (e_k + o_k)`` keeps ``P(p <= a) <= a`` for any offsets ``o`` that do not
depend on the calibration rows or the row itself, so they may be chosen from earlier rows. Three
candidates: the default (``o = 0``) and "focus on part k" (the other part's evidence lowered by
``--focus`` nats, about 99:1). Before each row the candidate that flagged the most of the last
``--window`` rows wins if it beats the default by ``--margin`` rows; a past row counts as flagged
by a candidate when its combined evidence passes the candidate's null threshold
``log(sum_k exp(o_k) / a)`` plus ``--delta`` nats (the nulls are learned out of fold on the
fitting rows, never on the calibration rows: exact). ``--calibrated`` counts against each
candidate's conformal threshold on the calibration rows instead (better choices, no longer exact).

Each set is streamed as its clean test rows, then its edge-case rows; TPR is over the edge-case
rows, the clean flag rate over the clean rows (pooled over seeds, with the binomial band). Same
sets and seeds as ``bench_ood_fpr.py``; prints per set the best part, the default and the
adaptive rule, then how many sets each is within 0.02 of the best part.
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


def stream_p(E, cals, alpha, offsets, args):
    """Conformal p-values of evidence rows ``E`` (in stream order) under the adaptive choice."""
    n = len(cals[0])
    if args.calibrated:
        m = int(np.floor(alpha * (n + 1)))
        tau = np.array([np.sort(c)[::-1][m - 1] if m >= 1 else np.inf for c in cals])
    else:
        tau = np.log(np.exp(offsets).sum(axis=1) / alpha) + args.delta
    past: list[np.ndarray] = []
    ps = np.empty(len(E))
    for i, e in enumerate(E):
        cur = 0
        if past:
            F = np.array(past[-args.window:]).sum(axis=0)
            best = int(np.argmax(F))
            cur = best if F[best] - F[0] >= args.margin else 0
        s = (e + offsets[cur]).max()
        ps[i] = (1 + (cals[cur] >= s).sum()) / (n + 1)
        past.append((e[None, :] + offsets).max(axis=1) > tau)
    return ps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--shuttle-seeds", type=int, default=5)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--margin", type=float, default=2)
    ap.add_argument("--delta", type=float, default=0.3)
    ap.add_argument("--focus", type=float, default=4.6)
    ap.add_argument("--calibrated", action="store_true")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    offsets = np.array([[0.0, 0.0], [0.0, -args.focus], [-args.focus, 0.0]])
    rules = ("tail part", "mahalanobis", "default", "adaptive")
    res: dict = {}
    clean: dict = {}
    t0 = time.monotonic()
    for seed in range(args.seeds):
        for name, fit, cal, test, bad in sets(seed, seed < args.shuttle_seeds):
            d = CombinedDetector().fit(fit, calibration=cal)
            Ec, Et, Eb = (d.evidence(d.part_scores(X)) for X in (cal, test, bad))
            cals = [(Ec + o).max(axis=1) for o in offsets]
            for rule in rules:
                tpr, flags = [], []
                for a in ALPHAS:
                    if rule == "adaptive":
                        p = stream_p(np.vstack([Et, Eb]), cals, a, offsets, args)
                        p_in, p_out = p[:len(Et)], p[len(Et):]
                    else:
                        k = {"tail part": 0, "mahalanobis": 1}.get(rule)
                        cs, st, sb = ((Ec.max(1), Et.max(1), Eb.max(1)) if k is None else
                                      (Ec[:, k], Et[:, k], Eb[:, k]))
                        c = ConformalCalibrator(cs)
                        p_in, p_out = c.p_values(st), c.p_values(sb)
                    tpr.append(float((p_out <= a).mean()))
                    flags.append(int((p_in <= a).sum()))
                res.setdefault((name, rule), []).append(tpr)
                clean.setdefault((name, rule), np.zeros(3))[:] += [flags[0], flags[1], len(Et)]
        print(f"seed {seed} done ({time.monotonic() - t0:.0f} s)", flush=True)
    names = list(dict.fromkeys(k[0] for k in res))
    met = {r: [0, 0, 0] for r in ("default", "adaptive")}
    worst = {r: [0.0, 0.0] for r in met}
    print(f"\n{'set':<26} | best part @1% / @5% | default | adaptive | adaptive clean @1% / @5%")
    for ds in names:
        m = {r: np.mean(res[(ds, r)], axis=0) for r in rules}
        best = np.maximum(m["tail part"], m["mahalanobis"])
        for r, counts in met.items():
            for a in range(2):
                gap = best[a] - m[r][a]
                counts[a] += gap <= 0.02
                worst[r][a] = max(worst[r][a], gap)
            c1, c5, n = clean[(ds, r)]
            counts[2] += c1 / n <= _band(0.01, n) and c5 / n <= _band(0.05, n)
        c1, c5, n = clean[(ds, "adaptive")]
        print(f"{ds:<26} | {best[0]:.1%} / {best[1]:.1%} | {m['default'][0]:.1%} / {m['default'][1]:.1%} | "
              f"{m['adaptive'][0]:.1%} / {m['adaptive'][1]:.1%} | {c1 / n:.2%} / {c5 / n:.2%}")
    for r in met:
        print(f"{r}: within 0.02 of the best part on {met[r][0]}/{len(names)} sets at 1%, {met[r][1]}/{len(names)} "
              f"at 5%; largest gap {100 * worst[r][0]:.1f} / {100 * worst[r][1]:.1f} points; clean rate in its band "
              f"on {met[r][2]}/{len(names)}")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
