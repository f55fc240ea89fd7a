"""The edge-case component: every request gets a verdict, on the request path, cheaply.

Per call (``before_call``): score the rows with the profile's detector
(default: tail + Mahalanobis), turn the scores into conformal p-values
against the profile's held-out calibration scores, and store them in
``call.state[EDGE_P_VALUES]`` (ndarray of shape (n_rows,)). A row is
flagged when its p-value is at most ``edge_fpr``; on in-distribution data
that happens to a fraction ``edge_fpr`` of rows. Flagged rows are explained
(:mod:`.explain`) and the call is flagged (always exported as a span). Then
the policy:

``flag``
    Serve the model's prediction. The verdict goes back in response headers
    (``call.set_header``): ``X-Guard-Edge: ok`` or
    ``X-Guard-Edge: flagged; rows=0,3; min_p=0.0099`` and
    ``X-Guard-Edge-Reason: row 0: mean_area=654000 is above ...``.
    BentoML 1.4 sends ``ctx.response.headers`` only for APIs that declare a
    ``ctx: bentoml.Context`` parameter, so add one to the guarded API (the guard
    finds it among the call's arguments). The verdict is also in
    ``call.state[EDGE_VERDICT]`` and on the span.
``reject``
    Raise :class:`~guarded_serving.errors.RejectedInputError` (HTTP 422) with
    the explanation; the model is not called.
``fallback``
    Call the user's ``edge_fallback(rows)`` for the flagged rows only and the
    model for the rest; results are merged back in row order (arrays, lists,
    and dicts of them). When every row is flagged the model is not called.

Missing values: where the profile saw missing values (NaN) in a feature,
NaN is accepted there (scored by the training missing rate and explained
as "unusual missing value" when it was rare); elsewhere NaN stays an input
error (HTTP 400) unless the guard's ``allow_nan`` is set. The component
publishes this as ``INPUT_SCHEMA`` (feature count, per-feature NaN policy),
which the guard's input validation applies, and the profile's reference rows
as ``REFERENCE`` for the drift component.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..component import Component
from ..errors import ConfigError, RejectedInputError
from ..health import OK, CheckResult
from ..keys import EDGE_P_VALUES, EDGE_VERDICT, FEATURES, INPUT_SCHEMA, REFERENCE, InputSchema, ReferenceData, StateKey
from .explain import explain_rows
from .profile import DETECTORS, Profile, load_profile

__all__ = ["DETECTOR_NAMES", "POLICIES", "EdgeCaseComponent", "EdgeVerdict", "RowVerdict", "merge_rows"]

POLICIES = ("flag", "reject", "fallback")
DETECTOR_NAMES = DETECTORS

HEADER = "X-Guard-Edge"
#: Batches up to this many rows take the detector's small-batch path (``outlyingness_small``).
SMALL_BATCH = 100
REASON_HEADER = "X-Guard-Edge-Reason"
# this component's own per-call state: which rows went to the fallback (read back in after_call)
_FALLBACK_PLAN: StateKey[tuple[Any, ...]] = StateKey("edge.fallback_plan", "call")


class EdgeCaseComponent(Component):
    """Per-request out-of-distribution verdicts from a reference profile.

    Parameters
    ----------
    profile : path or Profile
        A profile file written by ``guarded-serving profile`` (or a built :class:`Profile`).
    policy : {"flag", "reject", "fallback"}, default="flag"
    fpr : float, default=0.01
        Target false-positive rate: rows with conformal p-value <= fpr are flagged.
    fallback : callable, optional
        ``fallback(rows: ndarray) -> result`` for flagged rows (required by ``policy="fallback"``).
    detector : {"combined", "tail", "mahalanobis", "knn", "copula"} or parts joined by "+", default="combined"
    max_explained : int, default=5
        Flagged rows explained per call (the rest are counted). Explanations are built only when
        read: the reason header of a call whose response goes back, a rejection, the exported span.

    Attributes
    ----------
    profile_ : Profile
    detector_ : fitted detector
    calibrator_ : ConformalCalibrator
    """

    name = "edge_cases"
    span_scope = "anomalous"  # context for anomalous spans (all spans with span_detail="full")
    provides = (EDGE_P_VALUES, EDGE_VERDICT, INPUT_SCHEMA, REFERENCE)
    needs = (FEATURES,)

    def __init__(self, profile: str | os.PathLike[str] | Profile, *, policy: str = "flag", fpr: float = 0.01,
                 fallback: Callable[[np.ndarray], Any] | None = None, detector: str = "combined",
                 max_explained: int = 5) -> None:
        self.profile = profile
        self.policy = policy
        self.fpr = fpr
        self.fallback = fallback
        self.detector = detector
        self.max_explained = max_explained
        self.calls = self.rows = self.rows_flagged = self.calls_flagged = 0
        self.rejected = self.fallback_rows = 0

    # -- setup ------------------------------------------------------------------------
    def bind(self, context: Any = None) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"edge_policy={self.policy!r} is invalid: expected one of {POLICIES}")
        if self.policy == "fallback" and not callable(self.fallback):
            raise ConfigError(f"edge_fallback={self.fallback!r} is invalid: edge_policy='fallback' needs a "
                              "callable fallback(rows) -> results for the flagged rows")
        prof = self.profile if isinstance(self.profile, Profile) else load_profile(self.profile)
        self.profile_ = prof
        where = f"profile {prof.path!r}" if prof.path else "the profile"
        n_features = getattr(getattr(context, "config", None), "n_features", None)
        if n_features is not None and n_features != prof.n_features:
            raise ConfigError(f"n_features={n_features} does not match {where}, which describes "
                              f"{prof.n_features} features ({', '.join(prof.feature_names[:5])}, ...): "
                              "rebuild the profile from this model's training data or fix n_features")
        min_fpr = 1.0 / (prof.n_calibration + 1)
        if not min_fpr <= self.fpr < 1:
            raise ConfigError(f"edge_fpr={self.fpr!r} is invalid: {where} has {prof.n_calibration} calibration "
                              f"rows, so the smallest reachable false-positive rate is {min_fpr:.4g}; use a larger "
                              "fpr or build the profile from more data")
        self.detector_ = prof.detector(self.detector)
        self.calibrator_ = prof.calibrator(self.detector)
        self._outlyingness = self.detector_.outlyingness
        self._outlyingness_one = self.detector_.outlyingness_one
        self._outlyingness_small = self.detector_.outlyingness_small
        cal = self.calibrator_
        self._cal, self._cal_n, self._cal_num = cal.scores_, cal.n_, float(cal.n_ + 1)
        self._cal_list = cal.scores_.tolist()
        one_row_kernel = getattr(self.detector_, "one_row_kernel", None)
        self._kernel = one_row_kernel(cal.scores_) if one_row_kernel is not None else None
        self._attrs = {"guard.edge.policy": self.policy, "guard.edge.detector": self.detector,
                       "guard.edge.fpr": float(self.fpr)}
        if prof.sha256:
            self._attrs["guard.edge.profile_sha256"] = prof.sha256

    def resources(self) -> Mapping[StateKey[Any], Any]:
        """``INPUT_SCHEMA`` (feature count; NaN accepted where training had missing values)
        and ``REFERENCE`` (the profile's reference rows and predictions)."""
        prof = self.profile_
        missing_ok = np.asarray(prof.missing_rate) > 0
        source = prof.path or "the edge-case profile"
        boolean = np.zeros(prof.n_features, dtype=bool)
        for col, (codes, _freqs) in prof.categories().items():
            boolean[col] = len(codes) > 0 and bool(np.isin(codes, (0, 1)).all())
        schema = InputSchema(n_features=prof.n_features, feature_names=tuple(prof.feature_names),
                             nan_allowed=missing_ok if missing_ok.any() else None, source=source, view=prof.view,
                             minimum=np.asarray(prof.arrays["minimum"], dtype=float),
                             maximum=np.asarray(prof.arrays["maximum"], dtype=float), boolean=boolean)
        ref = ReferenceData(reference=np.asarray(prof.reference, dtype=float),
                            feature_names=list(prof.feature_names) or None, categorical=prof.categorical,
                            reference_predictions=prof.reference_predictions, source=source)
        return {INPUT_SCHEMA: schema, REFERENCE: ref}

    # -- request path ---------------------------------------------------------------------
    def before_call(self, call: Any) -> None:
        x = call.inputs
        if x is None:
            return
        if len(x) == 1:  # the common single-row request: one compiled call, else float arithmetic
            kernel = self._kernel
            try:
                p1 = -1.0 if kernel is None else kernel(x)
            except (TypeError, ValueError):  # an input the kernel does not read (not float64): NumPy's path
                p1 = -1.0
            if p1 < 0.0:  # no kernel, or a row for the exact path (a value out of range or missing)
                p1 = (self._cal_n - bisect_left(self._cal_list, self._outlyingness_one(x)) + 1.0) / self._cal_num
            p = call.state[EDGE_P_VALUES] = np.array([p1])
            self.calls += 1
            self.rows += 1
            if p1 > self.fpr:
                call.set_header(HEADER, "ok")
                return
            self._flagged(call, x, p, np.array([0]))
            return
        # small batches (up to SMALL_BATCH rows): the detector's lean path, no chunking or re-checks
        o = self._outlyingness_small(x) if len(x) <= SMALL_BATCH else self._outlyingness(x)
        p = np.searchsorted(self._cal, o, side="left")
        p = (self._cal_n + 1.0 - p) / self._cal_num
        call.state[EDGE_P_VALUES] = p
        self.calls += 1
        self.rows += len(p)
        if p.min() > self.fpr:
            call.set_header(HEADER, "ok")
            return
        self._flagged(call, x, p, np.flatnonzero(p <= self.fpr))

    def _flagged(self, call: Any, x: np.ndarray, p: np.ndarray, rows: np.ndarray) -> None:
        n = len(rows)
        self.calls_flagged += 1
        self.rows_flagged += n
        # the verdict (rows, p-values) now; the explanation when something reads it: the reason
        # header (a response that goes back), a rejection's message, the exported span, guard.check
        rows_l = rows.tolist()
        p_min = float(p[rows_l[0]]) if len(p) == 1 else float(p.min())
        verdict = EdgeVerdict(self, x, p, rows, rows_l)
        call.state[EDGE_VERDICT] = verdict
        call.flag(**{"guard.edge.flagged": True, "guard.edge.flagged_rows": n, "guard.edge.rows": rows_l[:100],
                     "guard.edge.min_p_value": p_min, "guard.edge.explanation": verdict.span_explanation,
                     "guard.edge.policy": self.policy})
        if self.policy == "reject":
            self.rejected += 1
            raise RejectedInputError(f"{call.input_name or 'input'}: rejected as out of distribution: "
                                     f"{verdict['explanation']}", details=dict(verdict))
        call.set_header(HEADER, f"flagged; rows={','.join(map(str, rows_l[:50]))}; min_p={p_min:.4g}; "
                                f"policy={self.policy}")
        if getattr(call, "sends_headers", False):  # the header goes back: explain now
            call.set_header(REASON_HEADER, _header_safe(verdict.lines()))
        if self.policy == "fallback":
            self.fallback_rows += n
            fb = self.fallback(x[rows])  # type: ignore[misc]
            if n == len(p):
                call.answer(fb)
                return
            keep = np.flatnonzero(p > self.fpr)
            call.state[_FALLBACK_PLAN] = (keep, rows, fb, len(p))
            call.set_input(x[keep])

    def explain(self, x: np.ndarray, rows: Any) -> list[list[str]]:
        """Reasons for rows ``rows`` of the validated feature matrix ``x`` (led by the part that drove each)."""
        return explain_rows(self.profile_, x, np.asarray(rows, dtype=np.intp), detector=self.detector)

    def check(self, x: np.ndarray, *, explain: bool = True) -> list[RowVerdict]:
        """Per-row verdicts for the validated feature matrix ``x``, without counting them as traffic.

        Each :class:`RowVerdict` has the row's conformal p-value (flagged or not), whether it is
        flagged at ``edge_fpr``, each part's own p-value, and (``explain=True``) the reasons
        for flagged rows.
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        o = self._outlyingness(x)
        p = (self._cal_n + 1.0 - np.searchsorted(self._cal, o, side="left")) / self._cal_num
        det = self.detector_
        parts = det.parts if hasattr(det, "parts") else (self.detector,)
        pp = det.part_p_values(x) if hasattr(det, "part_p_values") else p[:, None]
        flagged = np.flatnonzero(p <= self.fpr)
        reasons = dict(zip(flagged.tolist(), self.explain(x, flagged))) if explain and len(flagged) else {}
        return [RowVerdict(row=i, p_value=float(p[i]), flagged=bool(p[i] <= self.fpr),
                           part_p_values={n: float(pp[i, k]) for k, n in enumerate(parts)},
                           reasons=tuple(reasons.get(i, ())))
                for i in range(len(p))]

    def after_call(self, call: Any) -> None:
        plan = call.state.get(_FALLBACK_PLAN)
        if plan is None or call.error is not None:
            return
        keep, rows, fb, n = plan
        call.result = merge_rows(call.result, keep, fb, rows, n)

    # -- read side --------------------------------------------------------------------------
    def span_attributes(self) -> dict[str, Any]:
        return self._attrs

    def checks(self) -> list[CheckResult]:
        prof = self.profile_
        return [CheckResult("edge_cases.profile", OK,
                            f"{self.detector} detector on {prof.summary()}; flagging rows with p <= {self.fpr:g} "
                            f"({self.policy})", {"sha256": prof.sha256, "path": prof.path,
                                                 "n_calibration": prof.n_calibration},
                            affects_readiness=False)]

    def stats(self) -> dict[str, Any]:
        return {"calls": self.calls, "rows": self.rows, "rows_flagged": self.rows_flagged,
                "calls_flagged": self.calls_flagged, "rejected_calls": self.rejected,
                "fallback_rows": self.fallback_rows,
                "flag_rate": self.rows_flagged / self.rows if self.rows else None,
                "policy": self.policy, "fpr": self.fpr, "detector": self.detector}


@dataclass(frozen=True)
class RowVerdict:
    """One row's edge-case verdict (:meth:`EdgeCaseComponent.check`, ``Guard.check``).

    Attributes
    ----------
    row : int
    p_value : float
        Conformal p-value of the row (small = unlike the calibration rows); given for every row.
    flagged : bool
        ``p_value <= edge_fpr``.
    part_p_values : dict of str -> float
        Each part's own conformal p-value (one entry for a single detector).
    reasons : tuple of str
        Why the row was flagged, the part that drove the verdict first (empty when not flagged).
    """

    row: int
    p_value: float
    flagged: bool
    part_p_values: dict[str, float] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()


class EdgeVerdict(dict):
    """``call.state[EDGE_VERDICT]``: ``flagged_rows`` and ``p_values`` at once; ``reasons`` and
    ``explanation`` built on first read (for at most ``max_explained`` rows), then kept."""

    def __init__(self, component: EdgeCaseComponent, x: np.ndarray, p: np.ndarray, rows: np.ndarray,
                 rows_list: list[int] | None = None) -> None:
        rows_l = rows.tolist() if rows_list is None else rows_list
        super().__init__(flagged_rows=rows_l, p_values=p[rows].tolist())
        self._args: tuple[Any, ...] | None = (component, x, p, rows)

    def _build(self) -> None:
        if self._args is None:
            return
        comp, x, p, rows = self._args
        self._args = None
        n = len(rows)
        shown = rows[:comp.max_explained]
        reasons = comp.explain(x, shown)
        lines = [f"row {int(r)} (p={p[r]:.3g}): " + "; ".join(rs) for r, rs in zip(shown, reasons)]
        if n > len(shown):
            lines.append(f"... and {n - len(shown)} more flagged rows")
        self._lines = " | ".join(lines)
        dict.__setitem__(self, "reasons", {int(r): rs for r, rs in zip(shown, reasons)})
        dict.__setitem__(self, "explanation", f"{n} of {len(p)} rows are unlike the training data "
                                              f"(conformal p-value <= edge_fpr={comp.fpr:g}): " + self._lines)

    def lines(self) -> str:
        self._build()
        return self._lines

    def span_explanation(self) -> str:
        """The explanation for a span attribute (called when the span is annotated; never raises)."""
        try:
            return self["explanation"][:4000]
        except Exception as exc:  # noqa: BLE001 - the span must still end with its verdict
            return f"(explanation failed: {type(exc).__name__}: {exc})"

    def __getitem__(self, key: Any) -> Any:
        if key in ("reasons", "explanation"):
            self._build()
        return dict.__getitem__(self, key)

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self or key in ("reasons", "explanation") else default

    def __contains__(self, key: Any) -> bool:
        return key in ("reasons", "explanation") or dict.__contains__(self, key)

    def __iter__(self) -> Any:
        self._build()
        return dict.__iter__(self)

    def keys(self) -> Any:
        self._build()
        return dict.keys(self)

    def items(self) -> Any:
        self._build()
        return dict.items(self)


def merge_rows(model: Any, model_rows: np.ndarray, fallback: Any, fallback_rows: np.ndarray, n: int) -> Any:
    """Interleave per-row results of the model and the fallback back into row order.

    Supports ndarrays, lists/tuples and dicts whose values are such (e.g.
    ``{"label": [...], "probability": [...]}``).
    """
    if isinstance(model, dict):
        if not isinstance(fallback, dict) or set(fallback) != set(model):
            raise TypeError(f"the fallback returned {type(fallback).__name__} with keys "
                            f"{sorted(fallback) if isinstance(fallback, dict) else None}; the model returned "
                            f"a dict with keys {sorted(model)}: they must match to merge rows")
        return {k: merge_rows(model[k], model_rows, fallback[k], fallback_rows, n) for k in model}
    if isinstance(model, np.ndarray):
        fb = np.asarray(fallback)
        out = np.empty((n,) + model.shape[1:], dtype=np.result_type(model, fb))
        out[model_rows] = model
        out[fallback_rows] = fb
        return out
    if isinstance(model, (list, tuple)):
        out_l: list[Any] = [None] * n
        for i, v in zip(model_rows.tolist(), model):
            out_l[i] = v
        for i, v in zip(fallback_rows.tolist(), list(fallback)):
            out_l[i] = v
        return type(model)(out_l) if isinstance(model, tuple) else out_l
    raise TypeError(f"cannot merge per-row results of type {type(model).__name__}: return an array, a list, "
                    "or a dict of them from the model and the fallback")


def _header_safe(text: str, limit: int = 1000) -> str:
    # HTTP field values may not start or end with white space (h11 refuses to send them)
    return text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")[:limit].strip()
