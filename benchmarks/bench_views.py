"""Input views: cost per row, and edge-case quality per kind on the examples' edge cases.

    PYTHONPATH=. python benchmarks/bench_views.py [--seeds 20] [--reps 3000] [--quick]

1. **Cost** (``make_view(kind)`` fitted, then ``transform`` of one input): p50 and
   p90 over ``--reps`` calls of one row (cycling through 256 different inputs), and
   the per-row cost inside a batch of those 256, for the issue's four targets: a 30-column record (a dict of the breast-cancer
   features; target <= 20 µs), a 200-character text (<= 20 µs), a 28x28 image
   (<= 30 µs) and a 384-d embedding (<= 20 µs).
2. **Quality** per kind, on each example's own edge cases, over ``--seeds``
   random splits (each seed redraws the train/calibration/test split and the edge
   cases; figures are mean ± std across seeds):

   - numbers: breast-cancer rows as a matrix (the tabular example), edge cases = one
     corruption per row (unit error x1000, dead sensor at 0, sign flip, swapped
     features, a missing value);
   - records: the same rows as a DataFrame of 30 named columns plus a categorical
     ``site``; edge cases = the same corruptions, and a site never seen in training;
   - array: the digits example (8x8 images), edge cases = blank, negative,
     shifted off-centre, letters, noise (``services.train_digits.edge_cases``);
   - text: the sentiment example (pydoc prose), edge cases = empty, capitals
     only, pasted HTML (``services.train_sentiment.edge_cases``);
   - embedding: 384-d unit embeddings of the sentiment texts (TF-IDF of character
     n-grams, reduced by SVD, fitted on the training texts), edge cases = the
     embeddings of the text edge cases (an empty text: the zero vector), of word salad
     drawn from VADER's lexicon, and held-out texts embedded by another model (word
     TF-IDF + SVD: same texts, another space).

   The guard's default (``build_profile(samples, view=kind)``: tail + Mahalanobis
   combined, conformal p-values) beside IsolationForest, kNN (mean distance to the
   5 nearest training rows) and PyOD's ECOD fitted on the *same* view features and
   calibrated the same way (conformal p-values on held-out calibration rows). A row
   is flagged at p <= 0.01 (the examples' ``edge_fpr``). Reported: the clean flag
   rate (held-out inputs flagged), the true-positive rate (edge cases flagged,
   per case and pooled) and AUROC (held-out vs all edge cases).

Every data set ships inside an installed package (scikit-learn, the standard
library, vaderSentiment); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ALPHA = 0.01
TARGETS_US = {"records": 20.0, "text": 20.0, "array": 30.0, "embedding": 20.0}


# -- helpers ------------------------------------------------------------------------------------

def timed(f: Callable[[], Any], reps: int) -> tuple[float, float]:
    """(p50, p90) in µs of ``f()`` over ``reps`` calls after a warm-up."""
    for _ in range(min(200, reps)):
        f()
    ts = np.empty(reps)
    for i in range(reps):
        t0 = time.perf_counter_ns()
        f()
        ts[i] = time.perf_counter_ns() - t0
    return float(np.median(ts)) / 1000, float(np.quantile(ts, 0.9)) / 1000


def take(samples: Any, idx: np.ndarray) -> Any:
    if isinstance(samples, np.ndarray):
        return samples[idx]
    if hasattr(samples, "iloc"):
        return samples.iloc[idx].reset_index(drop=True)
    return [samples[i] for i in idx]


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    s = np.nan_to_num(np.r_[neg, pos], nan=np.finfo(float).max, posinf=np.finfo(float).max)
    return float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], s))


# -- data: (training samples, held-out samples, edge cases by name) per kind, per seed -------------

def _cancer(seed: int) -> tuple[np.ndarray, np.ndarray, list[str], np.random.Generator]:
    from sklearn.datasets import load_breast_cancer

    bc = load_breast_cancer()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(bc.data))
    return bc.data[idx[:430]], bc.data[idx[430:]], [n.replace(" ", "_") for n in bc.feature_names], rng


CORRUPTIONS = ("unit_x1000", "stuck", "sign_flip", "swap", "missing")


def numbers_data(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    from _edge_data import corrupt

    train, test, _, rng = _cancer(seed)
    # a missing value is refused by the numbers view (HTTP 400) before any detector: not scored here
    return train, test, {k: corrupt(test, k, rng) for k in CORRUPTIONS if k != "missing"}


def records_data(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    """The cancer rows as records with a categorical ``site`` column; one more edge case: a site never seen."""
    import pandas as pd

    from _edge_data import corrupt

    train, test, names, rng = _cancer(seed)
    sites = np.array(["north", "south", "east"])

    def frame(X: np.ndarray, site: Any = None) -> Any:
        df = pd.DataFrame(X, columns=names)
        df["site"] = sites[rng.choice(3, len(X), p=[0.5, 0.3, 0.2])] if site is None else site
        return df

    edge = {k: frame(corrupt(test, k, rng)) for k in CORRUPTIONS}
    edge["unseen site"] = frame(test, "west")
    return frame(train), frame(test), edge


def array_data(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    from services import train_digits

    X_train, X_test, _, _ = train_digits.load_split(seed)
    half = len(X_test) // 2
    return X_train, X_test[:half], train_digits.edge_cases(X_test[half:], n=100, seed=seed)


def text_data(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    from services import train_sentiment

    train, test = train_sentiment.load_split(seed)
    half = len(test) // 2
    return train, test[:half], train_sentiment.edge_cases(test[half:], n=100, seed=seed)


class TextEmbedder:
    """A small text embedding fitted on the training texts: TF-IDF of character 2-4-grams (or words)
    -> SVD (384-d) -> unit length (an empty text embeds as the zero vector)."""

    def __init__(self, texts: list[str], dim: int = 384, seed: int = 0, analyzer: str = "char_wb") -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.tfidf = TfidfVectorizer(analyzer=analyzer, ngram_range=(2, 4) if analyzer == "char_wb" else (1, 1),
                                     min_df=2 if analyzer == "char_wb" else 1, lowercase=False)
        self.svd = TruncatedSVD(dim, random_state=seed).fit(self.tfidf.fit_transform(texts))

    def __call__(self, texts: list[str]) -> np.ndarray:
        Z = self.svd.transform(self.tfidf.transform(texts))
        return Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)


def word_salad(n: int, rng: np.random.Generator) -> list[str]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    words = sorted(SentimentIntensityAnalyzer().lexicon)
    return [" ".join(words[i] for i in rng.integers(0, len(words), rng.integers(8, 30))) for _ in range(n)]


def embedding_data(seed: int) -> tuple[Any, Any, dict[str, Any]]:
    train, test, edge = text_data(seed)
    emb = TextEmbedder(train, seed=seed)
    other = TextEmbedder(train, seed=seed + 1000, analyzer="word")  # another model: same texts, other space
    edge = {k: emb(v) for k, v in edge.items()}
    edge["word salad"] = emb(word_salad(100, np.random.default_rng(seed)))
    edge["other embedder"] = other(test[len(test) // 2:][:100])
    return emb(train), emb(test[:len(test) // 2]), edge


def example_text_view(train: list[str], seed: int) -> Any:
    from services import train_sentiment

    return train_sentiment.text_view(train, seed)


#: row label -> (data, the view given to build_profile: a kind, or a factory (train, seed) -> fitted view)
KINDS: dict[str, tuple[Callable[[int], tuple[Any, Any, dict[str, Any]]], Any]] = {
    "numbers": (numbers_data, "numbers"),
    "records": (records_data, "records"),
    "array": (array_data, "array"),
    "text": (text_data, "text"),
    "text+markup": (text_data, example_text_view),  # the sentiment example's view (services.train_sentiment)
    "embedding": (embedding_data, "embedding"),
}


# -- detectors on the view's features ----------------------------------------------------------

class Baseline:
    """IsolationForest / kNN / ECOD behind one ``outlyingness`` (higher = more unusual)."""

    def __init__(self, name: str, seed: int) -> None:
        self.name, self.seed = name, seed

    def fit(self, F: np.ndarray) -> Baseline:
        self.mean_ = np.nanmean(F, axis=0)
        sd = np.nanstd(F, axis=0)
        self.scale_ = np.where(sd > 0, sd, 1.0)  # a constant training feature keeps its raw units
        F = self._prep(F)
        if self.name == "IsolationForest":
            from sklearn.ensemble import IsolationForest

            m = IsolationForest(random_state=self.seed).fit(F)
            self.f = lambda Z: -m.score_samples(Z)
        elif self.name == "kNN":
            from sklearn.neighbors import NearestNeighbors

            nn = NearestNeighbors(n_neighbors=5).fit(F)
            self.f = lambda Z: nn.kneighbors(Z)[0].mean(axis=1)
        else:
            from pyod.models.ecod import ECOD

            m = ECOD().fit(F)
            self.f = m.decision_function
        return self

    def _prep(self, F: np.ndarray) -> np.ndarray:  # standardised, NaN -> the training mean
        F = np.where(np.isnan(F), self.mean_, F)
        return np.clip((F - self.mean_) / self.scale_, -1e6, 1e6)

    def outlyingness(self, F: np.ndarray) -> np.ndarray:
        return self.f(self._prep(F))


def quality_one(kind: str, seed: int) -> dict[str, dict[str, Any]]:
    """One seed: {detector: {"clean": rate, "tpr": {case: rate}, "pooled": rate, "auroc": x}}."""
    from guarded_serving.edge_cases import ConformalCalibrator, build_profile

    data, view = KINDS[kind]
    train, test, edge = data(seed)
    prof = build_profile(train, view=view if isinstance(view, str) else view(train, seed),
                         calibration_fraction=0.3, seed=seed)
    view = prof.view  # the view serving computes
    F_test = view.transform(test)
    F_edge = {k: view.transform(v) for k, v in edge.items()}
    out: dict[str, dict[str, Any]] = {}

    def score(name: str, outl: Callable[[np.ndarray], np.ndarray], cal: ConformalCalibrator) -> None:
        s_test = outl(F_test)
        s_edge = {k: outl(F) for k, F in F_edge.items()}
        flag = lambda s: float((cal.p_values(np.nan_to_num(s, nan=np.inf)) <= ALPHA).mean())
        pooled = np.concatenate(list(s_edge.values()))
        out[name] = {"clean": flag(s_test), "tpr": {k: flag(s) for k, s in s_edge.items()},
                     "pooled": flag(pooled), "auroc": auroc(s_test, pooled)}

    score("guard default", prof.detector("combined").outlyingness, prof.calibrator("combined"))
    n = (len(train))
    idx = np.random.default_rng(seed).permutation(n)
    cut = int(0.7 * n)
    F_fit, F_cal = view.transform(take(train, idx[:cut])), view.transform(take(train, idx[cut:]))
    for name in ("IsolationForest", "kNN", "PyOD ECOD"):
        b = Baseline(name, seed).fit(F_fit)
        score(name, b.outlyingness, ConformalCalibrator(np.nan_to_num(b.outlyingness(F_cal), posinf=1e300)))
    return out


# -- cost --------------------------------------------------------------------------------------

def cost_inputs(rng: np.random.Generator) -> list[tuple[str, str, Any, Any]]:
    """(label, kind, fitting samples, 256 inputs) per measured input."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer

    from services import train_sentiment

    bc = load_breast_cancer()
    names = [n.replace(" ", "_") for n in bc.feature_names]
    frame = pd.DataFrame(bc.data, columns=names)
    texts = train_sentiment.corpus()
    long = [t[:200] for t in texts if len(t) >= 200]
    images = rng.uniform(0, 1, (500, 28, 28))
    emb = rng.normal(size=(2000, 384))
    return [
        ("30-column record (dict)", "records", frame, frame.to_dict("records")[:256]),
        ("200-char text, ASCII", "text", texts, [t for t in long if t.isascii()][:256]),
        ("200-char text, non-ASCII", "text", texts, [t for t in long if not t.isascii()][:256]),
        ("28x28 image", "array", images, images[:256]),
        ("384-d embedding", "embedding", emb, emb[:256]),
    ]


