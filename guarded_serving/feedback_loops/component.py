"""The loop component: buffers answers on the request path, measures exposure in the background.

Request path (``after_call``, O(1)): keep a reference to the call's result, its keyword
arguments and request id in a bounded buffer. Nothing is read or computed there.

Background worker (a :class:`~guarded_serving.worker.PeriodicWorker`, every ``interval_s``):

1. **flush** the buffered answers to the shared store as rows, one per ranked list:
   ``[time, user, exploration, request, row, n, item_1 .. item_K]`` (item ids as exact integers,
   other ids as 48-bit hashes; ``K = max_rank``); class predictions go to a second stream and
   outcomes sent with :meth:`LoopComponent.observe_outcome` to a third. One ``append_batches``
   call per flush, so every worker of the host (SQLite) or of every host (Redis) pools its lists
   in one order;
2. **measure**: read the pooled lists after the last position read and cut them into windows of
   ``window`` lists *by pooled position* (window ``w`` holds the lists at positions
   ``w*window+1 .. (w+1)*window``), so every worker cuts the same windows. For each closed window:
   position-weighted exposure per item over the catalogue, and its Gini, normalised entropy,
   coverage, top-1% share, popularity lift against the reference popularity, and the mean Jaccard
   overlap of successive lists of one user (:mod:`.measures`); exploration lists are kept apart
   (the holdout, :mod:`.holdout`) and do not count as the model's exposure;
3. **judge**: feed each closed window's measures to the sequential alarm (:mod:`.alarm`), join
   outcomes to their lists and predictions by request id (:mod:`.coupling`), compare the model's
   favourites with the holdout, and cache the verdicts for ``health()``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import health as H
from ..component import Component
from ..errors import ConfigError
from ..outputs import extract_output
from ..store.base import WindowStore
from ..worker import PeriodicWorker
from .alarm import ConcentrationAlarm, trend_slope
from .coupling import OutcomeCoupling, check_source, source_code
from .holdout import HoldoutComparison, windowed_holdout_comparison
from .measures import (
    ExposureSummary,
    gini,
    normalised_entropy,
    position_weights,
    summarise,
    top_share,
)

if TYPE_CHECKING:
    from ..call import Call
    from ..context import GuardContext

__all__ = ["OUTPUT_MODES", "LoopComponent", "item_code", "load_popularity"]

_log = logging.getLogger("guarded_serving.feedback_loops")
OUTPUT_MODES = ("auto", "ranking", "items", "classes")
_HEAD = 6  # ts, user, explore, request, row, n
_LIST_KEYS = ("items", "ranking", "recommendations")
_MAX_INT = 2 ** 53


def item_code(value: Any) -> float:
    """An id as an exact float: a non-negative integer below 2**53 as itself; anything else as
    minus one minus a 48-bit hash of its text."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < _MAX_INT:
        return float(value)
    if isinstance(value, float) and value.is_integer() and 0 <= value < _MAX_INT:
        return value
    h = int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=6).digest(), "big")
    return -1.0 - h


def load_popularity(source: Any) -> dict[Any, float]:
    """Reference popularity ``item -> interactions``: a mapping, or an ``.npz`` with ``items`` and
    ``popularity`` (counts or shares; item ids as numbers or strings)."""
    if isinstance(source, Mapping):
        return {k: float(v) for k, v in source.items()}
    with np.load(source, allow_pickle=False) as z:
        if "items" not in z.files or "popularity" not in z.files:
            raise ValueError(f"{source}: expected arrays 'items' and 'popularity', found {sorted(z.files)}")
        items, pop = z["items"], np.asarray(z["popularity"], dtype=float)
    if len(items) != len(pop):
        raise ValueError(f"{source}: 'items' has {len(items)} entries, 'popularity' {len(pop)}")
    return {(i.item() if hasattr(i, "item") else i): float(p) for i, p in zip(items, pop)}


class _Window:
    """Accumulators of one window of pooled lists."""

    __slots__ = (
        "clicks_by_rank",
        "exposure",
        "holdout_clicks",
        "holdout_lists",
        "holdout_shows",
        "index",
        "jaccard_n",
        "jaccard_sum",
        "lists",
        "model_clicks",
    )

    def __init__(self, index: int, max_rank: int) -> None:
        self.index = index
        self.lists = 0
        self.holdout_lists = 0
        self.exposure: dict[float, float] = {}
        self.holdout_shows: dict[float, float] = {}
        self.holdout_clicks: dict[float, float] = {}
        self.model_clicks: dict[float, float] = {}
        self.clicks_by_rank = np.zeros(max_rank)
        self.jaccard_sum = 0.0
        self.jaccard_n = 0


