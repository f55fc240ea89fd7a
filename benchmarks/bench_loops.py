"""Feedback-loop simulations: delay from onset to alarm, and alarms on the controls.

    PYTHONPATH=. python benchmarks/bench_loops.py [--seeds 20] [--epochs 120] [--onset 40] [--out build/loops]

Two simulated loops (guarded_serving.feedback_loops.simulations), each beside its control:

- recommender: retrains on its own clicks (play counts) from ``onset`` vs. retrained on its
  random exploration slice only (10% of users get random lists);
- allocation (Ensign et al., 2018): patrols sent where most incidents were observed from
  ``onset`` vs. observed incidents re-weighted by the inverse of the allocation.

One window of the loop check per epoch; the alarm (ConcentrationAlarm at alpha 0.01, four
measures: Gini, top share, entropy, coverage) is fed from epoch 5. Prints, per system, the delay
from onset to alarm over the seeds (median, min, max), loops missed, and false alarms (any alarm
on a control, or on a loop before its onset; target 0). Also the recommender's holdout
comparison over its last 60 epochs (favourites chosen per epoch, judged on that epoch's random
slice): the lift (exploration click-through of the model's favourites / of the rest) per seed
with its 95% interval, pooled over the seeds, the favourites' click-through on model traffic /
on the holdout, and the loop.holdout verdict at lift 2; and the alarm's false-alarm rate on synthetic exchangeable and autocorrelated window series, and the
request-path cost of the loop component (after_call). Writes PNG
plots of the measures over time (one line per seed) to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from guarded_serving.feedback_loops import simulations as S
from guarded_serving.feedback_loops.alarm import TrendAlarm
from guarded_serving.feedback_loops.holdout import lift_interval


def _run(simulate, seeds: int, **kw):
    out = {}
    for loop in (True, False):
        runs = [simulate(loop=loop, seed=s, **kw) for s in range(seeds)]
        out["loop" if loop else "control"] = (runs, [S.score(r) for r in runs])
    return out


def _row(name: str, system: str, scores: list[dict]) -> str:
    delays = [s["delay"] for s in scores if s["delay"] is not None]
    d = f"{statistics.median(delays):.0f} ({min(delays)}-{max(delays)})" if delays else "-"
    missed = sum(s["missed"] for s in scores)
    fa = sum(s["false_alarm"] for s in scores)
    measures = sorted({s["measure"] for s in scores if s["measure"]})
    return f"| {name} | {system} | {len(scores)} | {d} | {missed} | {fa} | {', '.join(measures) or '-'} |"


def _plot(name: str, res: dict, out: Path, onset: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = ["gini", "top_share", "entropy", "coverage"]
    fig, axes = plt.subplots(1, len(measures), figsize=(4 * len(measures), 3.2), sharex=True)
    for ax, m in zip(axes, measures):
        for system, colour in (("loop", "tab:red"), ("control", "tab:blue")):
            runs, scores = res[system]
            for i, (r, sc) in enumerate(zip(runs, scores)):
                ax.plot(r.measures[m], color=colour, alpha=0.35, lw=1, label=system if i == 0 else None)
                if sc["alarm_at"] is not None:
                    ax.plot(sc["alarm_at"], r.measures[m][sc["alarm_at"]], "k.", ms=4)
        ax.axvline(onset, color="grey", ls="--", lw=1)
        ax.set_title(m)
        ax.set_xlabel("epoch (window)")
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{name}: loop (red) vs control (blue); dashed: onset, dots: alarms", fontsize=10)
    fig.tight_layout()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _null_rates(reps: int = 200, n: int = 500) -> list[str]:
    rng = np.random.default_rng(0)
    lines = []
    for label, rho, block in (("iid windows", 0.0, 1), ("AR(1) r=0.7 windows", 0.7, 1),
                              ("AR(1) r=0.7, block=10", 0.7, 10)):
        fired = 0
        for s in range(reps):
            a = TrendAlarm(alpha=0.05, seed=s, block=block)
            v = 0.0
            for _ in range(n):
                v = rho * v + rng.normal()
                a.update(v)
            fired += a.alarm
        lines.append(f"| {label} | {n} | {fired}/{reps} ({fired / reps:.1%}) |")
    return lines


def _request_path_cost(reps: int = 20, calls: int = 20_000) -> str:
    """Microseconds per ``after_call`` of the loop component (the only request-path work)."""
    from guarded_serving.call import Call
    from guarded_serving.feedback_loops.component import LoopComponent

    comp = LoopComponent(buffer_calls=10 ** 7)
    comp.bind(None)
    per_call = []
    for _ in range(reps):
        batch = []
        for _ in range(calls):
            call = Call((), {"user_ids": [1]}, None, None, None)
            call.result = {"items": [[1, 2, 3]]}
            batch.append(call)
        t = time.perf_counter_ns()
        for call in batch:
            comp.after_call(call)
        per_call.append((time.perf_counter_ns() - t) / calls / 1000)
    q = np.percentile(per_call, [25, 75])
    return (f"loop after_call: median {statistics.median(per_call):.2f} us per call (IQR {q[0]:.2f}-{q[1]:.2f}, "
            f"{reps} reps x {calls} calls)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=120)
    ap.add_argument("--onset", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("build/loops"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print("| simulation | system | seeds | delay to alarm, epochs: median (min-max) | missed | false alarms | "
          "measure that alarmed |")
    print("|---|---|---:|---:|---:|---:|---|")
    plots = []
    holdouts = {}
    for name, fn in (("recommender", S.recommender), ("allocation", S.allocation)):
        res = _run(fn, args.seeds, epochs=args.epochs, onset=args.onset)
        for system in ("loop", "control"):
            print(_row(name, system, res[system][1]), flush=True)
        plots.append(_plot(name, res, args.out, args.onset))
        if name == "recommender":
            holdouts = {system: res[system][0] for system in ("loop", "control")}
    print("\nrecommender holdout, last 60 epochs (favourites: top 5% of each epoch's model exposure, judged on "
          "that epoch's random slice):")
    print("| system | seeds | lift per seed: median (min-max) | seeds whose 95% CI lies above 1 | lift pooled over "
          "seeds (95% CI) | favourites' share of model exposure | model-traffic / holdout CTR of favourites: "
          "median (min-max) | loop.holdout verdicts (lift 2) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    keys = ("holdout_clicks_favourites", "holdout_shows_favourites", "holdout_clicks_rest", "holdout_shows_rest")
    for system, runs in holdouts.items():
        judged = [S.holdout(r) for r in runs]
        lifts = [c.ratio for c in judged]
        pooled = lift_interval(*(sum(r.extra[k] for r in runs) for k in keys))
        infl = [c.model_to_holdout for c in judged if c.model_to_holdout is not None]
        shares = [c.favourites_exposure_share for c in judged]
        verdicts = {v: sum(c.verdict == v for c in judged) for v in ("exposure only", "earned", "undecided",
                                                                     "too few holdout clicks")}
        print(f"| {system} | {len(runs)} | {statistics.median(lifts):.2f} ({min(lifts):.2f}-{max(lifts):.2f}) | "
              f"{sum(c.ratio_low > 1 for c in judged)} | {pooled[0]:.2f} ({pooled[1]:.2f}-{pooled[2]:.2f}) | "
              f"{statistics.median(shares):.2f} | "
              + (f"{statistics.median(infl):.2f} ({min(infl):.2f}-{max(infl):.2f})" if infl else "-")
              + " | " + ", ".join(f"{v} {n}" for v, n in verdicts.items() if n) + " |")
    print("\nalarm on synthetic window series (alpha 0.05 per stream, 200 streams):")
    print("| windows | per stream | streams alarmed |")
    print("|---|---:|---:|")
    for line in _null_rates():
        print(line)
    print("\n" + _request_path_cost())
    print(f"\nplots: {', '.join(str(p) for p in plots)}  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
