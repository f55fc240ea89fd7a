"""Drift detectors: false alarms, detection delay, and the cost of one cycle.

    PYTHONPATH=. nice -n 10 python benchmarks/bench_drift.py [--quick]

Detectors, fed the same generated streams:

- ``window``: our window test (KS / chi-squared + BH at 0.01, min effect 0.15, min
  samples 200; with two numeric features or more also the joint MMD test at 0.01,
  gated by a correlation change >= 0.15), the latest 2,000 rows against the
  reference, every 200 rows;
- ``sequential``: our conformal test martingale on online ranks
  (:class:`~guarded_serving.drift.sequential.OnlineConformalMartingale`, alpha 0.01),
  fed the raw rows; in the delay table also at alpha 0.05 (a false-alarm level nearer
  what ADWIN's fixed delta gives over these streams, to compare like with like);
- ``fixed-ref martingale`` (false alarms only): the previous alarm, still the fallback
  without a reference: :class:`~guarded_serving.drift.sequential.ConformalMartingale`
  on p-values of each row against the fixed reference (two one-sided columns, x and -x);
- river's ``ADWIN``, ``PageHinkley`` and ``KSWIN`` with default settings, fed feature 0
  (river's detectors are univariate; "n/a" on the two-feature correlation streams).

False alarms: 100 clean runs per reference size (500, 2,000, 5,000 rows; river's
detectors use no reference, so they run once), each a stream of 20,000 rows with its
own reference (the 10-feature streams: 5,000 rows). A run counts once if the detector
alarms anywhere in it (river's detectors and the sequential alarm are stopped at their
first alarm). KSWIN runs the first 20 runs only (about 0.25-1 ms per row in river).

Long clean streams (``--scenarios long`` alone): P(any false alarm) within 20,000 /
200,000 / 1,000,000 rows, ours (reference 2,000, alpha 0.01) and ADWIN (delta 0.002),
100 runs of 10^6 N(0,1) rows each (~6 min for ours on the 2-core box).

Delay: 20 runs per scenario, change at row 5,000 (``--change-at`` moves it), 10,000 rows after it, reference of
2,000 rows drawn from the pre-change distribution. Detected = first alarm at or after
the change; the delay is rows from the change to it. A run whose latched sequential
alarm fired before the change counts as a false alarm, not a detection. KSWIN keeps
only its last 100 rows, so it is fed only the last 1,000 rows before the change
(to bound its run time: ~0.25 ms per row in river).

Matched level (``--only matched``, not part of the default run): river's ADWIN (delta) and
PageHinkley (threshold) calibrated to the sequential alarm's level. For each horizon (200,000 and
1,000,000 rows for ADWIN, 200,000 for PageHinkley) the loosest setting on a grid whose false alarms
within the horizon are <= 1% of ``--cal-runs`` (500) clean N(0,1) runs, seeds 70,000 on; then a
check on 100 separate clean runs (seeds 50,000 on, the long-stream table's) within 20,000 / 200,000
/ 1,000,000 rows, and the delay table (mean, variance, linear drift, category scenarios, 20 runs)
with ours (alpha 0.01), ADWIN at its default delta and the calibrated detectors. A horizon-matched
detector is still a weaker promise than ours: its false alarms keep growing past the horizon,
ours are bounded by alpha over an unbounded stream. ``--no-check`` skips the check (for a second
``--change-at``), ``--no-ph`` leaves PageHinkley out.

Costs: one window test (100 features x 10,000 rows), one joint test (2,000 window
rows vs 2,000 reference rows, a clean window and a shifted one; and the served
example's 30 features x 500 rows), the sequential alarm per 1,000 rows. Figures depend
on the machine and its load.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np

from guarded_serving.drift.joint import JointShiftTest
from guarded_serving.drift.sequential import (
    ConformalMartingale,
    OnlineConformalMartingale,
    conformal_p_values,
)
from guarded_serving.drift.windows import WindowTest

PRE = 5000
POST = 10_000
WINDOW = 2000
STEP = 200
CAT_P = np.array([0.5, 0.3, 0.2])
CAT_SHIFTED = np.array([0.375, 0.225, 0.4])  # the 0.2 category doubles; the others shrink in proportion
D_MULTI = 10
OURS_ONLY: list[str] | None = None  # --detectors


# -- streams: (reference, stream, categorical indices) ---------------------------------------
def _corr2(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    z = rng.normal(size=(n, 2))
    return np.column_stack([z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho * rho) * z[:, 1]])


def _multi_cov() -> np.ndarray:
    """A fixed 10 x 10 correlation matrix (a few correlated pairs)."""
    C = np.eye(D_MULTI)
    for i, j, r in ((0, 1, 0.6), (2, 3, -0.4), (4, 5, 0.8), (6, 7, 0.3)):
        C[i, j] = C[j, i] = r
    return C


SCENARIOS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "mean +0.25 sd": lambda x, r: x + 0.25,
    "mean +0.5 sd": lambda x, r: x + 0.5,
    "mean -0.5 sd": lambda x, r: x - 0.5,
    "sd x1.5 (variance x2.25)": lambda x, r: x * 1.5,
    "variance x1.5 (sd x1.22)": lambda x, r: x * np.sqrt(1.5),
    "linear drift (mean +1 sd per 10,000 rows)": lambda x, r: x + (np.arange(len(x)) / 10_000.0)[:, None],
    "mean +1 sd": lambda x, r: x + 1.0,
    "mean +2 sd": lambda x, r: x + 2.0,
    "sd x3": lambda x, r: x * 3.0,
}


def make_run(kind: str, rng: np.random.Generator, n_ref: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Reference and stream (PRE clean rows, then POST changed rows) for one delay run."""
    if kind.startswith("category"):
        ref = rng.choice(3, n_ref, p=CAT_P).astype(float)[:, None]
        x = np.concatenate([rng.choice(3, PRE, p=CAT_P), rng.choice(3, POST, p=CAT_SHIFTED)]).astype(float)[:, None]
        return ref, x, [0]
    if kind.startswith("correlation"):
        r0, r1 = (0.8, 0.0) if "0.8 -> 0 " in kind + " " else (0.0, 0.8)
        return _corr2(rng, n_ref, r0), np.concatenate([_corr2(rng, PRE, r0), _corr2(rng, POST, r1)]), []
    if kind.startswith(f"{D_MULTI} correlated features"):
        C = np.linalg.cholesky(_multi_cov())
        ref = rng.normal(size=(n_ref, D_MULTI)) @ C.T
        x = rng.normal(size=(PRE + POST, D_MULTI)) @ C.T
        x[PRE:] += 0.25
        return ref, x, []
    ref = rng.normal(size=(n_ref, 1))
    x = rng.normal(size=(PRE + POST, 1))
    x[PRE:] = SCENARIOS[kind](x[PRE:], rng)
    return ref, x, []