class LoopComponent(Component):
    """Exposure concentration, outcome coupling, a random-exposure holdout and a sequential alarm.

    Parameters
    ----------
    item_field : str, optional
        Key of a dict result holding the items (default: the first usual key, ``items``,
        ``ranking``, ``recommendations``, ``predictions``, ...; see :mod:`guarded_serving.outputs`).
    user_field : str, optional
        Keyword argument of the guarded API (else key of the result) holding the user or segment
        id, one per row or one for the call; enables the Jaccard of successive lists.
    exploration_field : str, optional
        Keyword argument (else result key) that marks a request (or each row) as exploration:
        a random list served to a small slice, the holdout.
    request_field : str, default="request_id"
        Result key holding the request id when the call carries none.
    output : {"auto", "ranking", "items", "classes"}, default="auto"
        What the answers are: ranked lists per row, one item per row, or predicted classes (for
        label coverage by class); ``auto``: lists of lists, and a dict result with ``item_field`` or
        an ``items``, ``ranking`` or ``recommendations`` key (a flat list: one list for the call),
        are rankings; other answers are classes.
    window : int, default=500
        Pooled lists per window.
    alpha : float, default=0.01
        Bound on the probability that the alarm is ever raised while the windows stay exchangeable.
    block : int, default=1
        Windows averaged per judged value of the alarm (for correlated windows).
    max_rank : int, default=20
        Ranks kept per list (longer lists are cut).
    position_weights : {"dcg", "reciprocal", "uniform"}, default="dcg"
    catalogue_size : int, optional
        Items in the catalogue (items never shown count as zero exposure); default: the
        reference's items, else every item seen so far.
    reference : mapping or path, optional
        Reference popularity (see :func:`load_popularity`): popularity lift and reference figures.
    top_fraction : float, default=0.01
    min_holdout_clicks : int, default=30
    holdout_windows : int, default=10
        Latest windows pooled for the holdout comparison.
    holdout_lift : float, default=2.0
        ``loop.holdout`` is degraded when the favourites take half the model's exposure or more
        and the holdout shows, at 97.5% confidence, that users like them less than this many
        times the rest (:mod:`.holdout`).
    store : WindowStore, URL or path, optional
        Default ``$GUARDED_STORE_URL``, else ``<state dir>/loops-<model>.sqlite``.
    interval_s : float, default=5.0
    buffer_calls : int, default=20000
    retention_lists : int, default=200000
    """

    name = "feedback_loops"
    span_scope = "anomalous"

    def __init__(self, *, item_field: str | None = None, user_field: str | None = None,
                 exploration_field: str | None = None, request_field: str = "request_id", output: str = "auto",
                 window: int = 500, alpha: float = 0.01, block: int = 1, max_rank: int = 20,
                 position_weights: str = "dcg", catalogue_size: int | None = None, reference: Any = None,
                 top_fraction: float = 0.01, min_holdout_clicks: int = 30, holdout_windows: int = 10,
                 holdout_lift: float = 2.0,
                 store: WindowStore | str | os.PathLike[str] | None = None, interval_s: float = 5.0,
                 buffer_calls: int = 20_000, retention_lists: int = 200_000, tracer_provider: Any = None) -> None:
        self.item_field = item_field
        self.user_field = user_field
        self.exploration_field = exploration_field
        self.request_field = request_field
        self.output = output
        self.window = window
        self.alpha = alpha
        self.block = block
        self.max_rank = max_rank
        self.position_weights = position_weights
        self.catalogue_size = catalogue_size
        self.reference = reference
        self.top_fraction = top_fraction
        self.min_holdout_clicks = min_holdout_clicks
        self.holdout_windows = holdout_windows
        self.holdout_lift = holdout_lift
        self.store = store
        self.interval_s = interval_s
        self.buffer_calls = buffer_calls
        self.retention_lists = retention_lists
        self.tracer_provider = tracer_provider
        self._lock = threading.Lock()
        self._buf: deque[tuple[float, Any, Mapping[str, Any], Any]] = deque()
        self._outcomes: deque[tuple[float, float, int, int, float, int]] = deque()
        self._dropped = 0
        self._pending: deque[tuple[str, dict[str, np.ndarray], int]] = deque()  # batches the store refused
        self._context: GuardContext | None = None
        self._model = "model"
        self._store_obj: WindowStore | None = None
        self._worker: PeriodicWorker | None = None
        self._ready = False
        self._checks: tuple[H.CheckResult, ...] = (
            H.CheckResult("loop", H.UNAVAILABLE, "the loop check has not started yet", affects_readiness=False),)
        self._span_attrs: Mapping[str, Any] = {}
        self._stats: dict[str, Any] = {}

    # -- life cycle ---------------------------------------------------------------------
    def bind(self, context: GuardContext | None = None) -> None:
        self._context = context
        if context is not None:
            self._model = context.model_name
        for name, v, lo in (("window", self.window, 2), ("block", self.block, 1), ("max_rank", self.max_rank, 1),
                            ("buffer_calls", self.buffer_calls, 1), ("retention_lists", self.retention_lists, 1),
                            ("holdout_windows", self.holdout_windows, 1),
                            ("min_holdout_clicks", self.min_holdout_clicks, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ConfigError(f"loop {name}={v!r} is invalid: expected an integer >= {lo}")
        lift = self.holdout_lift
        if isinstance(lift, bool) or not isinstance(lift, (int, float)) or not math.isfinite(lift) or lift <= 1:
            raise ConfigError(f"loop holdout_lift={lift!r} is invalid: expected a number > 1")
        if self.output not in OUTPUT_MODES:
            raise ConfigError(f"loop_output={self.output!r} is invalid: expected one of {OUTPUT_MODES}")
        position_weights(1, self.position_weights)
        self._weights = position_weights(self.max_rank, self.position_weights)
        self._popularity: dict[float, float] = {}
        self._names: dict[float, Any] = {}
        if self.reference is not None:
            try:
                pop = load_popularity(self.reference)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"loop_reference={self.reference!r} cannot be read: {exc}") from None
            for k, v in pop.items():
                c = item_code(k)
                self._popularity[c] = v
                self._names[c] = k

    def start(self) -> None:
        if self._worker is not None and self._worker.running:
            return
        store = self._open_store()
        try:
            store.verify()
        except ConfigError as exc:
            raise ConfigError(f"loop_store (or $GUARDED_STORE_URL): {exc}") from None
        except Exception as exc:  # down now: the worker retries and health says so
            _log.warning("loop store %s is not reachable at start: %s", store.describe(), exc)
        self._worker = PeriodicWorker(f"loops-{self._model}", self._cycle, float(self.interval_s),
                                      on_stop=self._final_cycle, join_timeout_s=max(5.0, 2 * float(self.interval_s)),
                                      weak=True).start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _open_store(self) -> WindowStore:
        if self._store_obj is None:
            if self._context is not None:
                self._store_obj = self._context.open_store(self.store, name="loops", retention=self.retention_lists)
            else:
                from ..context import default_state_dir, default_store_url
                from ..store import open_store

                target = self.store or default_store_url() or default_state_dir() / f"loops-{self._model}.sqlite"
                self._store_obj = open_store(target, retention=self.retention_lists, namespace=f"{self._model}:loops")
        return self._store_obj

    # -- request path -------------------------------------------------------------------
    def after_call(self, call: Call) -> None:
        if call.error is not None or call.result is None:
            return
        result, rid = call.result, getattr(call, "request_id", None)
        if type(result) is dict:  # the id callers send feedback with: the answer's own, else the call's
            field = self.request_field
            if field in result:
                rid = result[field]
            elif rid is not None:
                result[field] = rid  # JSON callers get it in the answer (X-Request-Id carries it too)
        buf = self._buf  # deque appends and poplefts are atomic: no lock on the request path
        buf.append((time.time(), result, call.kwargs, rid))
        if len(buf) > self.buffer_calls:
            buf.popleft()
            self._dropped += 1

    def observe_outcome(self, request_id: str, *, row: int = 0, clicked: Iterable[Any] = (),
                        label: float | None = None, source: str | None = None) -> None:
        """Record what became of one answered row: the items clicked in its list, or its true
        label (a class index), with the label's source when known (``"model"``: it exists because
        the model acted on its answer; ``"exploration"``; any other short tag: independent).
        A label of a ``(request_id, row)`` also sent through the performance capability's
        feedback (``guard.record_feedback``) is counted once, with the tag of whichever arrived
        first.

        Cheap (buffered; written to the store by the background worker, so every worker joins it).
        """
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id={request_id!r} is invalid: expected the id the prediction returned")
        if not isinstance(row, int) or isinstance(row, bool) or row < 0:
            raise ValueError(f"row={row!r} is invalid: expected a row index >= 0")
        check_source(source)
        rc, sc, now = item_code(request_id), source_code(source), time.time()
        items = [clicked] if isinstance(clicked, (str, int)) else list(clicked)
        if label is not None and (not isinstance(label, (int, float, np.integer, np.floating))
                                  or isinstance(label, bool) or not math.isfinite(float(label))):
            raise ValueError(f"label={label!r} is invalid: expected a class index (a number)")
        with self._lock:
            for it in items:
                c = item_code(it)
                self._remember(c, it)
                self._outcomes.append((now, rc, row, 0, c, sc))
            if label is not None:
                self._outcomes.append((now, rc, row, 1, float(label), sc))
            while len(self._outcomes) > self.buffer_calls:
                self._outcomes.popleft()
                self._dropped += 1

    def _remember(self, code: float, value: Any) -> None:
        if code < 0 and len(self._names) < 200_000:
            self._names[code] = value

    # -- read side ----------------------------------------------------------------------
    def checks(self) -> Iterable[H.CheckResult]:
        return self._checks

    def span_attributes(self) -> Mapping[str, Any]:
        return self._span_attrs

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            buffered, dropped = len(self._buf), self._dropped
        out = {**self._stats, "buffered_calls": buffered, "pending_lists": sum(n for _, _, n in self._pending),
               "dropped": dropped, "worker_pid": os.getpid()}
        if self._store_obj is not None:
            out["store"] = self._store_obj.describe()
        if self._worker is not None:
            out["background"] = self._worker.stats()
        return out

    # -- background: set up -------------------------------------------------------------
    def _setup(self) -> None:
        self._store = self._open_store()
        self._streams = {k: f"{self._model}:loops:{k}" for k in ("lists", "classes", "outcomes")}
        self._batch_prefix = f"{uuid.uuid4().hex[:16]}-{os.getpid()}"
        self._batch_seq = 0
        self._pos = {k: 0 for k in self._streams}
        self._catalogue: dict[float, int] = {c: i for i, c in enumerate(self._popularity)}
        self._pop_vec = np.array(list(self._popularity.values()), dtype=float) if self._popularity else None
        self._cur: _Window | None = None
        self._closed: deque[_Window] = deque(maxlen=max(self.holdout_windows, 50))
        self._history: deque[dict[str, Any]] = deque(maxlen=200)
        self._last_list: OrderedDict[float, frozenset[float]] = OrderedDict()
        self._recent: OrderedDict[tuple[float, int], tuple[int, bool, tuple[float, ...]]] = OrderedDict()
        self._recent_classes: OrderedDict[tuple[float, int], float] = OrderedDict()
        self._pending_outcomes: deque[tuple[np.ndarray, int]] = deque()
        measures = {"gini": "up", "top_share": "up", "entropy": "down", "coverage": "down"}
        if self._pop_vec is not None:
            measures["popularity_lift"] = "up"
        self._alarm = ConcentrationAlarm(alpha=self.alpha, measures=measures, block=self.block)
        self._coupling = OutcomeCoupling(max_rank=self.max_rank)
        self._holdout: HoldoutComparison | None = None
        self._store_error: str | None = None
        self._lists_read = self._outcomes_joined = self._outcomes_unmatched = 0
        self._reference = self._reference_figures()
        self._flushed = 0
        self._setup_telemetry()
        self._perf_store = self._performance_outcomes()
        self._perf_seq = 0
        self._perf_labels = 0
        self._labels_seen: OrderedDict[tuple[float, int], None] = OrderedDict()
        self._labels_twice = 0

    def _setup_telemetry(self) -> None:
        from opentelemetry import metrics, trace

        from .._version import __version__

        ctx = self._context
        if self.tracer_provider is not None or ctx is None:
            self._tracer = (self.tracer_provider or trace.get_tracer_provider()).get_tracer("guarded_serving",
                                                                                           __version__)
            meter = metrics.get_meter("guarded_serving", __version__)
        else:
            self._tracer, meter = ctx.tracer(), ctx.meter()
        attrs = {"guard.model.name": self._model}

        def latest(measure: str) -> Any:
            def observe(options: Any) -> Any:
                from opentelemetry.metrics import Observation

                h = self._history[-1] if self._history else None
                if h is not None and h.get(measure) is not None:
                    yield Observation(float(h[measure]), attrs)
            return observe

        def capital(options: Any) -> Any:
            from opentelemetry.metrics import Observation

            _, a = self._alarm.leading()
            yield Observation(a.log10_capital_ - a.threshold_, attrs)

        meter.create_observable_gauge("guard.loop.exposure_gini", [latest("gini")], unit="1",
                                      description="Gini of position-weighted exposure in the latest closed window.")
        meter.create_observable_gauge("guard.loop.coverage", [latest("coverage")], unit="1",
                                      description="Share of the catalogue shown in the latest closed window.")
        meter.create_observable_gauge("guard.loop.alarm_log10_margin", [capital], unit="1",
                                      description="log10 capital of the loop alarm minus its threshold (>= 0: alarm).")

    def _emit_window(self, summary: dict[str, Any]) -> None:
        """One span per closed window, with the window's measures as an event (only when recording)."""
        span = self._tracer.start_span(f"guard {self._model} loop", attributes={"guard.model.name": self._model})
        try:
            if span.is_recording():
                ev = {f"guard.loop.{k}": v for k, v in summary.items() if isinstance(v, (int, float))}
                ev["guard.loop.alarm"] = self._alarm.alarm
                span.add_event("guard.loop.window", ev)
        finally:
            span.end()

    def _performance_outcomes(self) -> Any:
        """The performance capability's outcome store (labels sent with ``guard.record_feedback`` or
        ``POST /guard/feedback``, joined to their predictions), when this guard has it; read only."""
        ctx = self._context
        if ctx is None:
            return None
        try:
            sec = ctx.config.section("performance")
        except KeyError:
            return None
        if not getattr(sec, "enabled", False):
            return None
        from ..context import default_state_dir, default_store_url
        from ..store.outcomes import SQLiteOutcomeStore

        # the same store the performance capability opens (its setting, else $GUARDED_STORE_URL, else SQLite)
        target = getattr(sec, "performance_store", None) or default_store_url() or \
            default_state_dir() / f"outcomes-{self._model}.sqlite"
        if str(target).startswith(("redis://", "rediss://")):
            from ..store import PASSWORD_ENV
            from ..store.outcomes_redis import RedisOutcomeStore

            return RedisOutcomeStore(str(target), namespace=f"{self._model}:outcomes",
                                     password=os.environ.get(PASSWORD_ENV) or None)
        return SQLiteOutcomeStore(target)

    def _reference_figures(self) -> dict[str, float]:
        if self._pop_vec is None:
            return {}
        n = max(len(self._pop_vec), self.catalogue_size or 0)
        return {"gini": gini(self._pop_vec, n), "entropy": normalised_entropy(self._pop_vec, n),
                "top_share": top_share(self._pop_vec, n, self.top_fraction), "popularity_lift": 1.0,
                "coverage": float(np.count_nonzero(self._pop_vec) / n)}

    def _cycle(self) -> None:
        if not self._ready:
            try:
                self._setup()
            except Exception as exc:
                self._checks = (H.CheckResult("loop", H.DEGRADED, f"the loop check could not start (retrying): "
                                              f"{type(exc).__name__}: {exc}", affects_readiness=False),)
                raise
            self._ready = True
        try:
            self.run_once()
        except Exception as exc:
            self._store_error = f"{type(exc).__name__}: {exc}"
            self._publish()
            raise

    def _final_cycle(self) -> None:
        if not self._ready:
            return
        try:
            self.run_once()
        finally:
            self._store.close()
            self._store_obj = None
            if self._perf_store is not None:
                self._perf_store.close()

    def run_once(self) -> None:
        """One background cycle: flush, measure, judge, publish (callable directly in tests)."""
        if not self._ready:
            self._setup()
            self._ready = True
        self.flush()
        self._analyse()
        self._store_error = None
        self._publish()

    # -- background: flush --------------------------------------------------------------
    def flush(self) -> int:
        """Write buffered answers and outcomes to the store in one ``append_batches``; return lists written."""
        if not self._ready:
            self._setup()
            self._ready = True
        buf = self._buf
        calls = [buf.popleft() for _ in range(len(buf))]  # what request threads append meanwhile stays
        with self._lock:
            outcomes, self._outcomes = list(self._outcomes), deque()
        lists, classes = [], []
        for ts, result, kwargs, rid in calls:
            try:
                self._rows_of(ts, result, kwargs, rid, lists, classes)
            except Exception:  # an answer we cannot read is skipped and counted, never fatal
                self._stats["unreadable_answers"] = self._stats.get("unreadable_answers", 0) + 1
        streams: dict[str, np.ndarray] = {}
        if lists:
            streams[self._streams["lists"]] = np.array(lists, dtype=float)
        if classes:
            streams[self._streams["classes"]] = np.array(classes, dtype=float)
        if outcomes:
            streams[self._streams["outcomes"]] = np.array(outcomes, dtype=float)
        if streams:
            self._batch_seq += 1
            self._pending.append((f"{self._batch_prefix}-{self._batch_seq}", streams, len(lists)))
        while sum(n for _, _, n in self._pending) > self.buffer_calls and len(self._pending) > 1:
            self._dropped += self._pending.popleft()[2]  # the store has been failing long: oldest first
        if not self._pending:
            return 0
        sending = list(self._pending)
        # a batch the store refused keeps its id: a retry of one applied but not acknowledged is not doubled
        self._store.append_batches([(bid, st) for bid, st, _ in sending])
        for _ in sending:
            self._pending.popleft()
        n = sum(k for _, _, k in sending)
        self._flushed += n
        return n

    def _field(self, name: str | None, kwargs: Mapping[str, Any], result: Any) -> Any:
        if name is None:
            return None
        if name in kwargs:
            return kwargs[name]
        if isinstance(result, Mapping):
            return result.get(name)
        return None

    def _rows_of(self, ts: float, result: Any, kwargs: Mapping[str, Any], rid: Any,
                 lists: list[list[float]], classes: list[list[float]]) -> None:
        out = extract_output(result, self.item_field)
        if out is None:
            return
        if isinstance(out, np.ndarray):
            out = out.tolist()
        if not isinstance(out, (list, tuple)):
            out = [out]
        mode = self.output
        if mode == "auto":
            nested = bool(out) and isinstance(out[0], (list, tuple, np.ndarray))
            listed = isinstance(result, Mapping) and (self.item_field is not None or any(
                k in result for k in _LIST_KEYS))
            mode = "ranking" if nested or listed else "classes"
        if mode == "ranking" and out and not isinstance(out[0], (list, tuple, np.ndarray)):
            out = [out]  # one list for the call
        n = len(out)
        rcode = item_code(str(rid)) if rid is not None else float("nan")
        users = _per_row(self._field(self.user_field, kwargs, result), n)
        explore = _per_row(self._field(self.exploration_field, kwargs, result), n)
        if mode == "classes":
            a = np.asarray(out, dtype=float)
            cls = a.argmax(1) if a.ndim == 2 else (a >= 0.5).astype(float) if np.all((a >= 0) & (a <= 1)) \
                and not np.all(a == np.round(a)) else a
            for r in range(n):
                classes.append([ts, rcode, r, float(cls[r]), float(bool(explore[r]))])
            return
        K = self.max_rank
        for r in range(n):
            lst = out[r] if mode == "ranking" else [out[r]]
            if isinstance(lst, np.ndarray):
                lst = lst.tolist()
            lst = list(lst)[:K]
            row = [ts, item_code(users[r]) if users[r] is not None else float("nan"), float(bool(explore[r])),
                   rcode, float(r), float(len(lst))]
            codes = [item_code(i) for i in lst]
            for c, i in zip(codes, lst):
                if c < 0:
                    self._remember(c, i)
            row += codes + [float("nan")] * (K - len(codes))
            lists.append(row)

    # -- background: measure and judge ------------------------------------------------------
    def _analyse(self) -> None:
        st = self._store
        rows, new_pos = st.rows_after(self._streams["lists"], self._pos["lists"], 1_000_000)
        if rows.size and rows.shape[1] == _HEAD + self.max_rank:
            first = new_pos - len(rows) + 1
            for i, row in enumerate(rows):
                self._add_list(first + i, row)
        self._pos["lists"] = new_pos
        self._lists_read += len(rows)
        crow, self._pos["classes"] = st.rows_after(self._streams["classes"], self._pos["classes"], 1_000_000)
        if crow.size:
            self._coupling.add_predictions(crow[:, 3])
            for r in crow:
                self._recent_classes[(r[1], int(r[2]))] = r[3]
            while len(self._recent_classes) > 200_000:
                self._recent_classes.popitem(last=False)
        orow, self._pos["outcomes"] = st.rows_after(self._streams["outcomes"], self._pos["outcomes"], 1_000_000)
        if orow.size:
            self._pending_outcomes.append((orow, 0))
        self._join_outcomes()
        if self._perf_store is not None:  # labels recorded through the performance capability's feedback
            got = self._perf_store.outcomes_after(self._perf_seq, 100_000)
            if got:
                self._perf_seq = int(got[-1][0])
                cls, src = [], []
                for r in got:  # (seq, ver, seg, kind, predicted, label, pts, lts, view, source, request_id, row)
                    if r[3] != "classification" or r[4] is None:
                        continue
                    if len(r) >= 12 and r[10] is not None and not self._first_label((item_code(r[10]), int(r[11]))):
                        self._labels_twice += 1
                        continue
                    cls.append(float(r[4]))
                    src.append(source_code(r[9] if len(r) >= 10 else None))
                if cls:
                    self._coupling.add_labels(np.array(cls), np.array(src, dtype=int))
                    self._perf_labels += len(cls)
        if self._closed:
            self._compare_holdout()

    def _add_list(self, position: int, row: np.ndarray) -> None:
        w = (position - 1) // self.window
        if self._cur is None:
            self._cur = _Window(w, self.max_rank)
        while w > self._cur.index:
            self._close(self._cur)
            self._cur = _Window(self._cur.index + 1, self.max_rank)
        cur = self._cur
        n = int(row[5])
        items = row[_HEAD:_HEAD + n]
        explore = bool(row[2])
        weights = self._weights[:n]
        target = cur.holdout_shows if explore else cur.exposure
        for c, wt in zip(items.tolist(), weights.tolist()):
            target[c] = target.get(c, 0.0) + wt
            if c not in self._catalogue:
                self._catalogue[c] = len(self._catalogue)
        if explore:
            cur.holdout_lists += 1
        else:
            cur.lists += 1
            user = row[1]
            if not math.isnan(user):
                s = frozenset(items.tolist())
                prev = self._last_list.pop(user, None)
                if prev is not None:
                    cur.jaccard_sum += len(s & prev) / max(1, len(s | prev))
                    cur.jaccard_n += 1
                self._last_list[user] = s
                if len(self._last_list) > 100_000:
                    self._last_list.popitem(last=False)
        if not math.isnan(row[3]):
            self._recent[(row[3], int(row[4]))] = (w, explore, tuple(items.tolist()))
            if len(self._recent) > 200_000:
                self._recent.popitem(last=False)

    def _vector(self, exposure: Mapping[float, float]) -> np.ndarray:
        n = max(len(self._catalogue), self.catalogue_size or 0)
        e = np.zeros(n)
        for c, v in exposure.items():
            e[self._catalogue[c]] = v
        return e

    def _close(self, w: _Window) -> None:
        self._closed.append(w)
        if w.lists == 0:
            return
        e = self._vector(w.exposure)
        pop = None
        if self._pop_vec is not None:
            pop = np.zeros(len(e))
            pop[: len(self._pop_vec)] = self._pop_vec
        s = summarise(e, n_items=len(e), n_lists=w.lists, popularity=pop, top_fraction=self.top_fraction,
                      jaccard_mean=w.jaccard_sum / w.jaccard_n if w.jaccard_n else None)
        self._alarm.update({m: getattr(s, m) for m in self._alarm.measures})
        self._history.append({"window": w.index, **s.to_dict(), "holdout_lists": w.holdout_lists})
        self._emit_window(self._history[-1])
        self._last_summary: ExposureSummary = s

    def _join_outcomes(self) -> None:
        keep: deque[tuple[np.ndarray, int]] = deque()
        by_index = {w.index: w for w in self._closed}
        if self._cur is not None:
            by_index[self._cur.index] = self._cur
        labels_cls, labels_src = [], []
        for rows, tries in self._pending_outcomes:
            left = []
            for r in rows:
                key = (r[1], int(r[2]))
                if r[3] == 1:  # a label
                    cls = self._recent_classes.get(key)
                    if cls is None:
                        left.append(r)
                        continue
                    if not self._first_label(key):  # also sent through the performance feedback: counted once
                        self._labels_twice += 1
                        self._outcomes_joined += 1
                        continue
                    labels_cls.append(cls)
                    labels_src.append(int(r[5]))
                    self._outcomes_joined += 1
                    continue
                got = self._recent.get(key)
                if got is None:
                    left.append(r)
                    continue
                w_index, explore, items = got
                w = by_index.get(w_index)
                self._outcomes_joined += 1
                if w is None or r[4] not in items:
                    continue
                rank = items.index(r[4])
                if explore:
                    w.holdout_clicks[r[4]] = w.holdout_clicks.get(r[4], 0.0) + 1.0
                else:
                    w.model_clicks[r[4]] = w.model_clicks.get(r[4], 0.0) + 1.0
                    if rank < self.max_rank:
                        w.clicks_by_rank[rank] += 1
            if left:
                if tries < 12:  # its list may still sit in another worker's buffer: retry a few cycles
                    keep.append((np.array(left), tries + 1))
                else:
                    self._outcomes_unmatched += len(left)
        self._pending_outcomes = keep
        if labels_cls:
            self._coupling.add_labels(np.array(labels_cls), np.array(labels_src))

    def _first_label(self, key: tuple[float, int]) -> bool:
        """Whether this is the first label of ``(request code, row)`` seen through either path
        (``observe_outcome`` or the performance capability's feedback); bounded memory."""
        if key in self._labels_seen:
            return False
        self._labels_seen[key] = None
        if len(self._labels_seen) > 200_000:
            self._labels_seen.popitem(last=False)
        return True

    def _compare_holdout(self) -> None:
        ws = list(self._closed)[-self.holdout_windows:]
        if self._cur is not None:
            ws.append(self._cur)
        # favourites per window, judged on that window's holdout (holdout.windowed_holdout_comparison)
        self._holdout = windowed_holdout_comparison(
            [(w.exposure, w.holdout_shows, w.holdout_clicks, w.model_clicks) for w in ws],
            min_clicks=self.min_holdout_clicks, lift=self.holdout_lift)

    # -- publishing -----------------------------------------------------------------------
    def name_of(self, code: float) -> str:
        v = self._names.get(code)
        if v is not None:
            return str(v)
        return str(int(code)) if code >= 0 else f"#{int(-code - 1):012x}"

    def _publish(self) -> None:
        checks = [self._store_check(), self._exposure_check(), self._alarm_check(), self._holdout_check(),
                  *self._outcome_checks()]
        self._checks = tuple(checks)
        leading, _ = self._alarm.leading()
        attrs: dict[str, Any] = {"guard.loop.status": "loop" if self._alarm.alarm else "ok"}
        if self._alarm.alarm:
            attrs["guard.loop.measure"] = leading
        self._span_attrs = attrs
        self._stats = {"pooled_lists_read": self._lists_read, "flushed_lists": self._flushed,
                       "windows": len(self._history), "window_lists": self.window,
                       "current_window": self._cur.index if self._cur else None,
                       "current_window_lists": (self._cur.lists + self._cur.holdout_lists) if self._cur else 0,
                       "latest": self._history[-1] if self._history else None,
                       "history": list(self._history)[-50:], "alarm": self._alarm.to_dict(),
                       "reference": self._reference,
                       "holdout": self._holdout.to_dict() if self._holdout else None,
                       "ctr_by_rank": [None if math.isnan(x) else round(float(x), 5)
                                       for x in self._coupling.ctr_by_rank(last=3)][:10],
                       "label_coverage_by_class": self._coupling.coverage_by_class(),
                       "label_sources": self._coupling.source_shares(),
                       "outcomes_joined": self._outcomes_joined, "outcomes_unmatched": self._outcomes_unmatched,
                       "performance_labels": self._perf_labels, "labels_counted_once": self._labels_twice}

    def _store_check(self) -> H.CheckResult:
        where = self._store_obj.describe() if self._store_obj is not None else "the loop store"
        if self._store_error:
            pending = sum(n for _, _, n in self._pending)
            return H.CheckResult("loop.store", H.DEGRADED, f"{where} failed: {self._store_error}; {pending} lists "
                                 f"pending (bounded at {self.buffer_calls}), retrying ({self._dropped} dropped so far)",
                                 affects_readiness=False)
        return H.CheckResult("loop.store", H.OK, f"{where}: flushes succeed ({self._dropped} answers dropped so far)",
                             affects_readiness=False)

    def _exposure_check(self) -> H.CheckResult:
        if not self._history:
            got = (self._cur.lists + self._cur.holdout_lists) if self._cur else 0
            return H.CheckResult("loop.exposure", H.UNAVAILABLE, f"no closed window yet ({got} of {self.window} "
                                 "pooled lists in the first)", affects_readiness=False)
        h = self._history[-1]
        ref = self._reference

        def fig(m: str, fmt: str) -> str:
            v = h.get(m)
            if v is None:
                return ""
            r = ref.get(m)
            return f"{m} {format(v, fmt)}" + (f" (reference {format(r, fmt)})" if r is not None else "")

        parts = [fig("gini", ".3f"), fig("entropy", ".3f"), fig("coverage", ".1%"), fig("top_share", ".1%"),
                 fig("popularity_lift", ".2f"), fig("jaccard", ".2f")]
        text = ", ".join(p for p in parts if p)
        if self.catalogue_size is None and self._pop_vec is None:
            text += (f"; catalogue unknown: measured over the {len(self._catalogue)} items seen so far, which grows "
                     "while new items appear (set loop_catalogue_size or loop_reference)")
        return H.CheckResult("loop.exposure", H.OK, f"window {h['window']} ({h['n_lists']} model lists, "
                             f"{h['holdout_lists']} holdout): {text}", h, affects_readiness=False)

    def _alarm_check(self) -> H.CheckResult:
        al = self._alarm
        d = al.to_dict()
        if al.n_seen_ == 0:
            return H.CheckResult("loop.alarm", H.UNAVAILABLE, "no closed window judged yet", d,
                                 affects_readiness=False)
        m, a = al.leading()
        vals = a.values_
        recent = vals[-10:]
        slope = trend_slope(recent)
        base = float(np.median(vals[:5]))
        ref = self._reference.get(m)
        ref_text = f"reference {ref:.3g}, " if ref is not None else ""
        lag1 = _lag1(vals)
        d = {**d, "measure": m, "windows": al.n_seen_, "alarm_at": a.alarm_at_, "slope_per_window": slope, "first_windows_median": base, "reference": ref,
             "latest": vals[-1], "lag1_autocorrelation": lag1}
        if al.alarm:
            return H.CheckResult(
                "loop.alarm", H.DEGRADED,
                f"feedback loop: {m} keeps {'rising' if a.direction == 'up' else 'falling'} -- {recent[0]:.3g} -> "
                f"{recent[-1]:.3g} over the last {len(recent)} judged windows ({slope:+.3g} per window; "
                f"{ref_text}first windows {base:.3g}); sequential rank test reached 10^{a.log10_max_:.1f} >= "
                f"1/{a.alpha:.2g} after {a.alarm_at_} judged windows (false-alarm probability <= {al.alpha:g} over all "
                f"{len(al.alarms_)} measures while windows stay exchangeable)", d, affects_readiness=False)
        warn = ""
        if not math.isnan(lag1) and lag1 > 0.5 and al.n_seen_ >= 10 and self.block == 1:
            warn = f"; successive windows correlate (lag-1 r={lag1:.2f}): raise loop_block for the bound to hold"
        return H.CheckResult("loop.alarm", H.OK, f"no sustained rise in concentration over {al.n_seen_} windows "
                             f"(closest: {m} {vals[-1]:.3g}, {ref_text}capital 10^{a.log10_capital_:.1f}, alarm at "
                             f"10^{a.threshold_:.1f}){warn}", d, affects_readiness=False)

    def _holdout_check(self) -> H.CheckResult:
        c = self._holdout
        if c is None:
            return H.CheckResult("loop.holdout", H.UNAVAILABLE, "no exploration (holdout) lists yet"
                                 + ("" if self.exploration_field else ": set loop_exploration_field"),
                                 affects_readiness=False)
        d = c.to_dict()
        names = ", ".join(self.name_of(f) for f in c.favourites[:5])
        d["favourites"] = [self.name_of(f) for f in c.favourites[:20]]
        if not c.judged:
            return H.CheckResult("loop.holdout", H.OK, f"{c.holdout_clicks} holdout clicks, fewer than "
                                 f"{self.min_holdout_clicks} needed to compare", d, affects_readiness=False)
        figures = (f"the model's {len(c.favourites)} favourites ({names}{', ...' if len(c.favourites) > 5 else ''}) "
                   f"take {c.favourites_exposure_share:.0%} of its exposure; on the random holdout they are clicked "
                   f"{c.holdout_ctr_favourites:.2%} vs {c.holdout_ctr_rest:.2%} for the rest (lift {c.ratio:.2f}, "
                   f"95% CI {c.ratio_low:.2f}-{c.ratio_high:.2f}, {c.holdout_clicks} holdout clicks; favourites "
                   f"chosen per window)")
        if c.verdict == "exposure only":
            return H.CheckResult("loop.holdout", H.DEGRADED, f"users may only see these items (the holdout shows they "
                                 f"are liked less than {c.lift:g}x the rest: upper 97.5% bound {c.ratio_high:.2f}; "
                                 f"favourites that are liked {c.lift:g}x or more get this verdict with probability "
                                 f"<= 2.5%): {figures}", d, affects_readiness=False)
        what = "users like these items" if c.verdict == "earned" else "not decided"
        return H.CheckResult("loop.holdout", H.OK, f"{what}: {figures}", d, affects_readiness=False)

    def _outcome_checks(self) -> list[H.CheckResult]:
        out = []
        cp = self._coupling
        cp.windows_.clear()
        for w in self._closed:  # clicks may join a window after it closed: recount from the windows kept
            if w.lists:
                cp.add_window(w.index, w.lists, w.clicks_by_rank)
        shares = cp.top_rank_share()
        ctr = cp.ctr_by_rank(last=3)
        cov = cp.coverage_by_class()
        src = cp.source_shares()
        details = {"label_coverage_by_class": cov, "label_sources": src, "top_rank_click_share": shares[-10:],
                   "ctr_by_rank": [None if math.isnan(x) else float(x) for x in ctr[:10]]}
        problems = []
        cov_judged = {c: v for c, v in cov.items() if cp.predicted_[c] >= 30}  # classes predicted often enough
        if len(cov_judged) >= 2 and cp.labelled_.sum() >= 20:
            cov = cov_judged
            hi, lo = max(cov.values()), min(cov.values())
            if hi >= 0.2 and lo <= 0.1 * hi:
                low = [c for c, v in cov.items() if v <= 0.1 * hi]
                problems.append(f"labels arrive mostly where the model predicted class "
                                f"{max(cov, key=cov.get)} (coverage {', '.join(f'class {c} {v:.0%}' for c, v in cov.items())}); "
                                f"class(es) {low} are almost never labelled, so a model retrained on these "
                                "labels learns from its own decisions")
        if src and src.get("model", 0.0) >= 0.8:
            problems.append(f"{src['model']:.0%} of the tagged labels were produced by the model's own outputs")
        if problems:
            out.append(H.CheckResult("loop.outcomes", H.DEGRADED, "; ".join(problems), details,
                                     affects_readiness=False))
        elif cov or src or self._outcomes_joined:
            clicks = [x for x in shares if not math.isnan(x)]
            trend = (f"; rank 1 took {clicks[0]:.0%} -> {clicks[-1]:.0%} of the clicks over {len(clicks)} windows"
                     if len(clicks) >= 2 else "")
            out.append(H.CheckResult("loop.outcomes", H.OK, f"{self._outcomes_joined + self._perf_labels} outcomes "
                                     f"joined by request id{trend}; label coverage by class "
                                     f"{ {c: round(v, 3) for c, v in cov.items()} or 'n/a'}; label sources "
                                     f"{src or 'untagged'}", details, affects_readiness=False))
        else:
            out.append(H.CheckResult("loop.outcomes", H.UNAVAILABLE, "no outcomes yet (observe_outcome or the "
                                     "feedback endpoint)", details, affects_readiness=False))
        return out


def _per_row(value: Any, n: int) -> Sequence[Any]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) == n:
            return value
        return [value[0] if value else None] * n
    return [value] * n


def _lag1(values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    if len(v) < 5 or np.std(v) == 0:
        return float("nan")
    return float(np.corrcoef(v[:-1], v[1:])[0, 1])
