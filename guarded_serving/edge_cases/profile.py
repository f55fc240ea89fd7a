"""The reference profile: what the edge-case detectors learned from training data, and its file format.

File format ``guarded-serving-profile/3``
-----------------------------------------
One NumPy ``.npz`` archive (no pickles; loaded with ``allow_pickle=False``):

``header``
    A 0-d unicode array holding a JSON object:
    ``format`` ("guarded-serving-profile/3"), ``created`` (UTC ISO time),
    ``n_features``, ``feature_names``, ``categorical`` (column indices),
    ``n_rows`` (rows the detectors were fitted on), ``n_calibration`` (held-out
    rows behind the calibration scores), ``n_rows_total``, ``shrinkage``
    (Ledoit-Wolf intensity), ``knn_neighbors``, ``combined`` (``parts`` of the
    default detector, ``tail_threshold`` of its tail part, ``method``
    "null-evidence"), ``calibration`` (how the calibration rows were chosen:
    a random fraction of the rows, or held out), ``source`` (free text),
    ``content_sha256`` (SHA-256 over every array below, in name order: name,
    dtype, shape and bytes), and ``has_reference_predictions``.
``levels`` (n_levels,), ``quantiles`` (n_features, n_levels)
    Per-feature quantiles of the fitting rows (from a uniform sample of at
    most ``sample_size`` rows).
``minimum``, ``maximum`` (n_features,)
    Exact over all fitting rows.
``missing_rate`` (n_features,)
    Share of rows (fitting and calibration) with a missing value (NaN) in each
    feature: serving accepts NaN exactly where it is above 0.
``cat_values``, ``cat_freqs``, ``cat_offsets``
    Category codes and frequencies of categorical column ``categorical[i]``
    are ``cat_values[cat_offsets[i]:cat_offsets[i+1]]``.
``mean`` (n_numeric,), ``covariance`` (n_numeric, n_numeric), ``std`` (n_numeric,)
    Mean, Ledoit-Wolf shrunk covariance and standard deviation of the numeric
    (non-categorical) columns, from streaming sums over all fitting rows.
``reference`` (n_reference, n_features), ``reference_predictions`` (n_reference, ...)
    A uniform subsample of the fitting rows (kNN detector, drift baselines)
    and, if given, the model's predictions on those rows.
``cal_tail``, ``cal_mahalanobis``, ``cal_knn``, ``cal_tail_part``, ``cal_combined`` (n_calibration,)
    Each detector's outlyingness on the held-out calibration rows, in one row
    order (aligned across detectors, so any combination of parts can be
    calibrated): ``cal_tail_part`` is the thresholded tail part of combinations,
    ``cal_combined`` the default combination's outlyingness (:mod:`.combined`).
``null_tail_part``, ``null_mahalanobis``, ``null_knn`` (2, n_knots), ``null_beta`` (3,) or (4,)
    Each combinable part's null, from out-of-fold scores of fitting rows (never the
    calibration rows): distinct scores and the log of the share of rows at or above
    each, and the scale of the exponential tail past the largest (in that order, then
    the copula part's).
``copula_mean`` (n_used,), ``copula_covariance`` (n_used, n_used), ``copula_shrinkage`` (1,),
``cal_copula`` (n_calibration,), ``null_copula`` (2, n_knots)
    The copula detector (:mod:`.copula`; n_used: the numeric columns not missing in every
    row): the mean and shrunk covariance of the fitting rows' normal scores (its per-feature
    tables come from ``levels`` and ``quantiles``), its calibration scores and its null. Written since the copula part was added; a file
    without them serves every other detector, and asking it for ``"copula"`` says to
    rebuild it.

Categorical features are numeric codes in the feature matrix (e.g. 0, 1, 2);
the profile records which codes training saw and how often.

The file's own SHA-256 (``Profile.sha256``) is what a deployment manifest
records; ``content_sha256`` lets ``load`` detect a corrupt or edited file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .combined import CombinedDetector, NullTail, parse_parts
from .conformal import ConformalCalibrator
from .copula import CopulaDetector
from .knn import KNNDetector
from .mahalanobis import MahalanobisDetector
from .tail import TailDetector

__all__ = ["FORMAT", "DETECTORS", "Profile", "ProfileError", "load_profile"]

FORMAT = "guarded-serving-profile/3"
DETECTORS = ("combined", "tail", "mahalanobis", "knn", "copula")
_ARRAYS = ("levels", "quantiles", "minimum", "maximum", "missing_rate", "cat_values", "cat_freqs", "cat_offsets",
           "mean", "covariance", "std", "reference", "cal_tail", "cal_mahalanobis", "cal_knn", "cal_tail_part",
           "cal_combined",
           "null_tail_part", "null_mahalanobis", "null_knn", "null_beta")
_NULLS = ("tail_part", "mahalanobis", "knn", "copula")
_COPULA = ("copula_mean", "copula_covariance", "copula_shrinkage", "cal_copula", "null_copula")


class ProfileError(ConfigError):
    """A profile file is missing, corrupt, of an unknown format, or does not match the model."""


@dataclass
class Profile:
    """A loaded (or freshly built) reference profile. See the module docstring for the fields."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]
    sha256: str | None = None
    path: str | None = None
    _detectors: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- the contract other components rely on ----------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return list(self.header["feature_names"])

    @property
    def categorical(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.header["categorical"])

    @property
    def n_features(self) -> int:
        return int(self.header["n_features"])

    @property
    def reference(self) -> np.ndarray:
        return self.arrays["reference"]

    @property
    def reference_predictions(self) -> np.ndarray | None:
        return self.arrays.get("reference_predictions")

    @property
    def view(self) -> Any:
        """The fitted input view the profile was built through (:mod:`guarded_serving.views`),
        or None for a plain numeric matrix. Serving applies it to compute the same features."""
        if "view" not in self.header:
            return None
        if "_view" not in self._detectors:
            from ..views import view_from_state

            arrays = {k[len("view."):]: v for k, v in self.arrays.items() if k.startswith("view.")}
            self._detectors["_view"] = view_from_state(self.header["view"], arrays)
        return self._detectors["_view"]

    def set_view(self, view: Any) -> None:
        """Record the fitted ``view`` (its settings go in the header, its arrays beside the others)."""
        state, arrays = view.get_state()
        self.header = dict(self.header, view=state)
        for k in [k for k in self.arrays if k.startswith("view.")]:
            del self.arrays[k]
        self.arrays.update({f"view.{k}": np.asarray(v) for k, v in arrays.items()})
        self._detectors["_view"] = view

    @property
    def missing_rate(self) -> np.ndarray:
        return self.arrays["missing_rate"]

    @property
    def n_calibration(self) -> int:
        return int(self.header["n_calibration"])

    def categories(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Categorical column -> (codes, frequencies)."""
        off = self.arrays["cat_offsets"]
        v, f = self.arrays["cat_values"], self.arrays["cat_freqs"]
        return {c: (v[off[i]:off[i + 1]], f[off[i]:off[i + 1]]) for i, c in enumerate(self.categorical)}

    # -- detectors ------------------------------------------------------------------------
    def detector(self, name: str = "combined") -> Any:
        """The fitted detector ``name`` (one of ``DETECTORS``, or parts joined by ``+`` such as
        ``"tail+mahalanobis+knn"``), built once from the stored state."""
        if name not in DETECTORS and parse_parts(name) is None:
            raise ConfigError(f"edge_detector={name!r} is invalid: expected one of {DETECTORS}, or parts joined "
                              "by '+' (e.g. 'tail+mahalanobis+knn')")
        self._check_copula(name)
        if name not in self._detectors:
            self._detectors[name] = self._build(name)
        return self._detectors[name]

    def calibrator(self, name: str = "combined") -> ConformalCalibrator:
        """Conformal p-values against the stored calibration scores of ``name``."""
        self._check_copula(name)
        if name == "combined":
            return ConformalCalibrator(self.arrays["cal_combined"])
        if name in DETECTORS:
            return ConformalCalibrator(self.arrays[f"cal_{name}"])
        return ConformalCalibrator(self.detector(name).calibration_scores_)

    def _check_copula(self, name: str) -> None:
        if "copula" in (parse_parts(name) or (name,)) and any(k not in self.arrays for k in _COPULA):
            raise ProfileError(f"edge_detector={name!r} needs the copula part, which this profile lacks (built "
                               "before it was added): rebuild the profile with `guarded-serving profile`")

    def _build(self, name: str) -> Any:
        a, h = self.arrays, self.header
        p, cat = self.n_features, np.array(self.categorical, dtype=np.intp)
        num = np.setdiff1d(np.arange(p), cat)
        if name == "tail":
            return TailDetector(categorical=self.categorical)._set_state(
                n_samples=h["n_rows"], levels=a["levels"], quantiles=a["quantiles"], minimum=a["minimum"],
                maximum=a["maximum"], missing_rate=a["missing_rate"], categories=self.categories())
        if name == "mahalanobis":
            return MahalanobisDetector(categorical=self.categorical)._set_state(
                n_features=p, columns=num, location=a["mean"], covariance=a["covariance"], shrinkage=h["shrinkage"])
        if name == "copula":
            return CopulaDetector(categorical=self.categorical).set_marginals(
                n_samples=h["n_rows"], levels=a["levels"], quantiles=a["quantiles"], minimum=a["minimum"],
                maximum=a["maximum"], missing_rate=a["missing_rate"]).set_covariance(
                location=a["copula_mean"], covariance=a["copula_covariance"], shrinkage=float(a["copula_shrinkage"][0]))
        if name == "knn":
            return KNNDetector(categorical=self.categorical, n_neighbors=int(h["knn_neighbors"]))._set_state(
                reference=a["reference"], columns=num, location=a["mean"], scale=a["std"])
        parts_names = parse_parts(name) if name != "combined" else tuple(h["combined"]["parts"])
        threshold = float(h["combined"]["tail_threshold"])
        parts: dict[str, Any] = {}
        nulls: dict[str, NullTail] = {}
        cols = []
        for n in parts_names:  # type: ignore[union-attr]
            if n == "tail":  # combinations use the thresholded tail part
                parts[n] = TailDetector(categorical=self.categorical, threshold=threshold)._set_state(
                    n_samples=h["n_rows"], levels=a["levels"], quantiles=a["quantiles"], minimum=a["minimum"],
                    maximum=a["maximum"], missing_rate=a["missing_rate"], categories=self.categories())
                cols.append(a["cal_tail_part"])
            else:
                parts[n] = self.detector(n)
                cols.append(a[f"cal_{n}"])
            key = "tail_part" if n == "tail" else n
            nulls[n] = NullTail(a[f"null_{key}"], float(a["null_beta"][_NULLS.index(key)]))
        return CombinedDetector.from_parts(parts, np.column_stack(cols), nulls, categorical=self.categorical,
                                           tail_threshold=threshold)

    # -- file format -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the profile to ``path`` (``.npz``); returns the file's SHA-256."""
        header = dict(self.header, format=FORMAT, content_sha256=_content_hash(self.arrays),
                      has_reference_predictions="reference_predictions" in self.arrays)
        self.header = header
        buf = io.BytesIO()
        np.savez(buf, header=np.array(json.dumps(header, sort_keys=True)), **self.arrays)
        data = buf.getvalue()
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private: per-feature statistics
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.path = str(path)
        return self.sha256

    def summary(self) -> str:
        h = self.header
        kind = f"{h['view']['kind']} view, " if "view" in h else ""
        return (f"{FORMAT}: {kind}{h['n_features']} features ({len(h['categorical'])} categorical), fitted on "
                f"{h['n_rows']:,} rows, {h['n_calibration']:,} calibration rows, reference subsample "
                f"{len(self.reference):,} rows, Ledoit-Wolf shrinkage {h['shrinkage']:.3g}"
                + (", with reference predictions" if "reference_predictions" in self.arrays else ""))


def _content_hash(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and verify a profile file; :class:`ProfileError` says clearly what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"profile {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise ProfileError(f"profile {str(path)!r} is not a readable {FORMAT} file (.npz): {exc}") from None
    if "header" not in arrays:
        raise ProfileError(f"profile {str(path)!r} has no header: not a {FORMAT} file")
    try:
        header = json.loads(str(arrays.pop("header")))
    except ValueError as exc:
        raise ProfileError(f"profile {str(path)!r} has a corrupt header: {exc}") from None
    fmt = header.get("format") if isinstance(header, dict) else None
    if fmt != FORMAT:
        raise ProfileError(f"profile {str(path)!r} has format {fmt!r}; this version reads {FORMAT!r}: rebuild it "
                           "with `guarded-serving profile` (format 3 stores each part's null from out-of-fold "
                           "scores of the fitting rows, which the default detector's combination needs)")
    missing = [k for k in _ARRAYS if k not in arrays]
    if missing:
        raise ProfileError(f"profile {str(path)!r} lacks arrays {missing}: the file is incomplete")
    if _content_hash(arrays) != header.get("content_sha256"):
        raise ProfileError(f"profile {str(path)!r} is corrupt: its arrays do not match the content_sha256 "
                           "in its header (edited or truncated); rebuild it with `guarded-serving profile`")
    p = header.get("n_features")
    if not isinstance(p, int) or arrays["minimum"].shape != (p,) or len(header.get("feature_names", ())) != p:
        raise ProfileError(f"profile {str(path)!r} is inconsistent: n_features={p!r} does not match its arrays")
    return Profile(header, arrays, sha256=hashlib.sha256(data).hexdigest(), path=str(path))


def new_header(**fields: Any) -> dict[str, Any]:
    return {"format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **fields}