# -- detectors: each returns the 0-based row of its first alarm at or after ``start`` (None: none) ---
def window_alarms(x: np.ndarray, ref: np.ndarray, cat: list[int], step: int = STEP,
                  stop_after: int | None = None) -> list[int]:
    """Rows (0-based, last row of the window) at which the window test alarmed; stop at the first >= stop_after."""
    t = WindowTest(alpha=0.01, min_effect=0.15, min_samples=200, categorical=cat, max_reference=len(ref),
                   joint=True).fit(ref)
    out = []
    for end in range(step, len(x) + 1, step):
        if t.test(x[max(0, end - WINDOW):end]).drifted:
            out.append(end - 1)
            if stop_after is not None and end - 1 >= stop_after:
                break
    return out


def sequential_alarm(x: np.ndarray, ref: np.ndarray, cat: list[int], batch: int = 1000,
                     alpha: float = 0.01) -> int | None:
    m = OnlineConformalMartingale(alpha=alpha, categorical=cat).fit(ref)
    for i in range(0, len(x), batch):
        if m.update(x[i:i + batch]):
            return int(m.alarm_at_) - 1  # type: ignore[operator]
    return None


def fixed_reference_alarm(x: np.ndarray, ref: np.ndarray, cat: list[int]) -> int | None:
    """The previous alarm: p-values against the fixed reference, x and -x (numeric); rarity, smoothed (categorical)."""
    rng = np.random.default_rng(123)
    r, v = ref[:, 0], x[:, 0]
    if cat:
        vals, counts = np.unique(r, return_counts=True)
        freq = dict(zip(vals.tolist(), (counts / counts.sum()).tolist()))
        score = lambda a: -np.log(np.array([freq.get(c, 1e-9) for c in a.tolist()]))
        p = conformal_p_values(score(r), score(v), rng)[:, None]
    else:
        p = np.column_stack([conformal_p_values(r, v), conformal_p_values(-r, -v)])
    m = ConformalMartingale(alpha=0.01).fit()
    for i in range(0, len(p), 1000):
        if m.update(p[i:i + 1000]):
            return int(m.alarm_at_) - 1  # type: ignore[operator]
    return None


