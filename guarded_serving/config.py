"""The one typed configuration object of a guard, validated when it is built.

Every field is keyword-only. A bad value raises :class:`~guarded_serving.errors.ConfigError`
naming the field, the value given, and what would be valid::

    >>> GuardConfig(name="iris", latency_slo_ms=-1)
    Traceback (most recent call last):
    ...
    guarded_serving.errors.ConfigError: latency_slo_ms=-1 is invalid: expected a number > 0 (milliseconds)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["GuardConfig"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _fail(name: str, value: Any, valid: str) -> None:
    raise ConfigError(f"{name}={value!r} is invalid: expected {valid}")


def _number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False, valid: str | None = None) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        if valid is None:
            lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
            hi_s = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
            valid = "a finite number " + " and ".join(s for s in (lo_s, hi_s) if s)
        _fail(name, value, valid)


def _integer(name: str, value: Any, *, lo: int, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        _fail(name, value, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


@dataclass(frozen=True, kw_only=True)
class GuardConfig:
    """Configuration of a :class:`~guarded_serving.Guard`.

    Parameters
    ----------
    name : str
        Model name; letters, digits, ``_ . -``; appears on every span and metric.
    version : str, default="0"
        Model version, recorded on every span.
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
    trace_sample_ratio : float, default=1.0
        Fraction of normal calls that get a recorded span. Anomalous calls (errors,
        SLO breaches, invalid or flagged input) are always exported; see
        :mod:`guarded_serving.telemetry.tracing`.
    input_arg : str or None, default=None
        Name of the parameter holding the feature matrix; ``None`` means the first
        parameter (after ``self``).
    n_features : int or None, default=None
        Expected number of columns; ``None`` accepts any (a reference profile sets it).
    max_batch_rows : int, default=10000
        Largest batch accepted; larger batches are an input error (HTTP 400).
    allow_nan : bool, default=False
        Whether NaN is accepted as a missing value. ``inf`` is always rejected.
    readiness_checks : tuple of str or None, default=None
        Names of the checks whose ``failing`` makes the service not ready;
        ``None`` means every check.
    span_detail : {"compact", "full"}, default="compact"
        ``compact``: normal spans carry the core attributes and the deployment's
        digest; the context of hardware, edge-case and drift components goes on
        anomalous spans only (each attribute costs OTLP encoding per span).
        ``full``: every span carries everything.
    manifest : str or path or None, default=None
        Deployment manifest (``guarded-serving manifest create``) verified at
        construction and re-verified while serving; see
        :mod:`guarded_serving.integrity`. ``None`` disables artifact checks.
    manifest_public_key : str or path or None, default=None
        Ed25519 public key (PEM file or PEM text); when set the manifest must
        carry a signature that verifies with it.
    artifact_root : str or path or None, default=None
        Directory relative artifact paths resolve against (default: the manifest's).
    integrity_policy : {"refuse", "not_ready"}, default="refuse"
        On an integrity failure at startup: raise ``IntegrityError`` (the service
        does not start), or start with the ``integrity.*`` check failing (not ready).
    integrity_check_interval_s : float, default=30
        Seconds between background re-checks (stat first, re-hash on change); 0 disables.
    writable_dirs : tuple of str, default=()
        Directories the service must be able to write (state, logs), checked at startup.

    Operational health (:mod:`guarded_serving.operational`):

    operational : bool, default=True
        Run the operational-health component (hardware sampler, dependency and
        downstream checks, GC-pause latency causes). ``False`` turns all of it off.
    hardware_interval_s : float or None, default=5.0
        Seconds between hardware samples (background thread); ``None``: no sampler.
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
        (``None`` value: any version) or names only; e.g. a deployment manifest's
        ``"packages"`` mapping.
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
        Per operational check (name or prefix, e.g. ``"downstream"``,
        ``"hardware.gpu0.temperature"``): whether its ``failing`` makes the service
        not ready. Merged over the defaults (``hardware.cpu`` and ``runtime.gc`` never gate).
    profile : str, path or Profile, default=None
        Edge cases: a reference profile (``guarded-serving profile``); when set, every
        request's rows get conformal out-of-distribution p-values. Sets ``n_features``.
    edge_policy : {"flag", "reject", "fallback"}, default="flag"
        What happens to a call with rows flagged as edge cases: serve and flag it,
        refuse it (HTTP 422), or send the flagged rows to ``edge_fallback``.
    edge_fpr : float, default=0.01
        Target false-positive rate on in-distribution rows (flag when p <= edge_fpr).
    edge_fallback : callable, default=None
        ``fallback(rows) -> results`` for flagged rows; required by ``edge_policy="fallback"``.
    edge_detector : {"combined", "tail", "mahalanobis", "knn"}, default="combined"
        Which of the profile's detectors scores rows.

    Distribution shift and skew (:mod:`guarded_serving.drift`):

    drift : bool, default=False
        Turn on distribution-shift and skew monitoring (:mod:`guarded_serving.drift`).
    drift_store : str or None, default=None
        SQLite file pooling windows across the host's workers; ``None`` means
        ``$GUARDED_STATE_DIR/drift-<name>.sqlite`` (default state dir ``.state/``).
    drift_reference : str or None, default=None
        ``.npz`` with ``reference`` (or ``X_train``), optional ``reference_predictions``
        (or ``pred_train``), ``feature_names``, ``categorical``; ``None`` means the
        edge-case component's profile.
    drift_window : int, default=2000
        Latest pooled rows each window test uses.
    drift_min_samples : int, default=200
        Smaller windows never alarm.
    drift_alpha : float, default=0.01
        Benjamini-Hochberg false discovery rate across features.
    drift_min_effect : float, default=0.15
        Smallest effect that alarms (Wasserstein-1 in reference std; total variation).
    skew_first_n : int, default=500
        Rows after startup compared with the training profile for skew.
    skew_alpha : float, default=0.001
        The (stricter) level of the skew check.
    sequential_alpha : float, default=0.01
        Bound on the probability that the sequential alarm ever fires on stationary data.
    drift_interval_s : float, default=5.0
        Period of the background flush-and-test thread.
    drift_buffer_rows : int, default=10000
        Bound of each worker's in-memory buffer between flushes.
    drift_retention_rows : int, default=100000
        Rows per stream the store keeps.
    """

    # --- foundation -----------------------------------------------------------
    name: str
    version: str = "0"
    latency_slo_ms: float = 1000.0
    slo_target: float = 0.99
    burn_rate_windows_s: tuple[int, int] = (300, 3600)
    burn_rate_degraded: float = 2.0
    burn_rate_failing: float = 14.4
    error_rate_degraded: float = 0.05
    error_rate_failing: float = 0.5
    min_window_calls: int = 20
    latency_window: int = 4096
    trace_sample_ratio: float = 1.0
    input_arg: str | None = None
    n_features: int | None = None
    max_batch_rows: int = 10_000
    allow_nan: bool = False
    readiness_checks: tuple[str, ...] | None = None
    span_detail: str = "compact"

    # --- operational health (hardware, dependencies, downstream) ---------------
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

    # --- deployment integrity ---------------------------------------------------
    manifest: str | os.PathLike[str] | None = None
    manifest_public_key: str | os.PathLike[str] | None = None
    artifact_root: str | os.PathLike[str] | None = None
    integrity_policy: str = "refuse"
    integrity_check_interval_s: float = 30.0
    writable_dirs: tuple[str, ...] = ()

    # --- edge cases --------------------------------------------------------------
    profile: Any = None
    edge_policy: str = "flag"
    edge_fpr: float = 0.01
    edge_fallback: Any = None
    edge_detector: str = "combined"

    # --- distribution shift and skew ----------------------------------------------
    drift: bool = False
    drift_store: str | None = None
    drift_reference: str | None = None
    drift_window: int = 2000
    drift_min_samples: int = 200
    drift_alpha: float = 0.01
    drift_min_effect: float = 0.15
    skew_first_n: int = 500
    skew_alpha: float = 0.001
    sequential_alpha: float = 0.01
    drift_interval_s: float = 5.0
    drift_buffer_rows: int = 10_000
    drift_retention_rows: int = 100_000

    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            _fail("name", self.name, "1-64 characters from letters, digits, '_', '.', '-'")
        if not isinstance(self.version, str) or not self.version:
            _fail("version", self.version, "a non-empty string")
        _number("latency_slo_ms", self.latency_slo_ms, lo=0, lo_open=True,
                valid="a number > 0 (milliseconds)")
        _number("slo_target", self.slo_target, lo=0, hi=1, lo_open=True, hi_open=True,
                valid="a fraction strictly between 0 and 1, e.g. 0.99")
        w = self.burn_rate_windows_s
        if (not isinstance(w, tuple) or len(w) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in w)
                or w[0] > w[1] or w[1] > 86400):
            _fail("burn_rate_windows_s", w, "a tuple (short, long) of whole seconds, 1 <= short <= long <= 86400")
        _number("burn_rate_degraded", self.burn_rate_degraded, lo=0, lo_open=True)
        _number("burn_rate_failing", self.burn_rate_failing, lo=self.burn_rate_degraded,
                valid=f"a number >= burn_rate_degraded ({self.burn_rate_degraded})")
        _number("error_rate_degraded", self.error_rate_degraded, lo=0, hi=1, lo_open=True)
        _number("error_rate_failing", self.error_rate_failing, lo=self.error_rate_degraded, hi=1,
                valid=f"a fraction >= error_rate_degraded ({self.error_rate_degraded}) and <= 1")
        _integer("min_window_calls", self.min_window_calls, lo=1)
        _integer("latency_window", self.latency_window, lo=16, hi=10_000_000)
        _number("trace_sample_ratio", self.trace_sample_ratio, lo=0, hi=1)
        if self.input_arg is not None and (not isinstance(self.input_arg, str) or not self.input_arg.isidentifier()):
            _fail("input_arg", self.input_arg, "None or a parameter name of the guarded function")
        if self.n_features is not None:
            _integer("n_features", self.n_features, lo=1)
        _integer("max_batch_rows", self.max_batch_rows, lo=1)
        if not isinstance(self.allow_nan, bool):
            _fail("allow_nan", self.allow_nan, "True or False")
        if self.readiness_checks is not None and (
                not isinstance(self.readiness_checks, tuple)
                or not all(isinstance(c, str) for c in self.readiness_checks)):
            _fail("readiness_checks", self.readiness_checks, "None or a tuple of check names")
        # deployment integrity
        for fname in ("manifest", "manifest_public_key", "artifact_root"):
            v = getattr(self, fname)
            if v is not None and (not isinstance(v, (str, os.PathLike)) or not str(v)):
                _fail(fname, v, "None or a non-empty path" + (" or PEM text" if fname == "manifest_public_key" else ""))
        if self.integrity_policy not in ("refuse", "not_ready"):
            _fail("integrity_policy", self.integrity_policy, "'refuse' or 'not_ready'")
        _number("integrity_check_interval_s", self.integrity_check_interval_s, lo=0,
                valid="a number of seconds >= 0 (0 disables the background re-check)")
        if isinstance(self.writable_dirs, list):
            object.__setattr__(self, "writable_dirs", tuple(self.writable_dirs))
        if not isinstance(self.writable_dirs, tuple) or not all(
                isinstance(d, (str, os.PathLike)) and str(d) for d in self.writable_dirs):
            _fail("writable_dirs", self.writable_dirs, "a tuple of directory paths")
        self._validate_operational()
        if self.edge_policy not in ("flag", "reject", "fallback"):
            _fail("edge_policy", self.edge_policy, "'flag', 'reject' or 'fallback'")
        _number("edge_fpr", self.edge_fpr, lo=0, hi=1, lo_open=True, hi_open=True,
                valid="a fraction strictly between 0 and 1, e.g. 0.01")
        if self.edge_fallback is not None and not callable(self.edge_fallback):
            _fail("edge_fallback", self.edge_fallback, "None or a callable fallback(rows) -> results")
        if self.edge_policy == "fallback" and self.edge_fallback is None:
            _fail("edge_fallback", self.edge_fallback, "a callable fallback(rows) -> results when edge_policy='fallback'")
        if self.edge_detector not in ("combined", "tail", "mahalanobis", "knn"):
            _fail("edge_detector", self.edge_detector, "'combined', 'tail', 'mahalanobis' or 'knn'")
        if self.profile is not None and not isinstance(self.profile, (str, os.PathLike)) \
                and not hasattr(self.profile, "detector"):
            _fail("profile", self.profile, "None, a path to a profile file, or a Profile")
        # distribution shift and skew
        if not isinstance(self.drift, bool):
            _fail("drift", self.drift, "True or False")
        for fname in ("drift_store", "drift_reference"):
            v = getattr(self, fname)
            if v is not None and (not isinstance(v, str) or not v):
                _fail(fname, v, "None or a non-empty path string")
        _integer("drift_window", self.drift_window, lo=2)
        _integer("drift_min_samples", self.drift_min_samples, lo=1)
        _number("drift_alpha", self.drift_alpha, lo=0, hi=1, lo_open=True, hi_open=True,
                valid="a level strictly between 0 and 1, e.g. 0.01")
        _number("drift_min_effect", self.drift_min_effect, lo=0)
        _integer("skew_first_n", self.skew_first_n, lo=2)
        _number("skew_alpha", self.skew_alpha, lo=0, hi=1, lo_open=True, hi_open=True,
                valid="a level strictly between 0 and 1, e.g. 0.001")
        _number("sequential_alpha", self.sequential_alpha, lo=0, hi=1, lo_open=True, hi_open=True,
                valid="a level strictly between 0 and 1, e.g. 0.01")
        _number("drift_interval_s", self.drift_interval_s, lo=0, lo_open=True, valid="seconds > 0")
        _integer("drift_buffer_rows", self.drift_buffer_rows, lo=1)
        _integer("drift_retention_rows", self.drift_retention_rows, lo=1)
        if self.span_detail not in ("compact", "full"):
            _fail("span_detail", self.span_detail, "'compact' or 'full'")
        if not isinstance(self.extra, dict):
            _fail("extra", self.extra, "a dict")

    def _validate_operational(self) -> None:
        from .operational.dependencies import parse_requirements
        from .operational.downstream import parse_probe
        from .operational.hardware import Thresholds

        for name in ("operational", "gc_tracking"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "True or False")
        if self.hardware_interval_s is not None:
            _number("hardware_interval_s", self.hardware_interval_s, lo=0.01, hi=3600,
                    valid="None (no sampler) or seconds between 0.01 and 3600")
        valid_t = Thresholds.names()
        if not isinstance(self.hardware_thresholds, dict):
            _fail("hardware_thresholds", self.hardware_thresholds, f"a dict with keys from {valid_t}")
        for k, v in self.hardware_thresholds.items():
            if k not in valid_t:
                _fail(f"hardware_thresholds[{k!r}]", v, f"a key from {valid_t}")
            _number(f"hardware_thresholds[{k!r}]", v, lo=0)
        if isinstance(self.disk_paths, list):
            object.__setattr__(self, "disk_paths", tuple(self.disk_paths))
        if not isinstance(self.disk_paths, tuple) or not all(isinstance(p, str) and p for p in self.disk_paths):
            _fail("disk_paths", self.disk_paths, "a tuple of directory paths")
        if self.gpu is not None and not isinstance(self.gpu, bool):
            _fail("gpu", self.gpu, "None (auto), True or False")
        if isinstance(self.dependencies, list):
            object.__setattr__(self, "dependencies", tuple(self.dependencies))
        parse_requirements(self.dependencies)
        _number("dependency_interval_s", self.dependency_interval_s, lo=1, hi=86400)
        _number("import_timeout_s", self.import_timeout_s, lo=0.1, hi=600)
        _number("probe_interval_s", self.probe_interval_s, lo=0.05, hi=3600)
        _number("probe_timeout_s", self.probe_timeout_s, lo=0.01, hi=600)
        _number("probe_backoff_max_s", self.probe_backoff_max_s, lo=0.05, hi=86400)
        if isinstance(self.probes, list):
            object.__setattr__(self, "probes", tuple(self.probes))
        if not isinstance(self.probes, tuple):
            _fail("probes", self.probes, "a tuple of probe dicts")
        names = [parse_probe(p).name for p in self.probes]
        if len(set(names)) != len(names):
            _fail("probes", self.probes, "probes with distinct names")
        if not isinstance(self.readiness_policy, dict) or not all(
                isinstance(k, str) and isinstance(v, bool) for k, v in self.readiness_policy.items()):
            _fail("readiness_policy", self.readiness_policy, "a dict of check name (or prefix) -> True/False")

    def replace(self, **changes: Any) -> "GuardConfig":
        """Return a copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)
