"""The performance component: prediction records on the request path, judgement in the background.

Request path (``after_call``, about 1 us): add the request id to a dict result
(``request_id``) and append ``(request id, time, result, input)`` to a bounded buffer.
Nothing is extracted, copied or written there.

Background worker (:class:`~guarded_serving.worker.PeriodicWorker`, every ``interval_s``):

1. flush: read each buffered result through its output view (class probabilities, classes or
   values), compute the segment key, and store one prediction record per row (one SQLite
   transaction); pending labels for those rows are joined;
2. apply retention (every minute);
3. consume the outcomes joined since the last cycle, in join order, into one
   :class:`~.realised.Tally` per (version, segment) and per version: realised metrics and the
   anytime-valid bounds of the expectations;
4. the label-free estimate of the latest ``window`` predictions (:class:`~.estimate.CBPE`,
   :class:`~.estimate.ATC`), and the realised accuracy of the labelled ones among them;
5. cache the checks (``performance.<metric>``, ``performance.estimate``,
   ``performance.feedback``) and emit one span ``guard <model> performance``.

Feedback (:meth:`PerformanceComponent.record_feedback_many`) writes labels synchronously
(committed before it answers) after flushing this worker's buffer, so a label sent right
after its prediction finds it; a label whose prediction sits in another worker's buffer is
kept *pending* and joined when it is flushed.
"""

from __future__ import annotations

import importlib
import logging
import math
import struct
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .. import health as H
from ..call import request_id_time
from ..component import Component
from ..errors import ConfigError
from ..keys import FEATURES
from ..outputs import extract_output, guess_output_kind
from ..store.outcomes import (
    LabelOutcome,
    OutcomeStore,
    PredictionRecord,
    SQLiteOutcomeStore,
)
from ..worker import PeriodicWorker
from .feedback import FeedbackResult, parse_items
from .metrics import metric_direction
from .realised import Tally

if TYPE_CHECKING:
    from ..call import Call
    from ..context import GuardContext

__all__ = ["PerformanceComponent"]

_log = logging.getLogger("guarded_serving.performance")
ALL = "*"  # the segment that pools every segment
_EXPIRE_EVERY_S = 60.0
_FULL_EVERY_S = 5.0  # coverage, counts (kept by the store: O(groups)) and the label-free estimate: not every cycle


def _resolve(spec: Any) -> Any:
    if isinstance(spec, str):
        mod, _, name = spec.partition(":")
        return getattr(importlib.import_module(mod), name)
    return spec


#: Rows up to which a call's probabilities are recorded with plain floats (no arrays built).
_FAST_ROWS = 16
_PAIR = struct.Struct("=2d")  # a binary class's (1 - p, p), as float64 bytes like ndarray.tobytes()