def river_first(factory: Callable[[], object], v: np.ndarray, start: int = 0) -> int | None:
    """First alarm at or after ``start`` (0-based), feeding values one by one."""
    d = factory()
    for i, val in enumerate(v.tolist()):
        d.update(val)  # type: ignore[attr-defined]
        if d.drift_detected and i >= start:  # type: ignore[attr-defined]
            return i
    return None


def river_detectors() -> dict[str, Callable[[], object]]:
    from river import drift

    return {"ADWIN": lambda: drift.ADWIN(), "PageHinkley": lambda: drift.PageHinkley(),
            "KSWIN": lambda: drift.KSWIN(seed=0)}


# -- tables ---------------------------------------------------------------------------------------
def _pct(d: list[int], q: float) -> str:
    return f"{np.percentile(d, q):,.0f}" if d else "-"


def false_alarms(runs: int, n: int, only: list[str] | None = None) -> None:
    refs = (500, 2000, 5000)
    print(f"\n## False alarms: runs with any alarm, out of {runs} clean runs of {n:,} rows (ours at level 0.01)\n")
    print("| detector | stream | " + " | ".join(f"reference {r:,}" for r in refs) + " | time (s) |")
    print("|---|---|" + "---|" * len(refs) + "---|")
    rows: dict[tuple[str, str], list[int]] = {}
    times: dict[tuple[str, str], float] = {}
    C = np.linalg.cholesky(_multi_cov())

    def stream(kind: str, rng: np.random.Generator, m: int) -> np.ndarray:
        if kind == "N(0,1)":
            return rng.normal(size=(m, 1))
        if kind == "categorical":
            return rng.choice(3, m, p=CAT_P).astype(float)[:, None]
        return rng.normal(size=(m, D_MULTI)) @ C.T

    ours: dict[str, Callable[[np.ndarray, np.ndarray, list[int]], bool]] = {
        "sequential (ours)": lambda x, r, c: sequential_alarm(x, r, c) is not None,
        "window (ours)": lambda x, r, c: bool(window_alarms(x, r, c, step=STEP if x.shape[1] == 1 else 1000,
                                                             stop_after=0)),
        "fixed-ref martingale (fallback)": lambda x, r, c: fixed_reference_alarm(x, r, c) is not None,
    }
    if OURS_ONLY:
        ours = {k: v for k, v in ours.items() if k in OURS_ONLY}
    for kind in ("N(0,1)", "categorical", f"{D_MULTI} correlated N(0,1)"):
        if only and not any(kind.startswith(o) for o in only):
            continue
        cat = [0] if kind == "categorical" else []
        n_rows = n if not kind.startswith(str(D_MULTI)) else n // 4
        for name, det in ours.items():
            if name.startswith("fixed") and kind.startswith(str(D_MULTI)):
                continue
            key = (name, kind)
            t0 = time.perf_counter()
            rows[key] = []
            for n_ref in refs:
                hits = 0
                for r in range(runs):
                    rng = np.random.default_rng(10_000 + r)
                    x = stream(kind, rng, n_rows)
                    ref = stream(kind, rng, n_ref)
                    hits += det(x, ref, cat)
                rows[key].append(hits)
            times[key] = time.perf_counter() - t0
            label = kind if n_rows == n else f"{kind}, {n_rows:,} rows"
            print(f"| {name} | {label} | " + " | ".join(str(h) for h in rows[key]) + f" | {times[key]:.0f} |",
                  flush=True)
        if kind.startswith(str(D_MULTI)):
            continue
        for name, factory in river_detectors().items():
            t0 = time.perf_counter()
            m = runs if name != "KSWIN" else min(runs, 20)
            hits = sum(river_first(factory, stream(kind, np.random.default_rng(10_000 + r), n)[:, 0]) is not None
                       for r in range(m))
            of = "" if m == runs else f" of {m} runs"
            print(f"| {name} | {kind} | {hits}{of} (no reference) | | | {time.perf_counter() - t0:.0f} |", flush=True)
    print(f"\n(window on the {D_MULTI}-feature streams: the latest 2,000 rows every 1,000 rows, 5 tests per run, "
          f"to bound the run time of the joint test's permutations)")
    if not only or any("long".startswith(o) or o.startswith("long") for o in only):
        long_streams(runs)


