"""nannyml's own CBPE on the car-loan chunks, beside our CBPE and ATC from ``bench_carloan.py``.

Runs in a separate benchmark environment with nannyml's full dependency stack; nannyml is
not a dependency of the project and this script never imports ``guarded_serving``:

    python3.11 -m venv /tmp/nmlenv
    /tmp/nmlenv/bin/pip install nannyml==0.13.1 statsmodels    # statsmodels: imported but not declared
    pip install --no-deps --target /tmp/nml nannyml==0.13.1      # data files for bench_carloan.py
    PYTHONPATH=. nice -n 10 python benchmarks/bench_carloan.py --nannyml /tmp/nml \\
        --dump-scores build/carloan_scores.npz
    nice -n 10 /tmp/nmlenv/bin/python benchmarks/nannyml_cbpe.py build/carloan_scores.npz

For two sets of scores on the same 10 chunks of 5,000 analysis loans:

(a) nannyml's model scores shipped in the files (``y_pred_proba``), reference = the 50,000
    reference loans; predictions ``y_pred_proba >= 0.5`` (the rule of bench_carloan's realised
    column; the files' own ``y_pred`` column uses a higher threshold and is run as well);
(b) our gradient-boosting model's scores as the guard served them, reference = its scores on
    the 25,000 held-out reference loans; predictions ``score >= 0.5`` (the served label).

nannyml's CBPE (``problem_type="classification_binary"``, ``metrics=["accuracy"]``,
``chunk_size=5000``, isotonic calibration when its cross-validated test says the reference
scores need it) gives per chunk an estimate and its sampling error; its band is the estimate
+- 3 sampling errors (nannyml's ``lower/upper_confidence_boundary``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no analytics calls (and no network here)

import numpy as np
import pandas as pd

try:
    import nannyml as nml
except ImportError as e:  # pragma: no cover - environment problem, reported plainly
    sys.exit(f"nannyml does not import in this environment ({e!r}); see the module docstring")


def nannyml_cbpe(ref_scores: np.ndarray, ref_labels: np.ndarray, ana_scores: np.ndarray,
                 ana_labels: np.ndarray, chunk_size: int, ref_pred: np.ndarray | None = None,
                 ana_pred: np.ndarray | None = None) -> tuple[pd.DataFrame, bool, float]:
    """nannyml's CBPE accuracy per analysis chunk: (table, calibrated?, seconds)."""
    def frame(s: np.ndarray, y: np.ndarray, pred: np.ndarray | None) -> pd.DataFrame:
        p = (s >= 0.5).astype(int) if pred is None else pred.astype(int)
        return pd.DataFrame({"y_pred_proba": s.astype(float), "y_pred": p, "y_true": y.astype(int)})

    t0 = time.perf_counter()
    est = nml.CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true", metrics=["accuracy"],
                   chunk_size=chunk_size, problem_type="classification_binary")
    est.fit(frame(ref_scores, ref_labels, ref_pred))
    res = est.estimate(frame(ana_scores, ana_labels, ana_pred)).filter(period="analysis").to_df()
    secs = time.perf_counter() - t0
    a = res["accuracy"]
    out = pd.DataFrame({"chunk": res[("chunk", "chunk_index")].to_numpy(),
                        "start": res[("chunk", "start_index")].to_numpy(),
                        "value": a["value"].to_numpy(float), "sampling_error": a["sampling_error"].to_numpy(float),
                        "lower": a["lower_confidence_boundary"].to_numpy(float),
                        "upper": a["upper_confidence_boundary"].to_numpy(float),
                        "realised": a["realized"].to_numpy(float), "alert": a["alert"].to_numpy(bool)})
    return out, bool(est.needs_calibration), secs


