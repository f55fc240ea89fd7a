"""The drift component: buffers on the request path, tests in the background.

Request path (``after_call``): append references to the call's input matrix,
result and conformal p-values (``call.state[EDGE_P_VALUES]``, when a component
provides them) to a bounded in-memory buffer. O(1); nothing is copied or
computed there.

Background worker (a :class:`~guarded_serving.worker.PeriodicWorker`, every ``interval_s``):

1. flush the buffer to the shared store (inputs, model outputs, p-values:
   three streams, one batch with an id, one round trip), so every worker of
   the host -- or of every host, with a Redis store -- pools its rows. A batch
   the store refused stays pending and is sent again next cycle (the id keeps
   a retried batch from being counted twice); pending rows are bounded like
   the buffer, the oldest dropped and counted first;
2. test the latest ``window`` pooled rows against the reference (features,
   all features jointly, and predictions), feed the new pooled input rows to the
   sequential alarm (:class:`~.sequential.OnlineConformalMartingale`; without a
   reference, the edge p-values to :class:`~.sequential.ConformalMartingale`), and, once
   ``skew_first_n`` rows arrived after this worker started, run the skew check;
3. cache the verdicts for ``health()`` / ``span_attributes()``, update the
   metrics and emit one span ``guard <model> drift`` with an event
   ``guard.drift.window`` carrying the window's results.

The verdicts describe the pooled window, so every worker reports the same
picture (give or take one interval).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .. import health as H
from ..component import Component
from ..errors import ConfigError
from ..keys import EDGE_P_VALUES, FEATURES, REFERENCE, ReferenceData
from ..store.base import WindowStore
from ..worker import PeriodicWorker
from .predictions import PredictionDrift, default_output_extractor
from .sequential import ConformalMartingale, OnlineConformalMartingale
from .skew import SkewCheck, SkewFinding
from .windows import WindowReport, WindowTest

if TYPE_CHECKING:
    from ..call import Call
    from ..context import GuardContext

__all__ = ["DriftComponent", "load_reference_npz"]

_log = logging.getLogger("guarded_serving.drift")


class DriftComponent(Component):
    """Windowed drift tests, prediction drift, a sequential alarm and startup skew.

    Parameters
    ----------
    reference : ndarray of shape (n_samples, n_features), optional
        Training (reference) rows. When None (and no ``reference_path``), the
        ``REFERENCE`` another component provides (the edge-case profile's).
    feature_names : sequence of str, optional
    categorical : sequence of int, default=()
        Indices of categorical features.
    reference_predictions : ndarray, optional
        The model's outputs on reference rows; enables prediction drift.
    store : WindowStore, URL or path, optional
        Shared store: a store, a ``redis://`` / ``rediss://`` URL (many hosts), or the path
        of a SQLite file (one host); default ``$GUARDED_STORE_URL``, else
        ``<state dir>/drift-<model>.sqlite``.
    window : int, default=2000
        Latest pooled rows tested.
    alpha, min_effect, min_samples : window test settings (BH level, smallest
        effect, smallest window that may alarm).
    skew_first_n : int, default=500
    skew_alpha : float, default=0.001
    sequential_alpha : float, default=0.01
        Bound on the probability that the sequential alarm is ever raised while
        the pooled input rows stay exchangeable with the reference.
    joint_test : bool, default=True
        Add the joint (multivariate) test to the window tests (two numeric features or more).
    sequential_max_rows : int, default=1000
        Most pooled input rows the sequential alarm consumes per cycle. When more arrived, it takes a
        uniform random subsample of them, in order (the rest skipped and counted in
        ``sequential_skipped_rows``): the subsample is chosen without looking at the values, so the
        alarm's guarantee holds for it, and the alarm's cost per cycle is bounded whatever the row rate.
    interval_s : float, default=5.0
        Period of the background thread.
    buffer_rows : int, default=10000
        Bound of the in-memory buffer between flushes: beyond it, a uniform reservoir sample of the
        interval's calls is kept (counted in ``sampled_out_rows``, the rate stated in the drift
        reasons); also the bound of the rows kept pending while the store fails (oldest dropped).
    retention_rows : int, default=100000
        Rows per stream kept in the store.
    output_extractor : callable, default=default_output_extractor
        ``result -> ndarray or None``: the model's outputs from ``call.result``.
    reference_path : path, optional
        An .npz to read the reference from when the worker starts (see
        :func:`load_reference_npz`); used when ``reference`` is None.
    tracer_provider, meter_provider : optional
        Default: the guard's (BentoML's inside a worker, else the global ones).
    """

    name = "drift"
    span_scope = "anomalous"  # context for anomalous spans (all spans with span_detail="full")
    needs = (FEATURES, EDGE_P_VALUES, REFERENCE)

    def __init__(self, *, reference: np.ndarray | None = None, feature_names: Sequence[str] | None = None,
                 categorical: Sequence[int] = (), reference_predictions: np.ndarray | None = None,
                 store: WindowStore | str | os.PathLike[str] | None = None, window: int = 2000,
                 alpha: float = 0.01, min_effect: float = 0.15, min_samples: int = 200,
                 skew_first_n: int = 500, skew_alpha: float = 0.001, sequential_alpha: float = 0.01,
                 joint_test: bool = True, sequential_max_rows: int = 1000,
                 interval_s: float = 5.0, buffer_rows: int = 10_000, retention_rows: int = 100_000,
                 output_extractor: Callable[[Any], np.ndarray | None] = default_output_extractor,
                 reference_path: str | os.PathLike[str] | None = None, store_digits: int | None = None,
                 tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.reference = reference
        self.reference_path = reference_path
        self.store_digits = store_digits
        self.feature_names = feature_names
        self.categorical = categorical
        self.reference_predictions = reference_predictions
        self.store = store
        self.window = window
        self.alpha = alpha
        self.min_effect = min_effect
        self.min_samples = min_samples
        self.skew_first_n = skew_first_n
        self.skew_alpha = skew_alpha
        self.sequential_alpha = sequential_alpha
        self.joint_test = joint_test
        self.sequential_max_rows = sequential_max_rows
        self.interval_s = interval_s
        self.buffer_rows = buffer_rows
        self.retention_rows = retention_rows
        self.output_extractor = output_extractor
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._lock = threading.Lock()
        self._buf: list[tuple[int, np.ndarray, Any, Any]] = []   # (arrival number, inputs, result, p-values)
        self._buf_rows = 0
        self._dropped = 0            # rows that never reach the store: sampled out of a full buffer, or pending overflow
        self._sampled_out = 0        # ... of which sampled out (the reservoir)
        self._seen_rows = 0          # rows offered to the buffer
        self._interval_calls = 0     # calls offered since the last flush (the reservoir's count)
        self._arrivals = 0
        self._rand = random.Random(0x5EED)
        self._last_sample: tuple[int, int] = (0, 0)   # (rows kept, rows offered) in the latest flush interval
        self._cycle_lock = threading.Lock()
        self._cpu_s = 0.0
        self._last_cycle_cpu_ms = 0.0
        self._pending: deque[tuple[str, dict[str, np.ndarray], int, bool]] = deque()
        self._pending_rows = 0
        self._recovered = 0
        self._store_obj: WindowStore | None = None
        self._batch_prefix = ""
        self._batch_seq = 0
        self._unreadable_outputs = 0
        self._worker: PeriodicWorker | None = None
        self._context: GuardContext | None = None
        self._provided: ReferenceData | None = None
        self._ready = False
        self._model = "model"
        self._checks: tuple[H.CheckResult, ...] = (
            H.CheckResult("drift", H.UNAVAILABLE, "drift monitoring has not started yet", affects_readiness=False),)
        self._span_attrs: Mapping[str, Any] = {}
        self._stats: dict[str, Any] = {}

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_profile(cls, profile: Any, **kwargs: Any) -> "DriftComponent":
        """Build from a reference profile with ``reference``, ``feature_names``,
        ``categorical`` and ``reference_predictions`` attributes (duck-typed)."""
        return cls(reference=np.asarray(profile.reference, dtype=float),
                   feature_names=list(getattr(profile, "feature_names", None) or []) or None,
                   categorical=tuple(getattr(profile, "categorical", None) or ()),
                   reference_predictions=getattr(profile, "reference_predictions", None), **kwargs)

    # -- lifecycle -------------------------------------------------------------------
    def bind(self, context: "GuardContext | None" = None) -> None:
        self._context = context
        if context is not None:
            self._model = context.model_name
            self._provided = context.get(REFERENCE, None)
        for name, v, lo in (("window", self.window, 2), ("min_samples", self.min_samples, 1),
                            ("skew_first_n", self.skew_first_n, 2), ("buffer_rows", self.buffer_rows, 1),
                            ("retention_rows", self.retention_rows, 1)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name}={v!r} is invalid: expected an integer >= {lo}")
        if not (self.interval_s > 0):
            raise ValueError(f"interval_s={self.interval_s!r} is invalid: expected seconds > 0")
        if not callable(self.output_extractor):
            raise ValueError(f"output_extractor={self.output_extractor!r} is invalid: expected a callable")

    def start(self) -> None:
        if self._worker is not None and self._worker.running:
            return
        self._verify_store()
        self._worker = PeriodicWorker(f"drift-{self._model}", self._cycle, float(self.interval_s),
                                      on_stop=self._final_cycle,
                                      join_timeout_s=max(5.0, 2 * float(self.interval_s)), weak=True).start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def _open_store(self) -> WindowStore:
        """The store (opened once; nothing connects until it is used)."""
        if self._store_obj is None:
            retention = max(self.retention_rows, self.window, self.skew_first_n)
            if self._context is not None:
                self._store_obj = self._context.open_store(self.store, name="drift", retention=retention)
            else:
                from ..context import default_state_dir, default_store_url
                from ..store import open_store

                target = self.store or default_store_url() or default_state_dir() / f"drift-{self._model}.sqlite"
                self._store_obj = open_store(target, retention=retention, namespace=f"{self._model}:drift")
        return self._store_obj

    def _verify_store(self) -> None:
        """At start: a store that can never work (Redis refusing the password) is a ConfigError
        naming the setting; a store that is only down now is retried by the worker."""
        store = self._open_store()
        try:
            store.verify()
        except ConfigError as exc:
            raise ConfigError(f"drift_store (or $GUARDED_STORE_URL): {exc}") from None
        except Exception as exc:  # down or slow: not a configuration error; the worker retries and health says so
            _log.warning("drift store %s is not reachable at start (retrying in the background): %s: %s",
                         store.describe(), type(exc).__name__, exc)

    # -- request path ----------------------------------------------------------------
    def after_call(self, call: "Call") -> None:
        """Buffer the call (O(1)): every call until ``buffer_rows`` rows are buffered, then a uniform
        reservoir sample of the interval's calls (Algorithm R: the ``i``-th call replaces a random
        buffered one with probability ``k / i``), so a burst is sampled evenly, not cut after its start."""
        if call.inputs is None or call.error is not None:
            return
        n = call.inputs.shape[0]
        with self._lock:
            self._arrivals += 1
            self._interval_calls += 1
            self._seen_rows += n
            item = (self._arrivals, call.inputs, call.result, call.state.get(EDGE_P_VALUES))
            buf = self._buf
            if self._buf_rows + n <= self.buffer_rows or not buf:
                buf.append(item)
                self._buf_rows += n
                return
            j = self._rand.randrange(self._interval_calls)
            if j >= len(buf):              # not sampled
                self._sampled_out += n
                self._dropped += n
                return
            out = buf[j][1].shape[0]
            buf[j] = item
            self._buf_rows += n - out
            self._sampled_out += out
            self._dropped += out
            while self._buf_rows > self.buffer_rows and len(buf) > 1:  # a large call replaced a small one
                k = self._rand.randrange(len(buf))
                buf[k], buf[-1] = buf[-1], buf[k]
                gone = buf.pop()[1].shape[0]
                self._buf_rows -= gone
                self._sampled_out += gone
                self._dropped += gone

    # -- read side -------------------------------------------------------------------
    def checks(self) -> Iterable[H.CheckResult]:
        return self._checks

    def span_attributes(self) -> Mapping[str, Any]:
        return self._span_attrs

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            buffered, dropped, pending = self._buf_rows, self._dropped, self._pending_rows
        out = {**self._stats, "buffered_rows": buffered, "dropped_rows": dropped, "pending_rows": pending,
               "sampled_out_rows": self._sampled_out, "cpu_seconds": round(self._cpu_s, 4),
               "last_cycle_cpu_ms": round(self._last_cycle_cpu_ms, 2),
               "recovered_rows": self._recovered, "unreadable_outputs": self._unreadable_outputs,
               "worker_pid": os.getpid()}
        st = self._store_obj
        if st is not None:
            out["store"] = st.describe()
            if hasattr(st, "round_trips"):
                out["store_round_trips"] = st.round_trips
        if self._worker is not None:
            out["background"] = self._worker.stats()
        return out

    # -- background ------------------------------------------------------------------
    def _setup(self) -> None:
        """Resolve reference, store, telemetry; fit the tests. In the background worker."""
        if self.reference is not None:
            ref = ReferenceData(np.asarray(self.reference, dtype=float), self.feature_names, tuple(self.categorical),
                                self.reference_predictions)
        elif self.reference_path is not None:
            ref = ReferenceData(**load_reference_npz(self.reference_path), source=str(self.reference_path))
        else:
            ref = self._provided
        if ref is not None:  # explicit arguments win over what the reference carries
            ref = ReferenceData(ref.reference, self.feature_names or ref.feature_names,
                                tuple(self.categorical) or tuple(ref.categorical),
                                self.reference_predictions if self.reference_predictions is not None
                                else ref.reference_predictions, ref.source)
        self.reference_ = ref
        self._store: WindowStore = self._open_store()
        if not self._batch_prefix:  # per process: batch ids never collide across workers and hosts
            self._batch_prefix = f"{uuid.uuid4().hex[:16]}-{os.getpid()}"
        self._streams = {k: f"{self._model}:{k}" for k in ("inputs", "outputs", "p_values")}
        self._wt: WindowTest | None = None
        self._pd: PredictionDrift | None = None
        self._skew: SkewCheck | None = None
        if ref is not None:
            self._wt = WindowTest(alpha=self.alpha, min_effect=self.min_effect, min_samples=self.min_samples,
                                  categorical=ref.categorical, feature_names=ref.feature_names,
                                  joint=bool(self.joint_test)).fit(ref.reference)
            self._skew = SkewCheck(first_n=self.skew_first_n, alpha=self.skew_alpha,
                                   min_effect=max(self.min_effect, 0.2), categorical=ref.categorical,
                                   feature_names=self._wt.feature_names_in_).fit(ref.reference)
            if ref.reference_predictions is not None:
                self._pd = PredictionDrift(alpha=self.alpha, min_effect=self.min_effect,
                                           min_samples=self.min_samples).fit(ref.reference_predictions)
        # the sequential alarm: online ranks of the pooled input rows (exact with a finite reference);
        # without a reference, the edge component's p-values (valid only for a representative calibration set)
        self._seq: OnlineConformalMartingale | ConformalMartingale
        if ref is not None:
            self._seq = OnlineConformalMartingale(alpha=self.sequential_alpha, categorical=ref.categorical,
                                                  feature_names=self._wt.feature_names_in_ if self._wt else None
                                                  ).fit(np.asarray(ref.reference, dtype=float))
        else:
            self._seq = ConformalMartingale(alpha=self.sequential_alpha).fit()
        self._seq_pos = self._store.total(self._streams["inputs"])
        self._seq_rng = np.random.default_rng(0x5E9)
        self._seq_skipped = 0
        self._start_pos = self._store.total(self._streams["inputs"])
        self._pv_pos = self._store.total(self._streams["p_values"])
        self._skew_result: tuple[list[SkewFinding], WindowReport] | None = None
        self._feat: WindowReport | None = None
        self._pred: WindowReport | None = None
        self._last_total = -1
        self._flushed = 0
        self._tests = 0
        self._store_error: str | None = None
        self._setup_telemetry()

    def _setup_telemetry(self) -> None:
        from opentelemetry import metrics

        from .._version import __version__

        ctx = self._context
        if self.tracer_provider is not None or ctx is None:
            from opentelemetry import trace

            self._tracer = (self.tracer_provider or trace.get_tracer_provider()).get_tracer("guarded_serving",
                                                                                           __version__)
        else:
            self._tracer = ctx.tracer()
        mp = self.meter_provider if self.meter_provider is not None else (ctx.meter_provider if ctx else None)
        meter = metrics.get_meter("guarded_serving", __version__, meter_provider=mp)
        attrs = {"guard.model.name": self._model}
        self._m_tests = meter.create_counter("guard.drift.window_tests", unit="{test}",
                                             description="Window tests run by this worker.")
        self._m_attrs = attrs

        def drifted(options: Any) -> Any:
            from opentelemetry.metrics import Observation

            r = self._feat
            yield Observation(len(r.drifted) if r is not None else 0, attrs)

        def capital(options: Any) -> Any:
            from opentelemetry.metrics import Observation

            yield Observation(self._seq.log10_capital_, attrs)

        meter.create_observable_gauge("guard.drift.features_drifted", [drifted], unit="{feature}",
                                      description="Features drifting in the latest pooled window.")
        meter.create_observable_gauge("guard.drift.martingale_log10", [capital], unit="1",
                                      description="log10 of the sequential alarm's capital.")

    def _cycle(self) -> None:
        """What the background worker runs: set up once, then flush, test and publish."""
        with self._cycle_lock:  # analyze_now() may run a cycle from another thread
            t0 = time.thread_time()
            try:
                self._cycle_locked()
            finally:  # this thread's CPU time (the tests keep BLAS on it): what drift costs the host
                used = time.thread_time() - t0
                self._cpu_s += used
                self._last_cycle_cpu_ms = used * 1e3

    def _cycle_locked(self) -> None:
        if not self._ready:
            try:
                self._setup()
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                checks = [H.CheckResult("drift", H.DEGRADED, f"drift monitoring could not start (retrying): {why}",
                                        affects_readiness=False)]
                if self._store_obj is not None:
                    checks.append(self._store_check(why))
                self._checks = tuple(checks)
                raise
            self._ready = True
        try:
            self.run_once()
        except Exception as exc:  # keep monitoring; show the problem (the worker counts and logs it)
            self._store_error = f"{type(exc).__name__}: {exc}"
            self._publish()
            raise

    def _final_cycle(self) -> None:
        """At stop: flush what is buffered, then close the store."""
        with self._cycle_lock:
            if not self._ready:
                return
            try:
                self.run_once()
            finally:
                self._store.close()
                self._store_obj = None
                self._ready = False

    def analyze_now(self) -> dict[str, Any]:
        """Run one drift cycle now, in the calling thread (flush this worker's buffer, test the pooled
        window, feed the sequential alarm, the skew check once due), and return the findings.

        Works with or without the background worker (e.g. in a batch job or a test). Returns
        ``{"status": "drift" | "ok", "drifted": [...], "checks": {name: {"status", "reason", "details"}},
        "sequential": {...}, "skew": [...], "pooled_rows": int, "sampling": {...}}``, where ``drifted``
        names the features (``"<f> (missing rate)"``, ``"(joint)"``) drifting in the latest window and
        ``checks`` holds the same verdicts as ``guard.health()``'s ``drift.*`` checks.
        """
        self._cycle()
        return self.findings()

    def findings(self) -> dict[str, Any]:
        """The latest cycle's findings (see :meth:`analyze_now`), without running one."""
        checks = {c.name: {"status": c.status, "reason": c.reason, "details": dict(c.details or {})}
                  for c in self._checks}
        if not self._ready and not hasattr(self, "_seq"):
            return {"status": "unavailable", "drifted": [], "checks": checks, "sequential": None, "skew": [],
                    "pooled_rows": 0, "sampling": self.sampling()}
        drifted = [f.feature for f in self._feat.drifted] if self._feat is not None else []
        if self._pred is not None:
            drifted += [f"prediction {f.feature}" for f in self._pred.drifted]
        skew = [f.to_dict() for f in self._skew_result[0]] if self._skew_result else []
        return {"status": "drift" if (drifted or self._seq.alarm or skew) else "ok", "drifted": drifted,
                "checks": checks, "sequential": self._seq.to_dict(), "skew": skew,
                "pooled_rows": max(self._last_total, 0), "sampling": self.sampling()}

    def run_once(self) -> None:
        """One background cycle: flush, test, publish (also callable directly, e.g. in tests)."""
        self.flush()
        self._analyse()
        self._store_error = None
        self._publish()

    def flush(self) -> int:
        """Move the buffered rows to the store (with any batch still pending from a failed flush),
        in one call of :meth:`WindowStore.append_batches`; return how many input rows were written.

        When the store fails, the batch stays pending (bounded by ``buffer_rows``, the oldest dropped
        and counted) and the error propagates; the next flush sends it again under the same id.
        """
        with self._lock:  # buffered rows become pending in one step (stats never see them in neither count)
            items = [it[1:] for it in sorted(self._buf, key=lambda it: it[0])]  # arrival order
            self._buf = []
            self._pending_rows += self._buf_rows
            if self._interval_calls:
                self._last_sample = (self._buf_rows, self._buf_rows + self._interval_sampled_out())
            self._buf_rows = 0
            self._interval_calls = 0
            self._interval_mark = self._sampled_out
        self._pending.extend(self._batches(items))
        while self._pending_rows > self.buffer_rows and len(self._pending) > 1:
            _, _, n_old, _ = self._pending.popleft()
            with self._lock:
                self._pending_rows -= n_old
                self._dropped += n_old
        if not self._pending:
            return 0
        sending = list(self._pending)
        try:
            self._store.append_batches([(bid, streams) for bid, streams, _, _ in sending])
        except Exception:
            self._pending = deque((bid, streams, n, True) for bid, streams, n, _ in self._pending)
            raise
        for _ in sending:
            self._pending.popleft()
        n = sum(b[2] for b in sending)
        with self._lock:
            self._pending_rows -= n
        self._recovered += sum(b[2] for b in sending if b[3])
        self._flushed += n
        return n

    def _interval_sampled_out(self) -> int:
        return self._sampled_out - getattr(self, "_interval_mark", 0)

    def sampling(self) -> dict[str, Any]:
        """How the buffer sampled the rows: totals since start and the latest flush interval."""
        with self._lock:
            seen, out, last = self._seen_rows, self._sampled_out, self._last_sample
        return {"rows_offered": seen, "rows_sampled_out": out,
                "sampling_rate": 1.0 if seen == 0 else round((seen - out) / seen, 4),
                "last_interval_rows": last[1], "last_interval_kept": last[0],
                "last_interval_rate": 1.0 if last[1] == 0 else round(last[0] / last[1], 4)}

    def _batches(self, items: list[tuple[np.ndarray, Any, Any]]) -> list[tuple[str, dict[str, np.ndarray], int, bool]]:
        """Buffered calls as store batches ``(id, {stream: rows}, input rows, failed before)``:
        one batch, or one per input width if the width changed."""
        if not items:
            return []
        by_width: dict[int, list[tuple[np.ndarray, Any, Any]]] = {}
        for it in items:
            by_width.setdefault(it[0].shape[1], []).append(it)
        out = []
        for group in by_width.values():
            rows = np.concatenate([x for x, _, _ in group], axis=0)
            if self.store_digits is not None:
                rows = quantise(rows, self.store_digits)
            streams: dict[str, np.ndarray] = {self._streams["inputs"]: rows}
            raw, pvs = [], []
            for x, result, pv in group:
                if self._pd is not None:
                    try:
                        o = self.output_extractor(result)
                        if o is not None and len(o) == len(x):
                            raw.append(np.asarray(o, dtype=np.float64))
                    except Exception:  # an output we cannot read is skipped (and counted), not fatal
                        self._unreadable_outputs += 1
                if pv is not None:
                    p = np.asarray(pv, dtype=float).reshape(-1)
                    if len(p) == len(x):
                        pvs.append(p)
            if raw:
                outs = self._output_columns(raw)
                if outs is not None:
                    streams[self._streams["outputs"]] = outs
            if pvs:
                pa = np.concatenate(pvs)
                pa = pa[(pa > 0) & (pa <= 1)]
                if pa.size:
                    streams[self._streams["p_values"]] = pa[:, None]
            self._batch_seq += 1
            out.append((f"{self._batch_prefix}-{self._batch_seq}", streams, len(streams[self._streams["inputs"]]),
                        False))
        return out

    def _output_columns(self, raw: list[np.ndarray]) -> np.ndarray | None:
        """The stored prediction columns of the calls' outputs: one conversion for all (the usual case),
        call by call when their shapes differ (an unreadable one skipped and counted)."""
        assert self._pd is not None
        try:
            if len({a.shape[1:] for a in raw}) == 1:
                return self._pd.columns(np.concatenate(raw, axis=0))
        except ValueError:
            pass
        outs = []
        for a in raw:
            try:
                outs.append(self._pd.columns(a))
            except ValueError:
                self._unreadable_outputs += 1
        return np.concatenate(outs, axis=0) if outs else None

    def _analyse(self) -> None:
        st = self._store
        total = st.total(self._streams["inputs"])
        new_window = total != self._last_total
        if new_window and self._wt is not None:
            W = st.window(self._streams["inputs"], self.window)
            if W.size and W.shape[1] == self._wt.n_features_in_:
                self._feat = self._wt.test(W)
                self._tests += 1
                self._m_tests.add(1, self._m_attrs)
            if self._pd is not None:
                P = st.window(self._streams["outputs"], self.window)
                if P.size and P.shape[1] == self._pd.n_columns_:
                    self._pred = self._pd.test(P)
            if self._skew is not None and self._skew_result is None:
                rows, _ = st.rows_after(self._streams["inputs"], self._start_pos, self.skew_first_n)
                if len(rows) >= self.skew_first_n and rows.shape[1] == self._wt.n_features_in_:
                    self._skew_result = self._skew.check(rows)
        self._last_total = total
        if isinstance(self._seq, OnlineConformalMartingale):
            rows, self._seq_pos = st.rows_after(self._streams["inputs"], self._seq_pos, 1_000_000)
            cap = int(self.sequential_max_rows)
            if rows.shape[0] > cap:  # a uniform subsample, in order, chosen without looking at the values
                keep = np.sort(self._seq_rng.choice(rows.shape[0], cap, replace=False))
                self._seq_skipped += rows.shape[0] - cap
                rows = rows[keep]
            if rows.size and rows.shape[1] == self._seq.n_features_in_:
                self._seq.update(rows)
        else:
            pv, self._pv_pos = st.rows_after(self._streams["p_values"], self._pv_pos, 1_000_000)
            if pv.size:
                self._seq.update(pv[:, 0])
        self._stats = {"pooled_rows": total, "flushed_rows": self._flushed, "window_tests": self._tests,
                       "sequential_rows": self._seq.n_seen_, "sequential_skipped_rows": self._seq_skipped,
                       "sequential": self._seq.to_dict()}
        if self._feat is not None:  # the latest window, every feature (bounded by the schema): for exporters
            self._stats["window_rows"] = self._feat.n
            self._stats["features"] = {f.feature: {"p_value": float(f.p_value), "q_value": float(f.q_value),
                                                   "effect": float(f.effect), "psi": float(f.psi),
                                                   "drifted": bool(f.drifted)} for f in self._feat.features}
        if new_window:
            self._emit_span(total)

    # -- publishing --------------------------------------------------------------------
    def _publish(self) -> None:
        out: list[H.CheckResult] = [self._store_check(self._store_error)]
        if self._wt is None:
            out.append(H.CheckResult("drift.features", H.UNAVAILABLE,
                                     "no reference profile: set drift_reference or enable edge cases",
                                     affects_readiness=False))
        else:
            out.append(_window_check("drift.features", "features", self._feat, self._last_total, self._sampling_note()))
        if self._pd is not None:
            out.append(_window_check("drift.predictions", "model outputs", self._pred, self._last_total,
                                     self._sampling_note()))
        out.append(self._sequential_check())
        if self._skew is not None:
            out.append(self._skew_check())
        self._checks = tuple(out)
        drifted = [f.feature for f in self._feat.drifted] if self._feat is not None else []
        skewed = [f.feature for f in self._skew_result[0]] if self._skew_result else []
        attrs: dict[str, Any] = {"guard.drift.status": "drift" if (drifted or self._seq.alarm) else "ok"}
        if drifted:
            attrs["guard.drift.features"] = tuple(drifted[:20])
        if skewed:
            attrs["guard.drift.skew.features"] = tuple(skewed[:20])
        if self._seq.alarm:
            attrs["guard.drift.alarm"] = True
        self._span_attrs = attrs

    def _sampling_note(self) -> str:
        """'' while this worker's buffer kept every row; else the sampling rate, for the reasons."""
        smp = self.sampling()
        if smp["rows_sampled_out"] == 0:
            return ""
        return (f"; rows sampled: this worker's buffer (drift_buffer_rows={self.buffer_rows}) kept a uniform sample "
                f"of {smp['last_interval_rate']:.1%} of the latest interval's {smp['last_interval_rows']} rows "
                f"({smp['sampling_rate']:.1%} since start)")

    def _store_check(self, error: str | None) -> H.CheckResult:
        st = self._store_obj
        where = st.describe() if st is not None else "the drift store"
        with self._lock:
            dropped = self._dropped
        details = {"store": where, "pending_rows": self._pending_rows, "dropped_rows": dropped,
                   "recovered_rows": self._recovered, "buffer_rows": self.buffer_rows}
        if error:
            return H.CheckResult("drift.store", H.DEGRADED, f"{where} failed: {error}; {self._pending_rows} rows "
                                 f"pending (bounded at {self.buffer_rows}, {dropped} dropped so far), retrying",
                                 details, affects_readiness=False)
        return H.CheckResult("drift.store", H.OK, f"{where}: flushes succeed ({dropped} rows dropped so far)",
                             details, affects_readiness=False)

    def _sequential_check(self) -> H.CheckResult:
        s = self._seq
        d = s.to_dict()
        if isinstance(s, OnlineConformalMartingale):
            if s.alarm:
                return H.CheckResult("drift.sequential", H.DEGRADED,
                                     f"sequential alarm on {s.column_labels_[s.alarm_column_ or 0]}: conformal test "
                                     f"martingale on online ranks reached 10^{s.log10_max_:.1f} >= 1/alpha after "
                                     f"{s.alarm_at_} pooled rows (false-alarm probability <= {s.alpha:g} while the "
                                     f"rows stay exchangeable with the reference)", d, affects_readiness=False)
            return H.CheckResult("drift.sequential", H.OK, f"{s.n_seen_} pooled rows, largest weighted capital "
                                 f"10^{s.log10_capital_:.1f} (alarm at 10^{s.threshold_:.1f})", d,
                                 affects_readiness=False)
        if s.n_seen_ == 0:
            return H.CheckResult("drift.sequential", H.UNAVAILABLE, "no reference and no conformal p-values yet "
                                 f"({EDGE_P_VALUES.name}, provided by the edge-case component)", d,
                                 affects_readiness=False)
        if s.alarm:
            return H.CheckResult("drift.sequential", H.DEGRADED,
                                 f"sequential alarm: conformal test martingale reached 10^{s.log10_max_:.1f} >= "
                                 f"1/alpha={1 / s.alpha:g} after {s.alarm_at_} rows (false-alarm probability "
                                 f"<= {s.alpha:g})", d, affects_readiness=False)
        return H.CheckResult("drift.sequential", H.OK, f"{s.n_seen_} p-values, capital 10^{s.log10_capital_:.1f} "
                             f"(alarm at 10^{s.threshold_:.1f})", d, affects_readiness=False)

    def _skew_check(self) -> H.CheckResult:
        if self._skew_result is None:
            got = max(0, self._last_total - self._start_pos)
            return H.CheckResult("drift.skew", H.OK, f"waiting for the first {self.skew_first_n} rows after "
                                 f"startup ({min(got, self.skew_first_n)} so far)",
                                 {"first_n": self.skew_first_n, "rows": got}, affects_readiness=False)
        findings, rep = self._skew_result
        details = {"first_n": self.skew_first_n, "alpha": self.skew_alpha,
                   "findings": [f.to_dict() for f in findings]}
        if not findings:
            return H.CheckResult("drift.skew", H.OK, f"the first {rep.n} rows after startup match the training "
                                 f"profile (BH level {self.skew_alpha:g})", details, affects_readiness=False)
        text = "; ".join(f"{f.feature}: {f.kind} ({f.detail})" for f in findings[:5])
        return H.CheckResult("drift.skew", H.DEGRADED, f"train-serving skew in {len(findings)} feature(s): {text}",
                             details, affects_readiness=False)

    def _emit_span(self, total: int) -> None:
        span = self._tracer.start_span(f"guard {self._model} drift", attributes={"guard.model.name": self._model})
        try:
            if not span.is_recording():
                return
            ev: dict[str, Any] = {"guard.drift.pooled_rows": int(total)}
            r = self._feat
            if r is not None:
                ev["guard.drift.window.rows"] = r.n
                ev["guard.drift.features"] = tuple(f.feature for f in r.drifted)
                ranked = sorted(r.features, key=lambda f: -(f.effect if f.effect == f.effect else -1.0))[:10]
                ev["guard.drift.top.features"] = tuple(f.feature for f in ranked)
                ev["guard.drift.top.effect"] = tuple(float(f.effect) for f in ranked)
                ev["guard.drift.top.q_value"] = tuple(float(f.q_value) for f in ranked)
                ev["guard.drift.top.psi"] = tuple(float(f.psi) for f in ranked)
            if self._pred is not None:
                ev["guard.drift.predictions"] = tuple(f.feature for f in self._pred.drifted)
            ev["guard.drift.sequential.log10_capital"] = float(self._seq.log10_capital_)
            ev["guard.drift.sequential.alarm"] = self._seq.alarm
            if self._skew_result is not None:
                ev["guard.drift.skew.features"] = tuple(f.feature for f in self._skew_result[0])
                ev["guard.drift.skew.kinds"] = tuple(f.kind for f in self._skew_result[0])
            span.add_event("guard.drift.window", {k: v for k, v in ev.items() if v != ()})
        finally:
            span.end()