def long_streams(runs: int, lengths: tuple[int, ...] = (20_000, 200_000, 1_000_000)) -> None:
    """P(any false alarm) as the clean stream grows: ours (reference 2,000, level 0.01) and ADWIN (delta 0.002)."""
    print(f"\n## False alarms on longer clean N(0,1) streams: runs with an alarm within the first n rows, of {runs}\n")
    print("| detector | " + " | ".join(f"n = {n:,}" for n in lengths) + " | time (s) |")
    print("|---|" + "---|" * len(lengths) + "---|")
    dets: dict[str, Callable[[np.ndarray, np.ndarray], int | None]] = {
        "sequential (ours), alpha 0.01": lambda x, ref: sequential_alarm(x[:, None], ref, [], batch=10_000),
        "ADWIN (delta 0.002)": lambda x, ref: river_first(river_detectors()["ADWIN"], x),
    }
    for name, det in dets.items():
        t0 = time.perf_counter()
        firsts = []
        for r in range(runs):
            rng = np.random.default_rng(50_000 + r)
            x = rng.normal(size=max(lengths))
            firsts.append(det(x, rng.normal(size=(2000, 1))))
        cells = [str(sum(f is not None and f < n for f in firsts)) for n in lengths]
        print(f"| {name} | " + " | ".join(cells) + f" | {time.perf_counter() - t0:.0f} |", flush=True)


