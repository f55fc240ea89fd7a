"""The latency SLO and model-error verdicts, as the always-on ``slo`` component.

Per call (``after_call``, O(1)): account the call in a
:class:`~guarded_serving.operational.latency.LatencyTracker` and put whether it
broke its latency budget in ``call.state[SLO_VIOLATED]`` (the guard makes such
calls anomalous; the operational component names their cause). The budget applies
to the request time (arrival to answer, queueing included) when a serving
integration marks arrivals and ``slo_measure="request"``; model-time quantiles are
kept beside it, so both the caller's wait and the model's share are reported. Read side:
``latency_slo`` (multi-window burn rate) and ``model_errors`` checks, and the
call counters at the top of ``Guard.stats()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .. import health as H
from ..component import Component
from ..keys import OUTCOME, SLO_VIOLATED
from .latency import LatencySnapshot, LatencyTracker

if TYPE_CHECKING:
    from ..call import Call
    from ..context import GuardContext

__all__ = ["SloMonitor", "error_check", "latency_check"]


class SloMonitor(Component):
    """Latency budget, error-budget burn rate and model error rate of this worker.

    Parameters
    ----------
    settings : SloSettings
        The ``slo`` section (anything with its fields).
    """

    name = "slo"
    provides = (SLO_VIOLATED,)
    needs = (OUTCOME,)  # after any component that may withhold an answer, so the final outcome is counted
    stats_at_top = True

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.tracker = LatencyTracker(slo_ms=settings.latency_slo_ms, slo_target=settings.slo_target,
                                      windows_s=settings.burn_rate_windows_s,
                                      quantile_window=settings.latency_window)
        self._record = self.tracker.record
        self._use_request = settings.slo_measure == "request"
        # model-time quantiles when the budget is held to the request time (made on first use)
        self.model_tracker: LatencyTracker | None = None
        self._requests_timed = 0

    def bind(self, context: "GuardContext") -> None:
        self._model = {"model": context.model_name, "version": context.model_version}

    # -- request path ---------------------------------------------------------------------
    def after_call(self, call: "Call") -> None:
        req = call.request_ms
        if req is None or not self._use_request:
            call.state[SLO_VIOLATED] = self._record(call.latency_ms, call.outcome, call.flagged)
            return
        call.state[SLO_VIOLATED] = self._record(req, call.outcome, call.flagged)
        mt = self.model_tracker
        if mt is None:
            s = self.settings
            mt = self.model_tracker = LatencyTracker(slo_ms=s.latency_slo_ms, slo_target=s.slo_target,
                                                     windows_s=s.burn_rate_windows_s,
                                                     quantile_window=s.latency_window)
        mt.record(call.latency_ms, call.outcome, call.flagged)
        self._requests_timed += 1

    # -- read side ------------------------------------------------------------------------
    @property
    def measure(self) -> str:
        """``request`` once request times are seen (and wanted), else ``model``."""
        return "request" if self.model_tracker is not None else "model"

    def checks(self) -> Iterable[H.CheckResult]:
        s = self.tracker.snapshot()
        m = self.model_tracker.snapshot() if self.model_tracker is not None else None
        return (latency_check(s, self.settings, model=m), error_check(s, self.settings))

    def stats(self) -> Mapping[str, Any]:
        s = self.tracker.snapshot()
        short, long_ = self.settings.burn_rate_windows_s
        return {
            **self._model,
            "calls": s.calls,
            "ok": s.calls - s.errors - s.invalid_inputs - s.rejected,
            "errors": s.errors,
            "invalid_inputs": s.invalid_inputs,
            "rejected": s.rejected,
            "flagged": s.flagged,
            "slo_violations": s.slo_violations,
            "latency_ms": {"p50": s.p50_ms, "p95": s.p95_ms, "p99": s.p99_ms, "max": s.max_ms,
                           "slo": self.settings.latency_slo_ms, "measure": self.measure},
            **({"model_latency_ms": _quantiles(self.model_tracker.snapshot())}
               if self.model_tracker is not None else {}),
            "burn_rate": {f"{short}s": s.burn_rates[0], f"{long_}s": s.burn_rates[1]},
            "error_rate": {f"{short}s": s.error_rates[0], f"{long_}s": s.error_rates[1]},
        }


def _quantiles(s: LatencySnapshot) -> dict[str, float | None]:
    return {"p50": s.p50_ms, "p95": s.p95_ms, "p99": s.p99_ms, "max": s.max_ms}


def latency_check(s: LatencySnapshot, cfg: Any, model: LatencySnapshot | None = None) -> H.CheckResult:
    """``latency_slo``: degraded at a short-window burn rate >= ``burn_rate_degraded``; failing
    when both windows burn at >= ``burn_rate_failing`` (the multi-window fast-burn rule).
    ``model`` (the model-time snapshot when the budget is held to request times) adds the
    model's share to the reason, so queueing in front of the model shows."""
    (short, long_), (b_s, b_l) = cfg.burn_rate_windows_s, s.burn_rates
    details = {"slo_ms": cfg.latency_slo_ms, "target": cfg.slo_target, "measure": "model" if model is None
               else "request", "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
               "burn_rate_short": b_s, "burn_rate_long": b_l,
               "window_calls_short": s.window_calls[0], "window_violations_short": s.window_violations[0]}
    if model is not None:
        details.update(model_p50_ms=model.p50_ms, model_p99_ms=model.p99_ms)
    gates = bool(getattr(cfg, "slo_gates_readiness", False))
    if s.window_calls[0] < cfg.min_window_calls:
        return H.CheckResult("latency_slo", H.OK, f"{s.window_calls[0]} calls in the last {short} s, "
                             f"fewer than {cfg.min_window_calls} needed to judge the SLO", details, gates)
    what = "calls" if model is None else "requests (arrival to answer)"
    budget_txt = (f"{s.window_violations[0]} of {s.window_calls[0]} {what} in the last {short} s took longer "
                  f"than {cfg.latency_slo_ms:g} ms; error budget burning at {b_s:.1f}x")
    if model is not None and s.p50_ms is not None and model.p50_ms is not None:
        budget_txt += (f"; request p50 {s.p50_ms:.0f} ms of which the model {model.p50_ms:.0f} ms "
                       f"(queueing and parsing {max(s.p50_ms - model.p50_ms, 0):.0f} ms)")
    if b_s is not None and b_l is not None and b_s >= cfg.burn_rate_failing and b_l >= cfg.burn_rate_failing \
            and s.window_calls[1] >= cfg.min_window_calls:
        return H.CheckResult("latency_slo", H.FAILING, budget_txt + f" (>= {cfg.burn_rate_failing:g}x over "
                             f"both {short} s and {long_} s)", details, gates)
    if b_s is not None and b_s >= cfg.burn_rate_degraded:
        return H.CheckResult("latency_slo", H.DEGRADED, budget_txt + f" (>= {cfg.burn_rate_degraded:g}x)", details,
                             gates)
    return H.CheckResult("latency_slo", H.OK, budget_txt, details, gates)


def error_check(s: LatencySnapshot, cfg: Any) -> H.CheckResult:
    """``model_errors``: the share of calls that raised over the short window (client errors,
    4xx, are not counted). It gates readiness only with ``error_rate_gates_readiness``."""
    gates = bool(getattr(cfg, "error_rate_gates_readiness", False))
    short = cfg.burn_rate_windows_s[0]
    n, e, rate = s.window_calls[0], s.window_errors[0], s.error_rates[0]
    details = {"window_s": short, "window_calls": n, "window_errors": e, "error_rate": rate,
               "errors_total": s.errors}
    if n < cfg.min_window_calls:
        return H.CheckResult("model_errors", H.OK, f"{e} errors in {n} calls in the last {short} s "
                             f"(fewer than {cfg.min_window_calls} calls: not judged)", details, gates)
    text = f"{e} of {n} calls in the last {short} s raised ({rate:.1%})"
    if rate >= cfg.error_rate_failing:
        return H.CheckResult("model_errors", H.FAILING, text, details, gates)
    if rate >= cfg.error_rate_degraded:
        return H.CheckResult("model_errors", H.DEGRADED, text, details, gates)
    return H.CheckResult("model_errors", H.OK, text, details, gates)