def combined(title: str, z: np.lib.npyio.NpzFile, name: str, nml_tab: pd.DataFrame) -> None:
    real = z[f"{name}_realised"]
    if not np.allclose(real, nml_tab["realised"].to_numpy(), atol=1e-9):
        sys.exit(f"{name}: nannyml's realised accuracy {nml_tab['realised'].tolist()} differs from "
                 f"bench_carloan's {real.tolist()}: not the same predictions or chunks")
    ours, lo, hi, atc = (z[f"{name}_cbpe_accuracy"], z[f"{name}_cbpe_lower"], z[f"{name}_cbpe_upper"],
                         z[f"{name}_atc"])
    nv, nlo, nhi = (nml_tab[k].to_numpy() for k in ("value", "lower", "upper"))
    print(f"\n## {title}\n")
    print("| chunk | realised | our CBPE [band] | nannyml CBPE [band] | ATC | our CBPE error | "
          "nannyml CBPE error | ATC error |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(len(real)):
        print(f"| {i} | {real[i]:.4f} | {ours[i]:.4f} [{lo[i]:.4f}, {hi[i]:.4f}] | "
              f"{nv[i]:.4f} [{nlo[i]:.4f}, {nhi[i]:.4f}] | {atc[i]:.4f} | {abs(ours[i] - real[i]):.4f} | "
              f"{abs(nv[i] - real[i]):.4f} | {abs(atc[i] - real[i]):.4f} |")
    e = {k: np.abs(v - real) for k, v in (("our CBPE", ours), ("nannyml CBPE", nv), ("ATC", atc))}
    print("\nmean absolute error (max): " + ", ".join(f"{k} {v.mean():.4f} ({v.max():.4f})" for k, v in e.items()))
    print(f"realised inside the band: our CBPE {int(((lo <= real) & (real <= hi)).sum())}/{len(real)}, "
          f"nannyml CBPE {int(((nlo <= real) & (real <= nhi)).sum())}/{len(real)}; band half-width mean: "
          f"ours {np.mean((hi - lo) / 2):.4f}, nannyml {np.mean((nhi - nlo) / 2):.4f}; "
          f"|our CBPE - nannyml CBPE| mean {np.mean(np.abs(ours - nv)):.4f} (max {np.max(np.abs(ours - nv)):.4f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scores", help="the .npz written by bench_carloan.py --dump-scores")
    args = ap.parse_args()
    z = np.load(args.scores)
    size = int(z["chunk_size"])
    labels, chunk = z["analysis_labels"], z["analysis_chunk"]
    print(f"nannyml {nml.__version__}, pandas {pd.__version__}, numpy {np.__version__}; "
          f"{len(labels):,} analysis loans in {len(np.unique(chunk))} chunks of {size:,}")

    what = {"nannyml": "nannyml's model scores from the files (y_pred_proba >= 0.5; reference 50,000 loans)",
            "ours": ("our gradient-boosting model's served scores (score >= 0.5; reference its scores on "
                     "25,000 held-out loans)")}
    for name in ("nannyml", "ours"):
        tab, cal, secs = nannyml_cbpe(z[f"{name}_reference_scores"], z[f"{name}_reference_labels"],
                                      z[f"{name}_analysis_scores"], labels, size)
        if not np.array_equal(tab["start"].to_numpy(), np.flatnonzero(np.diff(chunk, prepend=-1))):
            sys.exit(f"nannyml's chunks {tab['start'].tolist()} are not bench_carloan's")
        combined(f"Car loan, {what[name]}", z, name, tab)
        print(f"nannyml calibrated the reference scores: {cal}; sampling error per chunk "
              f"{tab['sampling_error'].iloc[0]:.5f}; alerts (outside its thresholds) in chunks "
              f"{tab.index[tab['alert']].tolist()}; fit + estimate {secs:.1f} s")

    # nannyml's documented set-up: the files' own y_pred column (a threshold above 0.5)
    ref, ana, tgt = nml.load_synthetic_car_loan_dataset()
    ana = ana.merge(tgt, on="id")
    if not np.allclose(ana["y_pred_proba"].to_numpy(), z["nannyml_analysis_scores"]):
        sys.exit("the files' analysis rows are not in bench_carloan's order")
    tab, cal, _ = nannyml_cbpe(ref["y_pred_proba"].to_numpy(), ref["repaid"].to_numpy(),
                               ana["y_pred_proba"].to_numpy(), ana["repaid"].to_numpy(), size,
                               ref["y_pred"].to_numpy(), ana["y_pred"].to_numpy())
    err = np.abs(tab["value"] - tab["realised"]).to_numpy()
    inside = int(((tab["lower"] <= tab["realised"]) & (tab["realised"] <= tab["upper"])).sum())
    print("\n## nannyml's CBPE with the files' own y_pred column (nannyml's tutorial set-up)\n")
    print("| chunk | realised | nannyml CBPE [band] | error |\n|---:|---:|---:|---:|")
    for r, e in zip(tab.itertuples(), err):
        print(f"| {r.chunk} | {r.realised:.4f} | {r.value:.4f} [{r.lower:.4f}, {r.upper:.4f}] | {e:.4f} |")
    print(f"\nmean absolute error {err.mean():.4f} (max {err.max():.4f}); realised inside the band in "
          f"{inside}/{len(tab)}; calibrated: {cal}")


if __name__ == "__main__":
    main()