def _window_check(name: str, what: str, r: WindowReport | None, pooled: int, note: str = "") -> H.CheckResult:
    if r is None:
        return H.CheckResult(name, H.OK, f"no pooled {what} yet", {"pooled_rows": max(pooled, 0)},
                             affects_readiness=False)
    details = {"pooled_rows": pooled, **r.to_dict()}
    if not r.judged:
        return H.CheckResult(name, H.OK, f"{r.n} rows in the window, fewer than {r.min_samples} needed to judge",
                             details, affects_readiness=False)
    if r.drifted:
        text = ", ".join(_finding_text(f) for f in r.drifted[:5])
        more = f" and {len(r.drifted) - 5} more" if len(r.drifted) > 5 else ""
        return H.CheckResult(name, H.DEGRADED, f"{len(r.drifted)} {what} drifted over the last {r.n} pooled rows: "
                             f"{text}{more}{note}", details, affects_readiness=False)
    return H.CheckResult(name, H.OK, f"no {what} drifted over the last {r.n} pooled rows "
                         f"(BH level {r.alpha:g}, min effect {r.min_effect:g}){note}", details, affects_readiness=False)


def _finding_text(f: Any) -> str:
    if f.kind == "missing":
        return (f"{f.feature}: {f.detail['window_missing']:.1%} of rows missing vs "
                f"{f.detail['reference_missing']:.1%} in the reference (q={f.q_value:.1e})")
    return f"{f.feature} (effect {f.effect:.2f}, PSI {f.psi:.2f}, q={f.q_value:.1e})"


