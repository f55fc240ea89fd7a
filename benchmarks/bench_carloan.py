"""Real delayed labels: nannyml's synthetic car-loan data, replayed through a guard.

    pip install --no-deps --target /tmp/nml nannyml      # only its data files are read
    PYTHONPATH=. nice -n 10 python benchmarks/bench_carloan.py --nannyml /tmp/nml

nannyml is not a dependency: the benchmark reads the CSV files its package ships
(``nannyml/datasets/data/synthetic_car_loan_{reference,analysis,analysis_target}.csv``) from
the directory given with ``--nannyml`` (or ``$NANNYML_PATH``, or wherever ``nannyml`` is
importable from) and never imports it.

The data: 50,000 reference loans (with their outcome, ``repaid``) and 50,000 analysis loans
whose outcomes come in a separate file, as if delivered later; the analysis period has a
covariate shift in its second half. We

1. train a gradient-boosting classifier on the first half of the reference period and keep
   its scores on the second half, with their labels, as the calibration reference of the
   label-free estimates (what the profile keeps);
2. serve it behind a guard (in process, the guard's request path and its SQLite store, with
   the component's clock set to the data's timestamps) with ``expectations={"accuracy": ...}``;
3. replay the analysis period in time order, 50 loans per request, in 10 chunks of 5,000;
   the labels of each chunk arrive one chunk later (``guard.record_feedback_many`` with the
   request ids the guard returned);
4. per chunk, report the label-free estimates the guard computed *before* that chunk's labels
   arrived (CBPE with its sampling band, ATC) beside the realised accuracy once they did.

The same table is then made from nannyml's own model scores in the files (``y_pred_proba``,
``y_pred``), calibrated on the whole reference period.

nannyml's own CBPE needs its full dependency stack, so it runs in a separate environment:
``--dump-scores FILE`` writes an ``.npz`` with both models' reference scores and labels, the
analysis scores, labels and chunk ids, and our estimates per chunk, which
``benchmarks/nannyml_cbpe.py`` (run with that environment's python) reads to put nannyml's CBPE
beside ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guarded_serving import Guard
from guarded_serving.performance.component import PerformanceComponent
from guarded_serving.performance.estimate import ATC, CBPE

CHUNK = 5000
PER_REQUEST = 50


def data_dir(given: str | None) -> Path:
    cands = [given, os.environ.get("NANNYML_PATH")]
    spec = importlib.util.find_spec("nannyml")
    if spec is not None and spec.submodule_search_locations:
        cands.append(str(Path(next(iter(spec.submodule_search_locations))).parent))
    for c in cands:
        if c:
            d = Path(c) / "nannyml" / "datasets" / "data"
            if (d / "synthetic_car_loan_reference.csv").exists():
                return d
    sys.exit("nannyml's data not found: pip install --no-deps --target /tmp/nml nannyml, then pass --nannyml /tmp/nml")


def load(d: Path):  # type: ignore[no-untyped-def]
    import pandas as pd

    ref = pd.read_csv(d / "synthetic_car_loan_reference.csv")
    ana = pd.read_csv(d / "synthetic_car_loan_analysis.csv").merge(
        pd.read_csv(d / "synthetic_car_loan_analysis_target.csv"), on="id")
    salary = {s: i for i, s in enumerate(sorted(ref["salary_range"].unique(), key=lambda s: float(
        s.split()[0].rstrip("K+").replace(",", "") or 0)))}

    def features(df):  # type: ignore[no-untyped-def]
        return np.column_stack([
            df["car_value"].to_numpy(float), df["salary_range"].map(salary).to_numpy(float),
            df["debt_to_income_ratio"].to_numpy(float), df["loan_length"].to_numpy(float),
            df["repaid_loan_on_prev_car"].astype(float).to_numpy(),
            df["size_of_downpayment"].str.rstrip("%").astype(float).to_numpy() / 100,
            df["driver_tenure"].to_numpy(float)])

    def ts(df):  # type: ignore[no-untyped-def]
        return pd.to_datetime(df["timestamp"]).astype("int64").to_numpy() / 1e9

    return (features(ref), ref["repaid"].to_numpy(int), ts(ref), ref["y_pred_proba"].to_numpy(float),
            features(ana), ana["repaid"].to_numpy(int), ts(ana), ana["y_pred_proba"].to_numpy(float))


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n## {title}\n")
    print("| chunk | rows | realised accuracy | CBPE estimate [band] | realised in band | ATC estimate | "
          "CBPE error | ATC error |")
    print("|---:|---:|---:|---:|:---:|---:|---:|---:|")
    ec, ea, inside = [], [], 0
    for i, (n, real, cb, atc) in enumerate(rows):
        ec.append(abs(cb["accuracy"] - real))
        ea.append(abs(atc - real))
        ok = cb["lower"] <= real <= cb["upper"]
        inside += ok
        print(f"| {i} | {n:,} | {real:.4f} | {cb['accuracy']:.4f} [{cb['lower']:.4f}, {cb['upper']:.4f}] | "
              f"{'yes' if ok else 'no'} | {atc:.4f} | {ec[-1]:.4f} | {ea[-1]:.4f} |")
    print(f"\nmean absolute error: CBPE {np.mean(ec):.4f} (max {np.max(ec):.4f}), ATC {np.mean(ea):.4f} "
          f"(max {np.max(ea):.4f}); realised inside CBPE's band in {inside} of {len(rows)} chunks")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nannyml", help="directory that contains the nannyml package (a --target install)")
    ap.add_argument("--dump-scores", metavar="FILE",
                    help="write reference scores/labels, analysis scores/labels/chunk ids and our estimates "
                         "per chunk (.npz) for benchmarks/nannyml_cbpe.py")
    args = ap.parse_args()
    from sklearn.ensemble import HistGradientBoostingClassifier

    Xr, yr, _tr, pr_nml, Xa, ya, ta, pa_nml = load(data_dir(args.nannyml))
    half = len(Xr) // 2
    model = HistGradientBoostingClassifier(random_state=0).fit(Xr[:half], yr[:half])
    cal_scores, cal_labels = model.predict_proba(Xr[half:])[:, 1], yr[half:]
    ref_acc = float(((cal_scores >= 0.5).astype(int) == cal_labels).mean())

    sim_now = [float(ta[0])]
    comp = PerformanceComponent(expectations={"accuracy": round(ref_acc - 0.01, 3)}, window=CHUNK,
                                reference=lambda: (cal_scores, cal_labels), interval_s=3600,
                                store=str(Path(tempfile.mkdtemp(prefix="carloan-")) / "outcomes.sqlite"),
                                clock=lambda: sim_now[0])
    guard = Guard(name="car_loan", operational=False, components=[comp])

    @guard
    def predict(rows: np.ndarray) -> dict:
        p = model.predict_proba(rows)[:, 1]
        return {"label": (p >= 0.5).astype(int).tolist(), "probability": p.tolist()}

    rows_out, waiting, served = [], None, []
    n_chunks = len(Xa) // CHUNK
    verdicts = []
    for c in range(n_chunks):
        lo, hi = c * CHUNK, (c + 1) * CHUNK
        ids, preds = [], []
        for i in range(lo, hi, PER_REQUEST):
            sim_now[0] = float(ta[i])
            out = predict(Xa[i:i + PER_REQUEST])
            ids.append((out["request_id"], ya[i:i + PER_REQUEST]))
            preds.extend(out["label"])
            served.extend(out["probability"])
        comp.flush()
        comp.evaluate()  # the estimate of this chunk, before any of its labels
        est = comp.stats()["estimate"]
        real = float((np.asarray(preds) == ya[lo:hi]).mean())
        rows_out.append((CHUNK, real, est["cbpe"], est["atc"]))
        if waiting is not None:  # the previous chunk's labels arrive now: one chunk late
            res = guard.record_feedback_many([{"request_id": r, "label": y.tolist()} for r, y in waiting])
            assert all(x.status == "recorded" for x in res), {x.status for x in res}
        waiting = ids
        comp.evaluate()
        verdicts.append(guard.health()["checks"]["performance.accuracy"])
    guard.record_feedback_many([{"request_id": r, "label": y.tolist()} for r, y in waiting])
    comp.evaluate()
    final = guard.health()["checks"]
    table(f"Car loan, our model (gradient boosting on 25,000 reference loans; calibrated on the other 25,000, "
          f"accuracy {ref_acc:.4f} there), served through the guard, labels one chunk late", rows_out)
    lag = comp.stats()["realised"]["0/*"]["label_lag"]
    print(f"\nlabel lag (simulated time): median {lag['median_s'] / 3600:.1f} h, p90 {lag['p90_s'] / 3600:.1f} h")
    print("\nexpectation check after each chunk's labels arrived (chunk: status):")
    for i, v in enumerate(verdicts):
        print(f"- {i}: {v['status']}: {v['reason'][:240]}")
    print(f"- final: {final['performance.accuracy']['status']}: {final['performance.accuracy']['reason'][:300]}")
    print(f"- estimate: {final['performance.estimate']['reason'][:300]}")
    guard.stop()

    # nannyml's own scores in the files
    cbpe, atc = CBPE().fit(pr_nml, yr), ATC().fit(pr_nml, yr)
    rows2 = []
    for c in range(n_chunks):
        s = slice(c * CHUNK, (c + 1) * CHUNK)
        real = float(((pa_nml[s] >= 0.5).astype(int) == ya[s]).mean())
        rows2.append((CHUNK, real, cbpe.estimate(pa_nml[s]), atc.estimate(pa_nml[s])))
    table("Car loan, nannyml's model scores from the files (y_pred_proba; calibrated on the 50,000 reference "
          "loans), our CBPE and ATC", rows2)
    if args.dump_scores:
        dump(args.dump_scores, ours=(cal_scores, cal_labels, np.asarray(served, float), rows_out),
             theirs=(pr_nml, yr, pa_nml, rows2), labels=ya, n_chunks=n_chunks)


def dump(path: str, ours: tuple, theirs: tuple, labels: np.ndarray, n_chunks: int) -> None:
    """Scores, labels, chunk ids and our per-chunk estimates, for a CBPE run elsewhere."""
    out = {"analysis_labels": labels, "analysis_chunk": np.repeat(np.arange(n_chunks), CHUNK),
           "chunk_size": np.int64(CHUNK)}
    for name, (ref_s, ref_y, ana_s, rows) in (("ours", ours), ("nannyml", theirs)):
        out[f"{name}_reference_scores"], out[f"{name}_reference_labels"] = ref_s, ref_y
        out[f"{name}_analysis_scores"] = ana_s
        out[f"{name}_realised"] = np.array([r[1] for r in rows])
        for k in ("accuracy", "lower", "upper"):
            out[f"{name}_cbpe_{k}"] = np.array([r[2][k] for r in rows])
        out[f"{name}_atc"] = np.array([r[3] for r in rows])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    print(f"\nscores written to {path}")


if __name__ == "__main__":
    main()
