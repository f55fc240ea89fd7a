"""Typed configuration sections and the validators they share.

Each capability package owns one :class:`Section`: a frozen, keyword-only
dataclass validated once, in ``__post_init__``, inside that package.
:class:`~guarded_serving.GuardConfig` composes the sections; users still write
flat keywords (``Guard(name=..., latency_slo_ms=..., drift=True)``) because a
section's field names *are* the flat keywords.

A bad value raises :class:`~guarded_serving.errors.ConfigError` naming the
field, the value given and what would be valid::

    latency_slo_ms=-1 is invalid: expected a number > 0 (milliseconds)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ConfigError

__all__ = ["GuardSettings", "Section", "as_tuple", "check_bool", "check_integer", "check_level", "check_number",
           "check_path", "fail"]


class Section:
    """Base of configuration sections (subclasses are frozen, keyword-only dataclasses)."""

    #: The section's name: the capability it configures.
    section: ClassVar[str] = "section"

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @property
    def enabled(self) -> bool:
        """Whether the capability runs with these settings (default: always)."""
        return True

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.field_names()}


def fail(name: str, value: Any, valid: str) -> None:
    """Raise the one error message shape: ``name=value is invalid: expected valid``."""
    raise ConfigError(f"{name}={value!r} is invalid: expected {valid}")


def check_number(name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
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
        fail(name, value, valid)


def check_integer(name: str, value: Any, *, lo: int, hi: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        fail(name, value, f"an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))


def check_level(name: str, value: Any, example: str = "0.01") -> None:
    check_number(name, value, lo=0, hi=1, lo_open=True, hi_open=True,
                 valid=f"a level strictly between 0 and 1, e.g. {example}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(name, value, "True or False")


def check_path(name: str, value: Any, *, pem: bool = False) -> None:
    if value is not None and (not isinstance(value, (str, os.PathLike)) or not str(value)):
        fail(name, value, "None or a non-empty path" + (" or PEM text" if pem else ""))


def as_tuple(section: Any, name: str) -> None:
    """Accept a list where a tuple is expected (frozen dataclass: set through object)."""
    if isinstance(getattr(section, name), list):
        object.__setattr__(section, name, tuple(getattr(section, name)))


_KINDS = ("numbers", "records", "text", "array", "embedding")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, kw_only=True)
class GuardSettings(Section):
    """The guard's own settings: identity, tracing, and the input it inspects.

    Parameters
    ----------
    name : str
        Model name; letters, digits, ``_ . -``; appears on every span and metric.
    version : str, default="0"
        Model version, recorded on every span.
    trace_sample_ratio : float, default=1.0
        Fraction of normal calls that get a recorded span. Anomalous calls (errors,
        SLO breaches, invalid or flagged input) are always exported; see
        :mod:`guarded_serving.telemetry.tracing`.
    input_arg : str or None, default=None
        Name of the parameter holding the monitored input; ``None`` means the first
        parameter (after ``self``) other than a request context.
    input_kind : {None, "numbers", "records", "text", "array", "embedding"}, default=None
        How the input is read into monitored features (:mod:`guarded_serving.views`).
        ``None``: the reference profile's view when there is one, else numbers for
        numeric inputs (other inputs are not inspected). The input is read only when
        a component needs features (edge cases, drift, rules) or an input setting is given.
    features : callable or "module:function", default=None
        Your own monitored features, ``features(input) -> array (rows, k)``, for any input.
    n_features : int or None, default=None
        Expected number of columns; ``None`` accepts any (a reference profile sets it).
    max_batch_rows : int, default=10000
        Largest batch accepted; larger batches are an input error (HTTP 400).
    allow_nan : bool, default=False
        Whether NaN is accepted as a missing value everywhere. ``inf`` is always
        rejected. A reference profile accepts NaN where training data had missing values.
    implausible_ranges : float or None, default=1e6
        With a reference profile (its per-feature minimum and maximum), values more than this many
        training ranges outside them are refused (HTTP 400 naming the row and feature) before the
        model sees them: such a value (``1e308`` in a low-variance feature) makes a model overflow,
        which is the client's doing, not the model's. ``None`` disables the check.
    readiness_checks : tuple of str or None, default=None
        Names of the checks whose ``failing`` makes the service not ready;
        ``None`` means every check.
    span_mode : {"auto", "own", "server"}, default="auto"
        ``own``: one guard span per recorded call, a child of the current span (the model's
        own spans nest under it). ``server``: ordinary calls put the guard's attributes on
        the enclosing span (inside BentoML its ``POST /<api>`` server span) and add no span;
        anomalous calls still get a guard span (with the call's real start and end, exported
        even when sampled out). ``auto``: ``server`` when the enclosing recording span is a
        SERVER span, else ``own``. Use ``own`` when the model makes spans of its own.
    span_detail : {"compact", "full"}, default="compact"
        ``compact``: an ordinary call's span carries the facts only the call has
        (model name, model-call latency, batch size, request id; the guard's own
        span also the model version, set when it starts, and the request latency);
        its outcome (``ok`` for every ordinary call), on a server span its request
        latency (that span's duration) and the version, the anomaly markers, the
        budget, the deployment's digest and the context of hardware, edge-case and
        drift components go on anomalous spans only (each attribute costs
        validation on the request path and OTLP encoding per span). ``full``:
        every span carries everything.
    """

    section = "guard"
    name: str
    version: str = "0"
    trace_sample_ratio: float = 1.0
    input_arg: str | None = None
    input_kind: str | None = None
    features: Any = None
    n_features: int | None = None
    max_batch_rows: int = 10_000
    allow_nan: bool = False
    implausible_ranges: float | None = 1e6
    readiness_checks: tuple[str, ...] | None = None
    span_mode: str = "auto"
    span_detail: str = "compact"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            fail("name", self.name, "1-64 characters from letters, digits, '_', '.', '-'")
        if not isinstance(self.version, str) or not self.version:
            fail("version", self.version, "a non-empty string")
        check_number("trace_sample_ratio", self.trace_sample_ratio, lo=0, hi=1)
        if self.input_arg is not None and (not isinstance(self.input_arg, str) or not self.input_arg.isidentifier()):
            fail("input_arg", self.input_arg, "None or a parameter name of the guarded function")
        if self.input_kind is not None and self.input_kind not in _KINDS:
            fail("input_kind", self.input_kind, f"None or one of {_KINDS}")
        if self.features is not None and not (callable(self.features) or (
                isinstance(self.features, str) and ":" in self.features)):
            fail("features", self.features, "None, a callable features(input) -> array, or 'module:function'")
        if self.n_features is not None:
            check_integer("n_features", self.n_features, lo=1)
        check_integer("max_batch_rows", self.max_batch_rows, lo=1)
        check_bool("allow_nan", self.allow_nan)
        if self.implausible_ranges is not None:
            check_number("implausible_ranges", self.implausible_ranges, lo=0, lo_open=True,
                         valid="None or a number of training ranges > 0, e.g. 1e6")
        if self.readiness_checks is not None and (
                not isinstance(self.readiness_checks, tuple)
                or not all(isinstance(c, str) for c in self.readiness_checks)):
            fail("readiness_checks", self.readiness_checks, "None or a tuple of check names")
        if self.span_mode not in ("auto", "own", "server"):
            fail("span_mode", self.span_mode, "'auto', 'own' or 'server'")
        if self.span_detail not in ("compact", "full"):
            fail("span_detail", self.span_detail, "'compact' or 'full'")