def load_reference_npz(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reference arrays from an .npz: ``reference`` or ``X_train``; ``reference_predictions`` or
    ``pred_train``; optional ``feature_names`` and ``categorical``."""
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        ref_key = "reference" if "reference" in keys else "X_train" if "X_train" in keys else None
        if ref_key is None:
            raise ValueError(f"{path}: expected an array 'reference' or 'X_train', found {sorted(keys)}")
        out: dict[str, Any] = {"reference": z[ref_key].astype(float)}
        for k in ("reference_predictions", "pred_train"):
            if k in keys:
                out["reference_predictions"] = z[k].astype(float)
                break
        if "feature_names" in keys:
            out["feature_names"] = [str(n) for n in z["feature_names"]]
        if "categorical" in keys:
            out["categorical"] = tuple(int(i) for i in z["categorical"])
    return out


def quantise(x: np.ndarray, digits: int) -> np.ndarray:
    """``x`` rounded to ``digits`` significant digits (NaN kept): what the store keeps when raw
    values are sensitive (``drift_store_digits``). Window tests see the rounded values."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(np.isfinite(x) & (x != 0), np.floor(np.log10(np.abs(x))), 0.0)
        scale = 10.0 ** (digits - 1 - mag)
        out = np.round(x * scale) / scale
    return np.where(np.isfinite(out), out, x)