class PerformanceComponent(Component):
    """Prediction records, feedback, realised performance, expectations and label-free estimates.

    Parameters are those of :class:`~.capability.PerformanceSettings` (without the
    ``performance_`` prefix); ``clock`` (default ``time.time``) gives prediction and label
    times, for replays in simulated time; ``store`` may be an :class:`OutcomeStore`.
    """

    name = "performance"
    span_scope = "anomalous"

    def __init__(self, *, expectations: Mapping[str, float] | None = None, level: float = 0.01,
                 min_labels: int = 30, error_scale: float | None = None, task: str | None = None,
                 output_field: str | None = None, segment: Any = None,
                 store: "OutcomeStore | str | None" = None, retention_s: float = 7 * 86400.0,
                 pending_s: float = 3600.0, interval_s: float = 1.0, buffer_rows: int = 100_000,
                 record_inputs: bool = False, max_input_values: int = 256, reference: Any = None,
                 window: int = 1000, labels_missing_at_random: bool = True, band_z: float = 3.0,
                 request_id_field: str | None = "request_id", clock: Callable[[], float] = time.time) -> None:
        self.expectations = dict(expectations or {})
        self.level = level
        self.min_labels = min_labels
        self.error_scale = error_scale
        self.task = task
        self.output_field = output_field
        self.segment = segment
        self.store = store
        self.retention_s = retention_s
        self.pending_s = pending_s
        self.interval_s = interval_s
        self.buffer_rows = buffer_rows
        self.record_inputs = record_inputs
        self.max_input_values = max_input_values
        self.reference = reference
        self.window = window
        self.labels_missing_at_random = labels_missing_at_random
        self.band_z = band_z
        self.request_id_field = request_id_field
        self.clock = clock
        if record_inputs:
            self.needs = (FEATURES,)
        self._buf: deque[tuple[str, float, Any, Any, Any]] = deque()
        self._dropped = 0
        self._unreadable = 0
        self._segment_errors = 0
        self._pending: list[PredictionRecord] = []
        self._flush_lock = threading.Lock()
        self._eval_lock = threading.Lock()
        self._store: OutcomeStore | None = None
        self._worker: PeriodicWorker | None = None
        self._version = "0"
        self._model = "model"
        self._context: GuardContext | None = None
        self._out_kind: str | None = None
        self._n_classes: int | None = None
        self._seq = 0
        self._tallies: dict[tuple[str, str], Tally] = {}
        self._last_expire = 0.0
        self._last_full = -1e18
        self._flushed = 0
        self._estimators: tuple[Any, Any] | None = None
        self._estimate: dict[str, Any] = {}
        self._coverage: dict[tuple[str, str], dict[str, Any]] = {}
        self._counts: dict[str, int] = {}
        self._feedback = {"recorded": 0, "unchanged": 0, "pending": 0, "rejected": 0}
        self._checks: tuple[H.CheckResult, ...] = ()
        self._span_attrs: Mapping[str, Any] = {}
        self._segment_fn: Callable[..., Any] | None = None

    @classmethod
    def from_settings(cls, s: Any) -> "PerformanceComponent":
        """Build from a :class:`~.capability.PerformanceSettings` section."""
        return cls(expectations=s.expectations, level=s.expectation_level, min_labels=s.expectation_min_labels,
                   error_scale=s.expectation_error_scale, task=s.performance_task,
                   output_field=s.performance_output_field, segment=s.performance_segment,
                   store=s.performance_store, retention_s=s.feedback_retention_s, pending_s=s.feedback_pending_s,
                   interval_s=s.performance_interval_s, buffer_rows=s.performance_buffer_rows,
                   record_inputs=s.performance_record_inputs, max_input_values=s.performance_max_input_values,
                   reference=s.performance_reference, window=s.performance_window,
                   labels_missing_at_random=s.labels_missing_at_random, band_z=s.performance_band_z,
                   request_id_field=s.request_id_field)

    # -- lifecycle -----------------------------------------------------------------------
    def bind(self, context: "GuardContext | None" = None) -> None:
        self._context = context
        if context is not None:
            self._version, self._model = context.model_version, context.model_name
        self._segment_fn = _resolve(self.segment) if self.segment is not None else None
        if self._segment_fn is not None and not callable(self._segment_fn):
            raise ValueError(f"performance_segment={self.segment!r} is invalid: it does not name a callable")
        if self.reference is not None:
            self._estimators = self._fit_reference(self.reference)
        self._checks = self._build_checks()

    def _fit_reference(self, ref: Any) -> tuple[Any, Any]:
        from .estimate import ATC, CBPE

        if callable(ref):
            scores, labels = ref()
        else:
            with np.load(ref, allow_pickle=False) as z:
                key = next((k for k in ("scores", "probabilities", "reference_scores") if k in z.files), None)
                lab = next((k for k in ("labels", "y", "reference_labels") if k in z.files), None)
                if key is None or lab is None:
                    raise ValueError(f"performance_reference={ref!r} is invalid: the .npz needs 'scores' and "
                                     f"'labels' arrays (it has {z.files})")
                scores, labels = z[key], z[lab]
        return CBPE(z=self.band_z).fit(scores, labels), ATC().fit(scores, labels)

    def _open_store(self) -> OutcomeStore:
        if self._store is None:
            target = self.store
            if isinstance(target, OutcomeStore):
                self._store = target
            else:
                if target is None:
                    from ..context import default_state_dir, default_store_url

                    target = default_store_url() or str(default_state_dir() / f"outcomes-{self._model}.sqlite")
                if str(target).startswith(("redis://", "rediss://")):
                    import os

                    from ..store import PASSWORD_ENV
                    from ..store.outcomes_redis import RedisOutcomeStore

                    self._store = RedisOutcomeStore(str(target), namespace=f"{self._model}:outcomes",
                                                    retention_s=self.retention_s, pending_s=self.pending_s,
                                                    password=os.environ.get(PASSWORD_ENV) or None)
                else:
                    self._store = SQLiteOutcomeStore(target, retention_s=self.retention_s, pending_s=self.pending_s)
        return self._store

    def start(self) -> None:
        if self._worker is not None and self._worker.running:
            return
        try:
            self._open_store().verify()  # refused credentials: ConfigError now
        except ConfigError:
            raise
        except Exception:  # a store that is down: the worker retries, health says so
            _log.warning("performance: the outcome store did not answer at start", exc_info=True)
        self._worker = PeriodicWorker(f"performance-{self._model}", self._cycle, float(self.interval_s),
                                      on_stop=self._final_cycle, run_first=True,
                                      join_timeout_s=max(5.0, 2 * float(self.interval_s)), weak=True).start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _final_cycle(self) -> None:
        try:
            self.flush()
        except Exception:  # pragma: no cover - the store is gone at shutdown
            _log.exception("performance: final flush failed")

    # -- request path ----------------------------------------------------------------------
    def after_call(self, call: "Call") -> None:
        if call.outcome != "ok":
            return
        rid = call.request_id
        result = call.result
        field = self.request_id_field
        if field is not None and type(result) is dict and field not in result:
            result[field] = rid
        buf = self._buf
        if len(buf) >= self.buffer_rows:
            buf.popleft()
            self._dropped += 1
        buf.append((rid, self.clock(), result,
                    self._input_of(call) if self._segment_fn is not None else None,
                    call.inputs if self.record_inputs else None))

    @staticmethod
    def _input_of(call: "Call") -> Any:
        i, name = call._input_index, call.input_name
        if i is not None and len(call.args) > i:
            return call.args[i]
        return call.kwargs.get(name) if name is not None else None

    # -- background ----------------------------------------------------------------------
    def _cycle(self) -> None:
        self.flush()
        now = self.clock()
        if now - self._last_expire >= _EXPIRE_EVERY_S:
            self._open_store().expire(now)
            self._last_expire = now
        wall = time.monotonic()
        full = wall - self._last_full >= max(_FULL_EVERY_S, self.interval_s)
        self.evaluate(full=full)
        if full:
            self._last_full = wall

    def flush(self) -> int:
        """Store the buffered prediction records now (any thread); return how many rows were stored."""
        with self._flush_lock:
            buf = self._buf
            records = self._pending
            self._pending = []
            while True:
                try:
                    rid, ts, result, value, feats = buf.popleft()
                except IndexError:
                    break
                records.extend(self._records(rid, ts, result, value, feats))
            if not records:
                return 0
            try:
                self._open_store().add_predictions(records)
            except Exception:
                keep = records[-self.buffer_rows:]
                self._dropped += len(records) - len(keep)
                self._pending = keep  # sent again next cycle (INSERT OR IGNORE: never twice)
                raise
            self._flushed += len(records)
            return len(records)

    def _records(self, rid: str, ts: float, result: Any, value: Any, feats: Any) -> list[PredictionRecord]:
        out = extract_output(result, self.output_field)
        if out is None:
            self._unreadable += 1
            return []
        kind = self._out_kind
        if kind not in ("probabilities", "values"):  # a batch of 0/1 probabilities reads as classes: look again
            try:
                guessed = guess_output_kind([np.nan if v is None else v for v in out]
                                            if isinstance(out, list) else out)
            except Exception:
                guessed = None
            if guessed not in ("probabilities", "classes", "values"):
                if kind is None:
                    self._unreadable += 1
                    return []
            else:
                kind = self._out_kind = guessed
        task = self.task or ("regression" if kind == "values" else "classification")
        views: list[bytes | None]
        if (kind == "probabilities" and type(out) is list and len(out) <= _FAST_ROWS
                and all(type(v) is float and not math.isnan(v) for v in out)):
            # the usual served call: a few rows, one probability each; plain floats, no arrays to build
            # (the same records as below: p = (1 - v, v), class = argmax with ties to 0)
            if self._n_classes is None:
                self._n_classes = 2
            pred = [1.0 if v > 1.0 - v else 0.0 for v in out]
            views = [_PAIR.pack(1.0 - v, v) for v in out]
            return self._finish_records(rid, ts, value, result, feats, task, pred, views)
        try:
            if isinstance(out, list):
                out = [np.nan if v is None else (
                    [np.nan if u is None else u for u in v] if isinstance(v, (list, tuple)) else v) for v in out]
            a = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            self._unreadable += 1
            return []
        if a.ndim == 0:
            a = a.reshape(1)
        if kind == "probabilities":
            p = np.column_stack([1.0 - a, a]) if a.ndim == 1 else a
            if self._n_classes is None:
                self._n_classes = int(p.shape[1])
            bad = np.isnan(p).any(axis=1)
            pred = np.where(bad, np.nan, np.argmax(np.nan_to_num(p, nan=-1.0), axis=1).astype(float))
            views = [None if b else row.tobytes() for b, row in zip(bad, p)]
        else:
            pred = a.reshape(len(a), -1)[:, 0]
            views = [None] * len(pred)
        return self._finish_records(rid, ts, value, result, feats, task, pred, views)

    def _finish_records(self, rid: str, ts: float, value: Any, result: Any, feats: Any, task: str, pred: Any,
                        views: list[bytes | None]) -> list[PredictionRecord]:
        segs = self._segments(value, result, len(pred))
        inputs: list[bytes | None] = [None] * len(pred)
        if feats is not None:
            f = np.asarray(feats, dtype=np.float64)
            if f.ndim == 2 and len(f) == len(pred) and f.shape[1] <= self.max_input_values:
                inputs = [r.tobytes() for r in f]
        return [PredictionRecord(rid, i, ts, self._version, segs[i], task,
                                 None if math.isnan(pred[i]) else float(pred[i]), views[i], inputs[i])
                for i in range(len(pred))]

    def _segments(self, value: Any, result: Any, n: int) -> list[str]:
        if self._segment_fn is None:
            return [ALL] * n
        try:
            got = self._segment_fn(value, result)
            if isinstance(got, str):
                return [got] * n
            segs = [str(s) for s in got]
            if len(segs) != n:
                raise ValueError(f"segment() gave {len(segs)} keys for {n} rows")
            return segs
        except Exception as exc:
            self._segment_errors += 1
            if self._segment_errors == 1:
                _log.warning("performance_segment raised (%s: %s); such rows go to segment 'unknown'",
                             type(exc).__name__, exc)
            return ["unknown"] * n

    def evaluate(self, *, full: bool = True) -> None:
        """Consume new outcomes, refresh (``full``, or when labels arrived) the label-free estimate and
        (``full``) coverage and counts (counters the store keeps as rows are written and expired;
        the worker does a full evaluation every 5 s), rebuild the checks."""
        store = self._open_store()
        with self._eval_lock:
            new = 0
            while True:
                rows = store.outcomes_after(self._seq, 50_000)
                if not rows:
                    break
                self._consume(rows)
                new += len(rows)
                if len(rows) < 50_000:
                    break
            if full:
                self._coverage = self._read_coverage(store)
                self._counts = store.counts()
            if self._estimators is not None and (full or new):  # it reads the latest window: not every idle cycle
                self._estimate = self._label_free(store)
            self._checks = self._build_checks()
            self._span_attrs = self._build_span_attrs()
            if new:
                self._emit_span(new)

    def _consume(self, rows: list[tuple]) -> None:
        groups: dict[tuple[str, str, str], list[tuple]] = {}
        for r in rows:
            seq, version, segment, kind = r[0], r[1], r[2], r[3]
            groups.setdefault((version, segment, kind), []).append(r)
            self._seq = max(self._seq, int(seq))
        for (version, segment, kind), part in groups.items():
            pred = np.array([np.nan if r[4] is None else r[4] for r in part], dtype=float)
            lab = np.array([r[5] for r in part], dtype=float)
            pts = np.array([r[6] for r in part], dtype=float)
            lts = np.array([r[7] for r in part], dtype=float)
            for seg in ((segment, ALL) if segment != ALL else (ALL,)):
                t = self._tallies.get((version, seg))
                if t is None:
                    t = self._tallies[(version, seg)] = Tally(kind, self.expectations, self.level, self.error_scale)
                t.update(pred, lab, pts, lts)

    def _read_coverage(self, store: OutcomeStore) -> dict[tuple[str, str], dict[str, Any]]:
        cov: dict[tuple[str, str], dict[str, Any]] = {}
        for version, segment, predicted, n, n_lab in store.coverage():
            for seg in ((segment, ALL) if segment != ALL else (ALL,)):
                c = cov.setdefault((version, seg), {"predictions": 0, "labelled": 0, "by_class": {}})
                c["predictions"] += int(n)
                c["labelled"] += int(n_lab)
                if predicted is not None:
                    k = str(int(predicted)) if float(predicted).is_integer() else "value"
                    bc = c["by_class"].setdefault(k, [0, 0])
                    bc[0] += int(n)
                    bc[1] += int(n_lab)
        for c in cov.values():
            c["coverage"] = c["labelled"] / c["predictions"] if c["predictions"] else None
            c["outcome_dependent"] = _coverage_differs(c["by_class"]) if len(c["by_class"]) <= 50 else None
        return cov

    def _label_free(self, store: OutcomeStore) -> dict[str, Any]:
        cbpe, atc = self._estimators  # type: ignore[misc]
        rows = store.latest(self._version, self.window)
        views = [np.frombuffer(v, dtype=np.float64) for _, _, _, v, _ in rows if v is not None]
        if not views or len({len(v) for v in views}) != 1:
            return {"n": len(views)}
        scores = np.vstack(views)
        est = cbpe.estimate(scores)
        out: dict[str, Any] = {"n": int(len(scores)), "cbpe": est, "atc": atc.estimate(scores),
                               "reference_accuracy": cbpe.reference_accuracy_}
        labelled = [(np.frombuffer(v, dtype=np.float64), lab, pred) for _, _, pred, v, lab in rows
                    if v is not None and lab is not None and pred is not None]
        if labelled:
            s = np.vstack([x for x, _, _ in labelled])
            realised = float(np.mean([float(p) == float(y) for _, y, p in labelled]))
            exp = cbpe.estimate(s)
            out["labelled"] = {"n": len(labelled), "realised": realised, "expected": exp["accuracy"],
                               "lower": exp["lower"], "upper": exp["upper"]}
            out["concept_shift"] = bool(len(labelled) >= self.min_labels
                                        and not exp["lower"] <= realised <= exp["upper"])
        return out

    # -- feedback --------------------------------------------------------------------------
    def record_feedback_many(self, items: Iterable[Any]) -> list[FeedbackResult]:
        """Record true outcomes; one :class:`FeedbackResult` per row (see :mod:`.feedback`)."""
        parsed = parse_items(items)
        try:
            self.flush()  # this worker's buffer first: a label right after its prediction finds it
        except Exception:  # the store refused the flush: labels may still be kept pending
            _log.warning("performance: flush before feedback failed", exc_info=True)
        now = self.clock()  # label times (for the lag), in the component's clock
        wall = time.time()  # request ids carry the wall-clock time they were issued
        todo: list[tuple[int, str, int, float, bool, str | None]] = []
        results: list[FeedbackResult | None] = []
        for i, p in enumerate(parsed):
            if isinstance(p, FeedbackResult):
                results.append(p)
                continue
            rid, row, label, source = p
            issued = request_id_time(rid)
            if issued is None:
                results.append(FeedbackResult(rid, row, "bad_request", f"request {rid!r}: not a request id this "
                                              "guard issued (expected the X-Request-Id of a prediction: "
                                              "32 hex digits, '-', 16 hex digits)"))
                continue
            age = wall - issued
            if age > self.retention_s:
                results.append(FeedbackResult(rid, row, "expired", f"request {rid} row {row}: expired: its "
                                              f"prediction is {age / 3600:.1f} h old and predictions are kept "
                                              f"{self.retention_s / 3600:.1f} h (feedback_retention_s)"))
                continue
            if age < -300:
                results.append(FeedbackResult(rid, row, "unknown", f"request {rid}: unknown: its id was issued "
                                              f"{-age:.0f} s in the future"))
                continue
            results.append(None)
            todo.append((i, rid, row, label, age <= self.pending_s, source))
        if todo:
            got = self._open_store().add_labels([(rid, row, lab, ok, src) for _, rid, row, lab, ok, src in todo],
                                                self._validate, now)
            for (i, rid, row, label, _, _), outcome in zip(todo, got):
                results[i] = self._result(rid, row, label, outcome)
        final = [r for r in results if r is not None]
        for r in final:
            key = r.status if r.status in ("recorded", "unchanged", "pending") else "rejected"
            self._feedback[key] += 1
        if self._worker is not None and any(r.status == "recorded" for r in final):
            self._worker.wake()
        return final

    def record_feedback(self, request_id: str, label: Any, *, row: int | None = None,
                        source: str | None = None) -> FeedbackResult:
        """Record the true outcome of one row (``row`` defaults to 0; a list ``label`` gives every
        row's, and the first result is returned), with its ``source`` tag when known."""
        item: dict[str, Any] = {"request_id": request_id, "label": label}
        if row is not None:
            item["row"] = row
        if source is not None:
            item["source"] = source
        return self.record_feedback_many([item])[0]

    def _validate(self, kind: str | None, label: float) -> str | None:
        kind = kind or self.task or (None if self._out_kind is None else
                                     "regression" if self._out_kind == "values" else "classification")
        if kind == "classification":
            if not float(label).is_integer():
                return f"label {label!r} is not a class: this model is a classifier (expected an integer class)"
            k = self._n_classes
            if k is not None and not 0 <= label < k:
                return f"label {int(label)} is not a class of this model (expected 0 to {k - 1})"
        return None

    @staticmethod
    def _result(rid: str, row: int, label: float, o: LabelOutcome) -> FeedbackResult:
        lab = int(label) if float(label).is_integer() else label
        where = f"request {rid} row {row}"
        if o.status == "recorded":
            return FeedbackResult(rid, row, "recorded", f"{where}: label {lab} recorded")
        if o.status == "pending":
            return FeedbackResult(rid, row, "pending", f"{where}: label {lab} kept; its prediction is not stored "
                                  "yet (another worker's buffer) and it is joined when it is")
        if o.status == "unchanged":
            return FeedbackResult(rid, row, "unchanged", f"{where}: label {lab} was already recorded")
        if o.status == "conflict":
            ex = o.existing
            exs = int(ex) if ex is not None and float(ex).is_integer() else ex
            return FeedbackResult(rid, row, "conflict", f"{where}: label {lab} contradicts label {exs} recorded "
                                  "before (the first label stands)")
        if o.status == "invalid":
            return FeedbackResult(rid, row, "invalid", f"{where}: {o.problem}")
        return FeedbackResult(rid, row, "unknown", f"{where}: unknown: no prediction with this id was recorded")

    # -- read side -------------------------------------------------------------------------
    def _tally(self, segment: str = ALL) -> Tally | None:
        return self._tallies.get((self._version, segment))

    def _build_checks(self) -> tuple[H.CheckResult, ...]:
        out: list[H.CheckResult] = []
        v = self._version
        cov = self._coverage.get((v, ALL), {})
        coverage = cov.get("coverage")
        dependent = (not self.labels_missing_at_random) or bool(cov.get("outcome_dependent"))
        est = self._estimate
        for metric, target in self.expectations.items():
            name = f"performance.{metric}"
            at_least = metric_direction(metric) == "at_least"
            segs = sorted(s for (ver, s) in self._tallies if ver == v)
            failing: list[str] = []
            details: dict[str, Any] = {"expectation": target, "level": self.level, "segments": {}}
            for seg in segs:
                t = self._tallies[(v, seg)]
                if metric not in t.bounds:
                    continue
                b, n = t.bound(metric)
                realised, since = t.value(metric), t.since(metric)
                crossed = n >= self.min_labels and (b < target if at_least else b > target)
                details["segments"][seg] = {"realised": realised, "bound": b, "labels": n, "since_label": since,
                                            "realised_since": t.value_since(metric), "alarm": crossed}
                if crossed:
                    span = f"the latest {n} labels (since label {since + 1})" if since else f"all {n} labels"
                    failing.append(f"{'all segments' if seg == ALL else 'segment ' + repr(seg)}: "
                                   f"{'upper' if at_least else 'lower'} bound {b:.4f} "
                                   f"{'<' if at_least else '>'} expectation {target:g} on {span}, "
                                   f"realised {t.value_since(metric):.4f} there "
                                   f"({realised:.4f} on all {t.judged(metric)})")
            t_all = self._tally()
            n_all = t_all.judged(metric) if t_all is not None and metric in t_all.bounds else 0
            cov_text = f"label coverage {coverage:.0%}" if coverage is not None else "no predictions stored yet"
            notes: list[str] = []
            if dependent and n_all:
                notes.append("labels arrive for only part of the predictions and whether they do depends on the "
                             "outcome: the bound covers the labelled part only")
            if metric == "accuracy" and est.get("concept_shift"):
                lab = est["labelled"]
                notes.append(f"realised accuracy {lab['realised']:.3f} of the latest labelled rows is outside the "
                             f"label-free estimate's band [{lab['lower']:.3f}, {lab['upper']:.3f}]: the relation "
                             "between inputs and labels may have changed (concept shift)")
            details.update({"coverage": coverage, "outcome_dependent_coverage": dependent, "notes": notes})
            if failing:
                reason = (f"{metric} of version {v} is below what was promised ({1 - self.level:.0%} anytime-valid "
                          if at_least else f"{metric} of version {v} is above what was promised "
                          f"({1 - self.level:.0%} anytime-valid ") + "bound): " + "; ".join(failing) + f"; {cov_text}"
                out.append(H.CheckResult(name, H.DEGRADED, reason + "".join("; " + n for n in notes), details,
                                         affects_readiness=False))
            elif n_all < self.min_labels:
                out.append(H.CheckResult(name, H.OK, f"{n_all} label(s) of version {v} so far: {metric} is judged "
                                         f"from {self.min_labels} labels on (expectation {target:g}); {cov_text}",
                                         details, affects_readiness=False))
            else:
                assert t_all is not None
                b, _ = t_all.bound(metric)
                out.append(H.CheckResult(name, H.OK, f"{metric} {t_all.value(metric):.4f} on {n_all} labels, "
                                         f"{'upper' if at_least else 'lower'} bound {b:.4f} "
                                         f"{'>=' if at_least else '<='} expectation {target:g}; {cov_text}"
                                         + "".join("; " + n for n in notes), details, affects_readiness=False))
        if self._estimators is not None:
            out.append(self._estimate_check())
        fb: list[str] = []
        if self._dropped:
            fb.append(f"{self._dropped} prediction record(s) dropped (buffer of {self.buffer_rows} full)")
        if self._unreadable:
            fb.append(f"{self._unreadable} result(s) had no readable output")
        dropped = self._counts.get("pending_dropped", 0)
        if dropped:
            fb.append(f"{dropped} label(s) never met their prediction within {self.pending_s:g} s and were dropped")
        worker_check = self._worker.check("performance.feedback") if self._worker is not None else None
        if worker_check is not None:
            out.append(worker_check)
        else:
            out.append(H.CheckResult("performance.feedback", H.DEGRADED if fb else H.OK,
                                     "; ".join(fb) if fb else
                                     f"{self._counts.get('predictions', 0)} predictions and "
                                     f"{self._counts.get('labels', 0)} labels stored, "
                                     f"{self._counts.get('pending', 0)} label(s) waiting for their prediction",
                                     {**self._counts, **self._feedback}, affects_readiness=False))
        return tuple(out)

    def _estimate_check(self) -> H.CheckResult:
        est = self._estimate
        cb = est.get("cbpe")
        if not cb:
            return H.CheckResult("performance.estimate", H.OK, "no predictions with probabilities yet",
                                 dict(est), affects_readiness=False)
        text = (f"label-free accuracy estimate of the latest {est['n']} predictions: CBPE {cb['accuracy']:.3f} "
                f"[{cb['lower']:.3f}, {cb['upper']:.3f}], ATC {est['atc']:.3f}")
        t = self._tally()
        if t is not None and t.n:
            text += f"; realised {t.value('accuracy'):.3f} on {t.n} labels"
        target = self.expectations.get("accuracy")
        status = H.OK
        if est.get("concept_shift"):
            lab = est["labelled"]
            status = H.DEGRADED
            text += (f"; the {lab['n']} labelled rows among them: realised {lab['realised']:.3f} outside the band "
                     f"[{lab['lower']:.3f}, {lab['upper']:.3f}]: the relation between inputs and labels may have "
                     "changed (concept shift), which no label-free estimate can see")
        elif target is not None and cb["upper"] < target:
            status = H.DEGRADED
            text += f"; the estimate's band is below the expectation {target:g} (labels will tell)"
        return H.CheckResult("performance.estimate", status, text, json_ready(est), affects_readiness=False)

    def _build_span_attrs(self) -> Mapping[str, Any]:
        attrs: dict[str, Any] = {"guard.performance.status": H.worst(c.status for c in self._checks)}
        t = self._tally()
        if t is not None and t.n:
            attrs["guard.performance.labels"] = t.n
            if t.kind == "classification":
                attrs["guard.performance.accuracy"] = t.value("accuracy")
            for m in t.bounds:
                attrs[f"guard.performance.{m}.bound"] = t.bound(m)[0]
        cb = self._estimate.get("cbpe")
        if cb:
            attrs["guard.performance.estimate.cbpe"] = cb["accuracy"]
            attrs["guard.performance.estimate.atc"] = self._estimate["atc"]
        return attrs

    def _emit_span(self, new: int) -> None:
        if self._context is None:
            return
        try:
            span = self._context.tracer().start_span(f"guard {self._model} performance")
            try:
                if span.is_recording():
                    span.set_attributes({**self._span_attrs, "guard.performance.new_labels": new,
                                         "guard.model.name": self._model, "guard.model.version": self._version})
                    for c in self._checks:
                        if c.status != H.OK:
                            span.add_event("guard.performance.check", {"check": c.name, "status": c.status,
                                                                       "reason": c.reason[:1000]})
            finally:
                span.end()
        except Exception:  # pragma: no cover - telemetry must not stop evaluation
            _log.debug("performance span failed", exc_info=True)

    def checks(self) -> Iterable[H.CheckResult]:
        return self._checks

    def span_attributes(self) -> Mapping[str, Any]:
        return self._span_attrs

    def stats(self) -> Mapping[str, Any]:
        realised = {f"{v}/{s}": t.to_dict() for (v, s), t in sorted(self._tallies.items())}
        cov = {f"{v}/{s}": {k: c[k] for k in ("predictions", "labelled", "coverage", "outcome_dependent")}
               for (v, s), c in sorted(self._coverage.items())}
        return {"buffered": len(self._buf), "flushed_rows": self._flushed, "dropped": self._dropped,
                "store": self._counts, "feedback": dict(self._feedback), "realised": realised, "coverage": cov,
                "estimate": json_ready(self._estimate)}

    @property
    def outcome_store(self) -> OutcomeStore:
        """The store of predictions and labels (opened on first use)."""
        return self._open_store()


def _coverage_differs(by_class: Mapping[str, Sequence[int]]) -> bool:
    """Whether label coverage differs between predicted classes beyond chance (two-proportion z > 5
    and at least 10 points apart): a hint that labels arrive depending on the outcome."""
    items = [(n, k) for n, k in by_class.values() if n >= 30]
    if len(items) < 2:
        return False
    shares = [k / n for n, k in items]
    i, j = int(np.argmin(shares)), int(np.argmax(shares))
    (n1, k1), (n2, k2) = items[i], items[j]
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(max(p * (1 - p) * (1 / n1 + 1 / n2), 1e-12))
    return (shares[j] - shares[i]) >= 0.10 and (shares[j] - shares[i]) / se > 5


def json_ready(d: Any) -> Any:
    if isinstance(d, dict):
        return {str(k): json_ready(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [json_ready(v) for v in d]
    if isinstance(d, (np.floating, np.integer, np.bool_)):
        return d.item()
    return d