def delays(runs: int, only: list[str] | None = None) -> None:
    kinds = list(SCENARIOS) + ["category share 0.2 -> 0.4", "correlation 0.8 -> 0 (2 features)",
                               "correlation 0 -> 0.8 (2 features)",
                               f"{D_MULTI} correlated features, all +0.25 sd (river: feature 0)"]
    if only:
        kinds = [k for k in kinds if any(k.startswith(o) for o in only)]
    names = ["window (ours)", "sequential (ours)", "sequential, alpha 0.05", "ADWIN", "PageHinkley", "KSWIN"]
    print(f"\n## Detection delay: rows after the change (change at row {PRE:,}, {POST:,} rows after it, reference "
          f"2,000 rows, {runs} runs)\n")
    print("Each cell: detected / runs, median delay, 90th percentile; [k] = runs with an alarm before the change.\n")
    print("| scenario | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    rivers = river_detectors()
    for kind in kinds:
        res: dict[str, tuple[list[int], int]] = {nm: ([], 0) for nm in names}
        for r in range(runs):
            rng = np.random.default_rng(100 + r)
            ref, x, cat = make_run(kind, rng, 2000)
            al = window_alarms(x, ref, cat, stop_after=PRE)
            first = [a for a in al if a >= PRE]
            res["window (ours)"] = (res["window (ours)"][0] + ([first[0] - PRE] if first else []),
                                    res["window (ours)"][1] + any(a < PRE for a in al))
            for nm, level in (("sequential (ours)", 0.01), ("sequential, alpha 0.05", 0.05)):
                s = sequential_alarm(x, ref, cat, batch=STEP, alpha=level)
                d, fa = res[nm]
                res[nm] = (d + ([s - PRE] if s is not None and s >= PRE else []), fa + (s is not None and s < PRE))
            if kind.startswith("correlation"):
                continue
            for nm, factory in rivers.items():
                v = x[:, 0] if nm != "KSWIN" else x[PRE - 1000:, 0]
                change = PRE if nm != "KSWIN" else 1000
                first_any = river_first(factory, v)
                a = first_any if first_any is not None and first_any >= change else river_first(factory, v, change)
                d, fa = res[nm]
                res[nm] = (d + ([a - change] if a is not None else []),
                           fa + (first_any is not None and first_any < change))
        cells = []
        for nm in names:
            if kind.startswith("correlation") and nm in rivers:
                cells.append("n/a")
                continue
            d, fa = res[nm]
            cell = f"{len(d)}/{runs}, {_pct(d, 50)}, {_pct(d, 90)}"
            if fa:
                cell += f" [{fa}]"
            cells.append(cell)
        print(f"| {kind} | " + " | ".join(cells) + " |", flush=True)


# -- like for like: river's detectors calibrated to our false-alarm level --------------------------
ADWIN_GRID = (2e-3, 1e-3, 7e-4, 5e-4, 4e-4, 3e-4, 2.5e-4, 2e-4, 1.5e-4, 1.2e-4, 1e-4, 8e-5, 6e-5, 5e-5, 4e-5, 3e-5,
              2e-5, 1e-5, 5e-6, 2e-6, 1e-6, 1e-7, 1e-8)
PH_GRID = (50.0, 100.0, 200.0, 300.0, 400.0, 450.0, 500.0, 550.0, 600.0, 700.0, 800.0, 1000.0, 1500.0, 2000.0)
CAL_SEED, CHECK_SEED = 70_000, 50_000  # calibration seeds; the check uses the long-stream table's seeds


def _river(name: str, param: float) -> Callable[[], object]:
    from river import drift

    if name == "ADWIN":
        return lambda: drift.ADWIN(delta=param)
    return lambda: drift.PageHinkley(threshold=param)


def calibrate(name: str, grid: tuple[float, ...], runs: int, horizons: tuple[int, ...],
              level: float = 0.01) -> dict[int, float]:
    """The loosest grid value whose clean-run false-alarm rate within each horizon is <= ``level``.

    ``grid`` runs from the most to the least alarming setting. Before its first alarm a detector's
    state does not depend on delta (ADWIN) or the threshold (PageHinkley), and a smaller delta /
    larger threshold only removes cuts, so the first alarm row is monotone along the grid: a run
    that stays clean within the longest horizon at one setting stays clean at the next ones and is
    not rerun.
    """
    h_max = max(horizons)

    def stream(r: int) -> np.ndarray:  # regenerated per use: 500 streams of 10^6 rows would take 4 GB
        return np.random.default_rng(CAL_SEED + r).normal(size=h_max)

    alive = list(range(runs))  # runs that alarmed within h_max at the previous setting
    counts: dict[float, list[int]] = {}
    t0 = time.perf_counter()
    for g in grid:
        firsts = {r: river_first(_river(name, g), stream(r)) for r in alive}
        alive = [r for r, f in firsts.items() if f is not None]
        counts[g] = [sum(firsts[r] < h for r in alive) for h in horizons]  # type: ignore[operator]
        if all(c <= level * runs for c in counts[g]):
            break
    ok = {h: [g for g in counts if counts[g][i] <= level * runs] for i, h in enumerate(horizons)}
    if not all(ok.values()):
        raise SystemExit(f"{name}: no setting in the grid reaches {level:.0%} false alarms; extend the grid")
    chosen = {h: v[0] for h, v in ok.items()}
    pname = "delta" if name == "ADWIN" else "threshold"
    print(f"\n{name} calibration: runs with a false alarm within n rows, of {runs} clean N(0,1) runs "
          f"(seeds {CAL_SEED:,}-{CAL_SEED + runs - 1:,}; {time.perf_counter() - t0:.0f} s)\n")
    print(f"| {pname} | " + " | ".join(f"n = {h:,}" for h in horizons) + " |")
    print("|---|" + "---|" * len(horizons))
    for g, c in counts.items():
        print(f"| {g:g} | " + " | ".join(str(v) for v in c) + " |")
    print(f"\nchosen (<= {level:.0%} of calibration runs): "
          + ", ".join(f"{pname} {chosen[h]:g} for n = {h:,}" for h in horizons), flush=True)
    return chosen


def matched(cal_runs: int, check_runs: int, delay_runs: int, horizons: tuple[int, ...],
            only: list[str] | None = None, ph: bool = True, check: bool = True) -> None:
    """River's ADWIN (and PageHinkley) calibrated to <= 1% false alarms within a horizon, beside ours."""
    print("\n## Matched false-alarm level: river's detectors calibrated to <= 1% false alarms within a horizon\n")
    dets: dict[str, Callable[[], object]] = {"ADWIN, delta 0.002 (default)": _river("ADWIN", 0.002)}
    for h, d in calibrate("ADWIN", ADWIN_GRID, cal_runs, horizons).items():
        dets[f"ADWIN, delta {d:g} (<= 1% within {h:,})"] = _river("ADWIN", d)
    if ph:
        ph_h = (min(horizons),)
        for h, t in calibrate("PageHinkley", PH_GRID, cal_runs, ph_h).items():
            dets[f"PageHinkley, threshold {t:g} (<= 1% within {h:,})"] = _river("PageHinkley", t)
    lengths = (20_000, 200_000, 1_000_000)
    if check:
        _check(dets, check_runs, lengths)
    _matched_delays(dets, delay_runs, only)


def _check(dets: dict[str, Callable[[], object]], check_runs: int, lengths: tuple[int, ...]) -> None:
    print(f"\nCheck on separate seeds ({CHECK_SEED:,}-{CHECK_SEED + check_runs - 1:,}, the long-stream table's): "
          f"runs with an alarm within the first n rows, of {check_runs}\n")
    print("| detector | " + " | ".join(f"n = {n:,}" for n in lengths) + " | time (s) |")
    print("|---|" + "---|" * len(lengths) + "---|")
    for name, factory in dets.items():
        t0 = time.perf_counter()
        firsts = [river_first(factory, np.random.default_rng(CHECK_SEED + r).normal(size=max(lengths)))
                  for r in range(check_runs)]
        cells = [str(sum(f is not None and f < n for f in firsts)) for n in lengths]
        print(f"| {name} | " + " | ".join(cells) + f" | {time.perf_counter() - t0:.0f} |", flush=True)


def _matched_delays(dets: dict[str, Callable[[], object]], delay_runs: int, only: list[str] | None) -> None:
    kinds = [k for k in SCENARIOS if not k.startswith(("mean +1", "mean +2", "sd x3"))] + ["category share 0.2 -> 0.4"]
    if only:
        kinds = [k for k in kinds if any(k.startswith(o) for o in only)]
    names = ["sequential (ours), alpha 0.01"] + list(dets)
    print(f"\n### Delay at matched level (change at row {PRE:,}, {POST:,} rows after it, {delay_runs} runs; "
          "streams as in the delay table)\n")
    print("Each cell: detected / runs, median delay, 90th percentile; [k] = runs with an alarm before the change.\n")
    print("| scenario | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for kind in kinds:
        res: dict[str, tuple[list[int], int]] = {nm: ([], 0) for nm in names}
        for r in range(delay_runs):
            ref, x, cat = make_run(kind, np.random.default_rng(100 + r), 2000)
            firsts: dict[str, int | None] = {names[0]: sequential_alarm(x, ref, cat, batch=STEP)}
            for nm, factory in dets.items():
                f = river_first(factory, x[:, 0])
                firsts[nm] = f if f is None or f >= PRE else river_first(factory, x[:, 0], PRE)
                if f is not None and f < PRE:
                    res[nm] = (res[nm][0], res[nm][1] + 1)
            s = firsts[names[0]]
            if s is not None and s < PRE:
                res[names[0]] = (res[names[0]][0], res[names[0]][1] + 1)
                firsts[names[0]] = None  # the sequential alarm latches: a false alarm, not a detection
            for nm, f in firsts.items():
                if f is not None and f >= PRE:
                    res[nm][0].append(f - PRE)
        cells = []
        for nm in names:
            d, fa = res[nm]
            cells.append(f"{len(d)}/{delay_runs}, {_pct(d, 50)}, {_pct(d, 90)}" + (f" [{fa}]" if fa else ""))
        print(f"| {kind} | " + " | ".join(cells) + " |", flush=True)


def cost(reps: int) -> None:
    rng = np.random.default_rng(1)
    print("\n## Cost per background cycle\n")
    print("| what | median ms | min ms |")
    print("|---|---|---|")

    def timed(label: str, fn: Callable[[], object]) -> None:
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        print(f"| {label} | {np.median(ts):.1f} | {min(ts):.1f} |", flush=True)

    R, W = rng.normal(size=(10000, 100)), rng.normal(size=(10000, 100))
    for mr in (2000, 5000):
        t = WindowTest(max_reference=mr).fit(R)
        timed(f"window test, 100 features x 10,000 rows, {mr:,} reference rows", lambda t=t: t.test(W))
    for d in (2, 10, 100):
        j = JointShiftTest().fit(rng.normal(size=(2000, d)))
        Wj = rng.normal(size=(2000, d))
        timed(f"joint test, {d} features, 2,000 window rows vs 2,000 reference rows, clean window "
              "(early stop at the 10th exceedance)", lambda j=j, Wj=Wj: j.test(Wj))
        Ws = Wj * 1.3
        timed(f"joint test, {d} features, 2,000 vs 2,000 rows, shifted window (all 199 permutations)",
              lambda j=j, Ws=Ws: j.test(Ws))
    R30 = rng.normal(size=(400, 30))
    j = JointShiftTest().fit(R30)
    W30 = rng.normal(size=(500, 30))
    timed("joint test, 30 features, 500 window rows vs 400 reference rows (the served example's shape)",
          lambda: j.test(W30))
    for d in (1, 10, 30, 100):
        m = OnlineConformalMartingale().fit(rng.normal(size=(2000, d)))
        Xs = rng.normal(size=(1000, d))
        timed(f"sequential alarm, {d} feature(s){' + joint column' if d > 1 else ''}, 1,000 rows",
              lambda m=m, Xs=Xs: m.update(Xs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer runs (a smoke run)")
    ap.add_argument("--only", choices=("cost", "false-alarms", "delays", "matched"), help="one table")
    ap.add_argument("--scenarios", help="comma list of scenario / stream name prefixes (delays, false alarms)")
    ap.add_argument("--change-at", type=int, default=5000, help="row of the change in the delay table (default 5000)")
    ap.add_argument("--detectors", help="comma list of our detectors for the false-alarm table "
                    "(e.g. 'sequential (ours)')")
    ap.add_argument("--cal-runs", type=int, default=500, help="clean runs to calibrate river's detectors (matched)")
    ap.add_argument("--horizons", default="200000,1000000",
                    help="comma list of horizons river's detectors are calibrated for (matched)")
    ap.add_argument("--no-check", action="store_true", help="matched: skip the check on separate seeds")
    ap.add_argument("--no-ph", action="store_true", help="matched: ADWIN only, no calibrated PageHinkley")
    args = ap.parse_args(argv)
    global PRE
    PRE = args.change_at
    t0 = time.perf_counter()
    if args.only in (None, "cost"):
        cost(5 if args.quick else 20)
    only = args.scenarios.split(",") if args.scenarios else None
    if args.detectors:
        global OURS_ONLY
        OURS_ONLY = args.detectors.split(",")
    if args.only in (None, "false-alarms"):
        false_alarms(10 if args.quick else 100, 5000 if args.quick else 20_000, only)
    if args.only in (None, "delays"):
        delays(3 if args.quick else 20, only)
    if args.only == "matched":
        matched(20 if args.quick else args.cal_runs, 10 if args.quick else 100, 3 if args.quick else 20,
                tuple(int(h) for h in args.horizons.split(",")), only, ph=not args.no_ph, check=not args.no_check)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
