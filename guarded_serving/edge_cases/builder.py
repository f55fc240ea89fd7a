"""Build a reference profile from training data in one streaming pass, in bounded memory.

Rows arrive in chunks (:meth:`ProfileBuilder.update`). Each row goes, at
random, to the calibration split (``calibration_fraction``) or the fitting
split; or, with ``held_out_calibration=True``, every row is a fitting row and
the calibration rows come from :meth:`ProfileBuilder.update_calibration` (an
explicit held-out set, e.g. a later time period). Over every fitting row the builder keeps exact streaming statistics:
count, minimum, maximum, missing counts, category counts and the mean and
scatter matrix of the numeric columns (Chan's pairwise merge; a missing value
is imputed with its chunk's mean there). Quantiles, the Ledoit-Wolf intensity
and the reference subsample come from a uniform bottom-k sample of at most
``sample_size`` fitting rows; the calibration rows are a uniform sample of at
most ``calibration_size``. Memory is O((sample_size + calibration_size +
chunk) x features) whatever the number of rows.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from .combined import PARTS, TAIL_THRESHOLD, CombinedDetector, part_nulls
from .copula import CopulaDetector
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector, shrunk_covariance
from .profile import _NULLS, Profile, new_header
from .tail import DEFAULT_LEVELS, TailDetector, quantile_grid

__all__ = ["ProfileBuilder", "build_profile"]


class _BottomK:
    """Uniform sample of at most ``k`` rows: keep the rows with the smallest random keys."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.keys = np.zeros(0)
        self.rows: np.ndarray | None = None
        self.preds: np.ndarray | None = None

    def add(self, keys: np.ndarray, rows: np.ndarray, preds: np.ndarray | None) -> None:
        if not len(keys):
            return
        if self.rows is None:
            keys_, rows_, preds_ = keys, rows, preds
        else:
            keys_ = np.concatenate([self.keys, keys])
            rows_ = np.concatenate([self.rows, rows])
            preds_ = None if preds is None or self.preds is None else np.concatenate([self.preds, preds])
        if len(keys_) > self.k:
            keep = np.argpartition(keys_, self.k - 1)[:self.k]
            keys_, rows_ = keys_[keep], rows_[keep]
            preds_ = None if preds_ is None else preds_[keep]
        self.keys, self.rows, self.preds = keys_, np.ascontiguousarray(rows_), preds_

    def ordered(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Rows (and predictions) in random-key order: any prefix is itself a uniform sample."""
        if self.rows is None:
            return np.zeros((0, 0)), None
        o = np.argsort(self.keys)
        return self.rows[o], None if self.preds is None else self.preds[o]


class ProfileBuilder:
    """Accumulate a profile chunk by chunk.

    Parameters
    ----------
    n_features : int
    feature_names : sequence of str, optional
        Default ``f0, f1, ...``.
    categorical : sequence of int, default=()
        Indices of categorical columns (numeric codes).
    calibration_fraction : float, default=0.2
        Share of rows held out for calibration.
    sample_size : int, default=100000
        Fitting rows kept for quantiles and the shrinkage intensity.
    calibration_size : int, default=20000
        Calibration rows kept.
    reference_size : int, default=5000
        Rows stored as the reference subsample (kNN detector, drift baselines).
    knn_neighbors : int, default=5
    seed : int, default=0
    max_categories : int, default=10000
        A categorical column with more distinct codes than this is an error.
    held_out_calibration : bool, default=False
        Every row given to :meth:`update` fits the detectors; calibration rows come only
        from :meth:`update_calibration` (``calibration_fraction`` is then unused).
    """

    def __init__(self, n_features: int, *, feature_names: Sequence[str] | None = None,
                 categorical: Sequence[int] = (), calibration_fraction: float = 0.2, sample_size: int = 100_000,
                 calibration_size: int = 20_000, reference_size: int = 5_000, knn_neighbors: int = 5,
                 seed: int = 0, max_categories: int = 10_000, source: str = "",
                 held_out_calibration: bool = False) -> None:
        if not isinstance(n_features, int) or n_features < 1:
            raise ConfigError(f"n_features={n_features!r} is invalid: expected an integer >= 1")
        names = [f"f{i}" for i in range(n_features)] if feature_names is None else [str(n) for n in feature_names]
        if len(names) != n_features:
            raise ConfigError(f"feature_names has {len(names)} names for {n_features} features")
        cat = sorted(set(int(c) for c in categorical))
        if cat and (cat[0] < 0 or cat[-1] >= n_features):
            raise ConfigError(f"categorical={list(categorical)!r} is invalid: expected indices in 0..{n_features - 1}")
        if not 0 < calibration_fraction < 1:
            raise ConfigError(f"calibration_fraction={calibration_fraction!r} is invalid: expected a fraction in (0, 1)")
        self.n_features, self.feature_names, self.categorical = n_features, names, cat
        self.num = np.setdiff1d(np.arange(n_features), np.array(cat, dtype=np.intp))
        self.calibration_fraction = calibration_fraction
        self.reference_size, self.knn_neighbors = reference_size, knn_neighbors
        self.max_categories, self.source = max_categories, source
        self._rng = np.random.default_rng(seed)
        self._seed = seed
        self._fit = _BottomK(sample_size)
        self._cal = _BottomK(calibration_size)
        self.held_out_calibration = bool(held_out_calibration)
        self.n_rows = 0
        self.n_total = 0
        self.n_calibration_seen = 0
        self._cal_missing = np.zeros(n_features)
        self._min = np.full(n_features, np.inf)
        self._max = np.full(n_features, -np.inf)
        self._missing = np.zeros(n_features)
        self._cats: dict[int, dict[float, int]] = {j: {} for j in cat}
        q = len(self.num)
        self._mean = np.zeros(q)
        self._m2 = np.zeros((q, q))

    def update(self, X: np.ndarray, predictions: np.ndarray | None = None) -> None:
        """Add a chunk of rows (float array (n, n_features); NaN = missing) and optional predictions."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ConfigError(f"expected rows of {self.n_features} features, got an array of shape {X.shape}")
        if np.isinf(X).any():
            r, c = np.argwhere(np.isinf(X))[0]
            raise ConfigError(f"row {self.n_total + int(r)}, feature {self.feature_names[c]!r} is infinite; "
                              "training data must be finite (NaN marks a missing value)")
        if predictions is not None:
            predictions = np.asarray(predictions)
            if len(predictions) != len(X):
                raise ConfigError(f"predictions have {len(predictions)} rows for {len(X)} data rows")
        n = len(X)
        self.n_total += n
        to_cal = self._rng.random(n) < self.calibration_fraction
        if self.held_out_calibration:
            to_cal[:] = False
        keys = self._rng.random(n)
        sel = lambda a, m: None if a is None else a[m]  # noqa: E731
        self._add_calibration(keys[to_cal], X[to_cal])
        fit = ~to_cal
        Xf = X[fit]
        self._fit.add(keys[fit], Xf, sel(predictions, fit))
        if not len(Xf):
            return
        nan = np.isnan(Xf)
        self._missing += nan.sum(axis=0)
        with np.errstate(all="ignore"):
            self._min = np.fmin(self._min, np.nanmin(np.where(nan, np.inf, Xf), axis=0))
            self._max = np.fmax(self._max, np.nanmax(np.where(nan, -np.inf, Xf), axis=0))
        for j, counts in self._cats.items():
            vals, cnt = np.unique(Xf[:, j][~nan[:, j]], return_counts=True)
            for v, c in zip(vals.tolist(), cnt.tolist()):
                counts[v] = counts.get(v, 0) + c
            if len(counts) > self.max_categories:
                raise ConfigError(f"categorical feature {self.feature_names[j]!r} has more than "
                                  f"{self.max_categories} distinct codes: is it really categorical?")
        Xn = Xf[:, self.num]
        if nan[:, self.num].any():
            with np.errstate(all="ignore"):
                cm = np.nanmean(Xn, axis=0)
            Xn = np.where(np.isnan(Xn), np.where(np.isnan(cm), 0.0, cm), Xn)
        m = len(Xn)
        cmean = Xn.mean(axis=0)
        D = Xn - cmean
        cm2 = D.T @ D
        tot = self.n_rows + m
        delta = cmean - self._mean
        self._m2 += cm2 + np.outer(delta, delta) * (self.n_rows * m / tot)
        self._mean += delta * (m / tot)
        self.n_rows = tot

    def update_calibration(self, X: np.ndarray) -> None:
        """Add a chunk of held-out calibration rows (needs ``held_out_calibration=True``)."""
        if not self.held_out_calibration:
            raise ConfigError("update_calibration needs ProfileBuilder(held_out_calibration=True); otherwise the "
                              "calibration rows are drawn from the training rows")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ConfigError(f"expected calibration rows of {self.n_features} features, got an array of shape "
                              f"{X.shape}")
        if np.isinf(X).any():
            r, c = np.argwhere(np.isinf(X))[0]
            raise ConfigError(f"calibration row {self.n_calibration_seen + int(r)}, feature "
                              f"{self.feature_names[c]!r} is infinite; calibration data must be finite")
        self._add_calibration(self._rng.random(len(X)), X)

    def _add_calibration(self, keys: np.ndarray, X: np.ndarray) -> None:
        self.n_calibration_seen += len(X)
        if len(X):
            self._cal_missing += np.isnan(X).sum(axis=0)
        self._cal.add(keys, X, None)

    def finish(self) -> Profile:
        """Fit the detectors on the accumulated statistics and score the calibration rows."""
        if self.n_rows < 2:
            raise ConfigError(f"too little data: {self.n_rows} fitting rows (need at least 2)")
        cal, _ = self._cal.ordered()
        if len(cal) < 1:
            raise ConfigError("no calibration rows: give held-out rows (update_calibration / --calibration)"
                              if self.held_out_calibration else
                              "no calibration rows: the data set is too small for the calibration fraction")
        p, num, n = self.n_features, self.num, self.n_rows
        sample, spred = self._fit.ordered()
        levels = DEFAULT_LEVELS
        q, _, _ = quantile_grid(sample, levels)
        allnan = self._missing >= n
        mn = np.where(allnan, 0.0, self._min)
        mx = np.where(allnan, 0.0, self._max)
        # missing rates over every row seen (fitting and calibration): NaN is accepted where any had one
        missing = (self._missing + self._cal_missing) / (n + self.n_calibration_seen)
        cats = {}
        for j, counts in self._cats.items():
            vals = np.array(sorted(counts), dtype=np.float64)
            cats[j] = (vals, np.array([counts[v] for v in vals.tolist()], dtype=np.float64) / n)
        mean = self._mean.copy()
        cov = self._m2 / max(n - 1, 1)
        Sn = sample[:, num]
        Sn = np.where(np.isnan(Sn), mean, Sn)
        shrunk, shrink = shrunk_covariance(mean, cov, Sn)
        std = np.sqrt(np.maximum(np.diag(cov), 0.0))
        ref = sample[:self.reference_size]
        ref_pred = None if spred is None else spred[:self.reference_size]

        state = dict(n_samples=n, levels=levels, quantiles=q, minimum=mn, maximum=mx, missing_rate=missing,
                     categories=cats)
        tail = TailDetector(categorical=self.categorical)._set_state(**state)
        # the default combination's tail part counts only values rarer than 1 in 100
        tail_part = TailDetector(categorical=self.categorical, threshold=TAIL_THRESHOLD)._set_state(**state)
        mah = MahalanobisDetector(categorical=self.categorical)._set_state(
            n_features=p, columns=num, location=mean, covariance=shrunk, shrinkage=shrink)
        knn = KNNDetector(categorical=self.categorical, n_neighbors=self.knn_neighbors)._set_state(
            reference=ref, columns=num, location=mean, scale=std)
        cop = CopulaDetector(categorical=self.categorical).set_marginals(
            n_samples=n, levels=levels, quantiles=q, minimum=mn, maximum=mx, missing_rate=missing).fit_covariance(sample)
        parts = ["tail", "mahalanobis"]
        cal_scores = {"tail": tail.outlyingness(cal), "mahalanobis": mah.outlyingness(cal),
                      "knn": knn.outlyingness(cal), "tail_part": tail_part.outlyingness(cal),
                      "copula": cop.outlyingness(cal)}
        # each part's null, from fitting rows only: out-of-fold scores (kNN: leave-one-out on its reference)
        nulls = part_nulls(sample, {"tail": tail_part, "mahalanobis": mah, "knn": knn, "copula": cop},
                           CombinedDetector(categorical=self.categorical).fit_parts, random_state=self._seed)
        comb = CombinedDetector.from_parts({"tail": tail_part, "mahalanobis": mah},
                                           np.column_stack([cal_scores["tail_part"], cal_scores["mahalanobis"]]),
                                           nulls, categorical=self.categorical)
        arrays: dict[str, np.ndarray] = {
            "levels": levels, "quantiles": q, "minimum": mn, "maximum": mx, "missing_rate": missing,
            "cat_values": np.concatenate([cats[j][0] for j in self.categorical]) if cats else np.zeros(0),
            "cat_freqs": np.concatenate([cats[j][1] for j in self.categorical]) if cats else np.zeros(0),
            "cat_offsets": np.cumsum([0] + [len(cats[j][0]) for j in self.categorical]).astype(np.int64),
            "mean": mean, "covariance": shrunk, "std": std, "reference": np.ascontiguousarray(ref),
            "cal_tail": cal_scores["tail"], "cal_mahalanobis": cal_scores["mahalanobis"],
            "cal_knn": cal_scores["knn"], "cal_tail_part": cal_scores["tail_part"],
            "cal_combined": comb.calibration_scores_,
            **{f"null_{key}": nulls[part].knots() for key, part in zip(_NULLS, PARTS)},
            "null_beta": np.array([nulls[part].beta for part in PARTS]),
            "copula_mean": cop.location_, "copula_covariance": cop.covariance_,
            "copula_shrinkage": np.array([cop.shrinkage_]), "cal_copula": cal_scores["copula"],
        }
        if ref_pred is not None:
            arrays["reference_predictions"] = np.ascontiguousarray(ref_pred)
        header = new_header(
            n_features=p, feature_names=self.feature_names, categorical=list(self.categorical), n_rows=int(n),
            n_calibration=int(len(cal)), n_rows_total=int(self.n_total), shrinkage=float(shrink),
            knn_neighbors=int(self.knn_neighbors), source=self.source,
            calibration="held out" if self.held_out_calibration else f"random {self.calibration_fraction:g} of rows",
            combined={"parts": parts, "tail_threshold": TAIL_THRESHOLD, "method": "null-evidence"})
        return Profile(header, arrays)


def build_profile(X: Any, *, predictions: Any = None, feature_names: Sequence[str] | None = None,
                  categorical: Sequence[int] = (), chunk_rows: int = 100_000, view: Any = None,
                  calibration: Any = None, **options: Any) -> Profile:
    """Build a profile from in-memory training data (see :class:`ProfileBuilder` for ``options``).

    ``view`` (a kind such as ``"text"``, ``"records"``, ``"array"``, ``"embedding"``, or an
    :class:`~guarded_serving.views.InputView`) reads raw samples (texts, records, images,
    vectors) into monitored features first; it is fitted on ``X`` unless already fitted, and
    stored in the profile so serving computes the same features.

    ``calibration`` (held-out rows, or raw samples for a view) calibrates the p-values
    instead of a random ``calibration_fraction`` of ``X``: every row of ``X`` then fits.
    """
    fitted_view = None
    if view is not None:
        from ..views import make_view

        fitted_view = make_view(view)
        if not hasattr(fitted_view, "feature_names_"):  # not fitted yet
            fitted_view.fit(X)
        X = fitted_view.transform(X, "training data")
        if calibration is not None:
            calibration = fitted_view.transform(calibration, "calibration data")
        feature_names = feature_names or fitted_view.feature_names_
        categorical = tuple(sorted(set(categorical) | set(fitted_view.categorical_)))
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ConfigError(f"training data must be 2-D (rows x features), got shape {X.shape}: pass view= for "
                          "texts, records, images or other arrays")
    b = ProfileBuilder(X.shape[1], feature_names=feature_names, categorical=categorical,
                       held_out_calibration=calibration is not None, **options)
    pred = None if predictions is None else np.asarray(predictions)
    for i in range(0, len(X), chunk_rows):
        b.update(X[i:i + chunk_rows], None if pred is None else pred[i:i + chunk_rows])
    if calibration is not None:
        C = np.asarray(calibration, dtype=np.float64)
        for i in range(0, len(C), chunk_rows):
            b.update_calibration(C[i:i + chunk_rows])
    prof = b.finish()
    if fitted_view is not None:
        prof.set_view(fitted_view)
    return prof
