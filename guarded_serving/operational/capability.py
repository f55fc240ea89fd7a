"""Configuration sections of the operational capabilities and their factories.

Two capabilities live in this package:

``slo`` (always on)
    The latency budget and model-error verdicts (:mod:`.slo`).
``operational`` (``operational=True`` by default)
    Hardware sampler, dependency and downstream checks, latency causes (:mod:`.component`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..component import Capability, Component
from ..settings import Section, as_tuple, check_bool, check_integer, check_number, fail
from .dependencies import parse_requirements
from .downstream import parse_probe
from .component import OperationalHealth
from .hardware import Thresholds
from .slo import SloMonitor

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["OPERATIONAL", "SLO", "OperationalSettings", "SloSettings"]


@dataclass(frozen=True, kw_only=True)
class SloSettings(Section):
    """The latency SLO and error-rate verdicts.

    Parameters
    ----------
    latency_slo_ms : float, default=1000
        Latency budget of one call in milliseconds; slower calls are SLO violations.
    slo_target : float, default=0.99
        Fraction of calls that must meet the budget; ``1 - slo_target`` is the error budget.
    burn_rate_windows_s : tuple of two int, default=(300, 3600)
        Short and long windows (seconds) over which the error-budget burn rate is computed.
    burn_rate_degraded : float, default=2.0
        Short-window burn rate at or above which the latency check is ``degraded``.
    burn_rate_failing : float, default=14.4
        Burn rate at or above which, over *both* windows, the latency check is ``failing``
        (the multi-window fast-burn rule from the Google SRE workbook).
    error_rate_degraded, error_rate_failing : float, default=0.05, 0.5
        Fraction of model errors over the short window that makes the error check
        ``degraded`` / ``failing``.
    min_window_calls : int, default=20
        Fewer calls than this in the short window never change a rate-based verdict.
    latency_window : int, default=4096
        Number of recent calls kept for the latency quantiles (bounded memory).
    slo_gates_readiness : bool, default=False
        Whether a ``failing`` latency SLO makes the service not ready. Off by default: a
        replica that is slow because it is loaded only moves its load to the others when
        taken out of rotation (and the request time includes queueing); burn rates are for
        alerting.
    error_rate_gates_readiness : bool, default=False
        Whether a ``failing`` model-error rate makes the service not ready. Off by default:
        the check turns ``failing`` (health ``degraded`` overall, and an alert) but a replica
        taken out of rotation does not fix a model bug, and when clients can cause the errors
        every replica behind a load balancer would go together.
    slo_measure : {"request", "model"}, default="request"
        What the budget applies to: the caller's wait, from the request's arrival (queueing
        and parsing included; needs a serving integration that marks arrivals, e.g.
        BentoML with ``RequestTiming``, else the model time is used), or the model call alone.
    """

    section = "slo"
    latency_slo_ms: float = 1000.0
    slo_target: float = 0.99
    burn_rate_windows_s: tuple[int, int] = (300, 3600)
    burn_rate_degraded: float = 2.0
    burn_rate_failing: float = 14.4
    error_rate_degraded: float = 0.05
    error_rate_failing: float = 0.5
    min_window_calls: int = 20
    latency_window: int = 4096
    slo_measure: str = "request"
    slo_gates_readiness: bool = False
    error_rate_gates_readiness: bool = False

    def __post_init__(self) -> None:
        check_bool("slo_gates_readiness", self.slo_gates_readiness)
        check_bool("error_rate_gates_readiness", self.error_rate_gates_readiness)
        if self.slo_measure not in ("request", "model"):
            fail("slo_measure", self.slo_measure, "'request' (the caller's wait) or 'model' (the model call)")
        check_number("latency_slo_ms", self.latency_slo_ms, lo=0, lo_open=True, valid="a number > 0 (milliseconds)")
        check_number("slo_target", self.slo_target, lo=0, hi=1, lo_open=True, hi_open=True,
                     valid="a fraction strictly between 0 and 1, e.g. 0.99")
        w = self.burn_rate_windows_s
        if (not isinstance(w, tuple) or len(w) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w)
                or w[0] > w[1] or w[1] > 86400):
            fail("burn_rate_windows_s", w, "a tuple (short, long) of whole seconds, 1 <= short <= long <= 86400")
        check_number("burn_rate_degraded", self.burn_rate_degraded, lo=0, lo_open=True)
        check_number("burn_rate_failing", self.burn_rate_failing, lo=self.burn_rate_degraded,
                     valid=f"a number >= burn_rate_degraded ({self.burn_rate_degraded})")
        check_number("error_rate_degraded", self.error_rate_degraded, lo=0, hi=1, lo_open=True)
        check_number("error_rate_failing", self.error_rate_failing, lo=self.error_rate_degraded, hi=1,
                     valid=f"a fraction >= error_rate_degraded ({self.error_rate_degraded}) and <= 1")
        check_integer("min_window_calls", self.min_window_calls, lo=1)
        check_integer("latency_window", self.latency_window, lo=16, hi=10_000_000)


@dataclass(frozen=True, kw_only=True)
class OperationalSettings(Section):
    """Hardware, dependencies, downstream components and GC pauses.

    Parameters
    ----------
    operational : bool, default=True
        Run the operational-health component. ``False`` turns all of it off.
    hardware_interval_s : float or None, default=5.0
        Seconds between hardware samples (background); ``None``: no sampler.
    hardware_thresholds : dict of str to float, default={}
        Overrides of :class:`guarded_serving.operational.hardware.Thresholds`,
        e.g. ``{"disk_free_percent_failing": 5}``.
    disk_paths : tuple of str, default=()
        Where the model and state live (free disk is watched); ``()`` means the working directory.
    gpu : bool or None, default=None
        ``None``: NVML checks when ``nvidia-ml-py`` and a GPU are present, else
        reported ``unavailable``; ``False``: no GPU checks.
    dependencies : dict or tuple of str or None, default=None
        Packages the model needs: ``{"numpy": "2.4.6", "scikit-learn": ">=1.4"}``
        (``None`` value: any version) or names only. ``None``: the deployment
        manifest's pins when a manifest is configured.
    dependency_interval_s : float, default=300
        Seconds between dependency re-checks (the first runs at start).
    import_timeout_s : float, default=30
        An import taking longer is reported as hanging.
    probes : tuple of dict, default=()
        Downstream components: ``{"name": "db", "tcp": "127.0.0.1:5432"}`` or
        ``{"name": "feature_store", "url": "http://127.0.0.1:8000/health"}``; optional
        keys ``timeout_s``, ``interval_s``, ``failures_to_fail``, ``readiness``.
    probe_interval_s, probe_timeout_s : float, default=10, 2
        Defaults for probes that do not set their own.
    probe_backoff_max_s : float, default=60
        Longest wait between probes of a component that is down (the wait doubles per failure).
    gc_tracking : bool, default=True
        Time GC pauses (``gc.callbacks``) and name them as the cause of slow calls.
    readiness_policy : dict of str to bool, default={}
        Per operational check (name or prefix): whether its ``failing`` makes the service
        not ready. Merged over the defaults (``hardware.cpu`` and ``runtime.gc`` never gate).
    gc_cause_share : float, default=0.5
        Share of a slow call's time over budget that GC pauses (or queueing) must account
        for to be named as its cause.
    trend_window : int or None, default=1024
        Recent model latencies the latency-trend test reads (``None``: no trend test).
    trend_alpha : float, default=0.001
        False-alarm level of one trend test (Mann-Kendall on block medians).
    trend_min_rise : float, default=0.05
        Smallest fitted rise across the trend window, as a share of the latency budget,
        that makes ``runtime.latency_trend`` degraded: a significant trend smaller than
        that (a 0.30 ms model rising 0.01 ms under a 100 ms budget) is reported, not a
        problem.
    exit_with_parent : bool, default=False
        Watch the parent process (:mod:`.parent`): when it dies (``kill -9`` of ``bentoml serve``)
        this worker stops serving and exits, freeing the port. Turn it on in serving workers.
    """

    section = "operational"
    operational: bool = True
    hardware_interval_s: float | None = 5.0
    hardware_thresholds: dict[str, float] = field(default_factory=dict)
    disk_paths: tuple[str, ...] = ()
    gpu: bool | None = None
    dependencies: dict[str, Any] | tuple[str, ...] | None = None
    dependency_interval_s: float = 300.0
    import_timeout_s: float = 30.0
    probes: tuple[dict[str, Any], ...] = ()
    probe_interval_s: float = 10.0
    probe_timeout_s: float = 2.0
    probe_backoff_max_s: float = 60.0
    gc_tracking: bool = True
    readiness_policy: dict[str, bool] = field(default_factory=dict)
    gc_cause_share: float = 0.5
    trend_window: int | None = 1024
    trend_alpha: float = 0.001
    trend_min_rise: float = 0.05
    exit_with_parent: bool = False

    @property
    def enabled(self) -> bool:
        return self.operational

    def __post_init__(self) -> None:
        for name in ("operational", "gc_tracking", "exit_with_parent"):
            check_bool(name, getattr(self, name))
        if self.hardware_interval_s is not None:
            check_number("hardware_interval_s", self.hardware_interval_s, lo=0.01, hi=3600,
                         valid="None (no sampler) or seconds between 0.01 and 3600")
        valid_t = Thresholds.names()
        if not isinstance(self.hardware_thresholds, dict):
            fail("hardware_thresholds", self.hardware_thresholds, f"a dict with keys from {valid_t}")
        for k, v in self.hardware_thresholds.items():
            if k not in valid_t:
                fail(f"hardware_thresholds[{k!r}]", v, f"a key from {valid_t}")
            check_number(f"hardware_thresholds[{k!r}]", v, lo=0)
        for name in ("disk_paths", "dependencies", "probes"):
            as_tuple(self, name)
        if not isinstance(self.disk_paths, tuple) or not all(isinstance(p, str) and p for p in self.disk_paths):
            fail("disk_paths", self.disk_paths, "a tuple of directory paths")
        if self.gpu is not None and not isinstance(self.gpu, bool):
            fail("gpu", self.gpu, "None (auto), True or False")
        parse_requirements(self.dependencies)
        check_number("dependency_interval_s", self.dependency_interval_s, lo=1, hi=86400)
        check_number("import_timeout_s", self.import_timeout_s, lo=0.1, hi=600)
        check_number("probe_interval_s", self.probe_interval_s, lo=0.05, hi=3600)
        check_number("probe_timeout_s", self.probe_timeout_s, lo=0.01, hi=600)
        check_number("probe_backoff_max_s", self.probe_backoff_max_s, lo=0.05, hi=86400)
        if not isinstance(self.probes, tuple):
            fail("probes", self.probes, "a tuple of probe dicts")
        names = [parse_probe(p).name for p in self.probes]
        if len(set(names)) != len(names):
            fail("probes", self.probes, "probes with distinct names")
        check_number("gc_cause_share", self.gc_cause_share, lo=0, hi=1, lo_open=True)
        if self.trend_window is not None:
            check_integer("trend_window", self.trend_window, lo=64, hi=1_000_000)
        check_number("trend_alpha", self.trend_alpha, lo=0, hi=0.5, lo_open=True, hi_open=True)
        check_number("trend_min_rise", self.trend_min_rise, lo=0, hi=10)
        if not isinstance(self.readiness_policy, dict) or not all(
                isinstance(k, str) and isinstance(v, bool) for k, v in self.readiness_policy.items()):
            fail("readiness_policy", self.readiness_policy, "a dict of check name (or prefix) -> True/False")


def slo_from_config(section: SloSettings, context: "GuardContext") -> Component:
    return SloMonitor(section)


def operational_from_config(section: OperationalSettings, context: "GuardContext") -> Component | None:
    if not section.enabled:
        return None
    return OperationalHealth.from_settings(section)


SLO = Capability("slo", SloSettings, slo_from_config)  # type: ignore[arg-type]
OPERATIONAL = Capability("operational", OperationalSettings, operational_from_config)  # type: ignore[arg-type]