def bench_cost(reps: int) -> dict[str, tuple[float, float, float]]:
    from guarded_serving.views import make_view

    rng = np.random.default_rng(0)
    out = {}
    print(f"\nview cost (transform), µs: one input p50 / p90 over {reps} calls (cycling through 256 inputs); "
          f"per row in a batch of 256 (median of {max(reps // 50, 20)} batches)")
    print(f"  {'kind':<10} {'input':<26} {'p50':>8} {'p90':>8} {'batch/row':>10} {'target':>7}")
    for label, kind, fit, batch in cost_inputs(rng):
        view = make_view(kind).fit(fit)
        items = [batch[i:i + 1] for i in range(len(batch))]
        it = iter(range(1 << 62))
        p50, p90 = timed(lambda: view.transform(items[next(it) % len(items)]), reps)
        b50, _ = timed(lambda: view.transform(batch), max(reps // 50, 20))
        out[label] = (p50, p90, b50 / len(batch))
        ok = "ok" if p50 <= TARGETS_US[kind] else "OVER"
        print(f"  {kind:<10} {label:<26} {p50:8.1f} {p90:8.1f} {b50 / len(batch):10.2f} "
              f"{TARGETS_US[kind]:6.0f} {ok}", flush=True)
    return out


# -- main --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=20, help="random splits per kind (quality)")
    ap.add_argument("--reps", type=int, default=3000, help="timed calls per view (cost)")
    ap.add_argument("--quick", action="store_true", help="3 seeds, 500 repetitions")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.reps = 3, 500
    t_start = time.monotonic()
    if not args.skip_cost:
        bench_cost(args.reps)
    kinds = [] if args.skip_quality else [k for k in args.kinds.split(",") if k]
    if kinds:
        print(f"\nedge-case quality per kind, flag at conformal p <= {ALPHA}, mean ± std over {args.seeds} seeds")
        print(f"  {'kind':<11} {'detector':<16} {'clean flag rate':>16} {'TPR (pooled)':>14} {'AUROC':>14}   "
              "TPR per edge case")
    for kind in kinds:
        runs = [quality_one(kind, seed) for seed in range(args.seeds)]
        for det in runs[0]:
            clean = np.array([r[det]["clean"] for r in runs])
            pooled = np.array([r[det]["pooled"] for r in runs])
            au = np.array([r[det]["auroc"] for r in runs])
            cases = ", ".join(f"{k} {np.mean([r[det]['tpr'][k] for r in runs]):.0%}" for k in runs[0][det]["tpr"])
            print(f"  {kind:<11} {det:<16} {clean.mean():8.2%} ± {clean.std():5.2%} {pooled.mean():7.1%} ± "
                  f"{pooled.std():4.1%} {au.mean():6.3f} ± {au.std():.3f}   {cases}", flush=True)
    print(f"\ntotal run time {time.monotonic() - t_start:.0f} s")


if __name__ == "__main__":
    main()
