"""The ``performance`` configuration section and its factory."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from ..component import Capability, Component
from ..settings import (
    Section,
    check_bool,
    check_integer,
    check_level,
    check_number,
    fail,
)
from .metrics import METRICS, is_metric, metric_direction

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["PERFORMANCE", "PerformanceSettings"]

_TASKS = ("classification", "regression")


@dataclass(frozen=True, kw_only=True)
class PerformanceSettings(Section):
    """Delayed labels joined by request id, realised performance, expectations, label-free estimates.

    Parameters
    ----------
    performance : bool, default=False
        Record predictions and accept feedback (turned on by ``expectations`` too).
    expectations : mapping of str to float, optional
        What the model promises, e.g. ``{"accuracy": 0.99}``, ``{"recall:1": 0.9}`` (recall of
        class 1), ``{"mae": 2.0}``, ``{"rmse": 3.0}``. Each is checked with an anytime-valid
        confidence sequence (``performance.<metric>`` in health).
    expectation_level : float, default=0.01
        Probability that an expectation check ever alarms, over an unbounded stream of labels,
        while the model meets it.
    expectation_min_labels : int, default=30
        Fewer labels never alarm (the bound is wide anyway).
    expectation_error_scale : float, optional
        Errors are clipped at this value for the bound of ``mae`` / ``rmse`` (needed for them:
        the bound needs values in a known range; a clipped error only lowers the bound, so an
        alarm stays valid).
    performance_task : {None, "classification", "regression"}, default=None
        None: from the output view (probabilities or classes: classification).
    performance_output_field : str, optional
        Key of a dict result holding the answers (default: the usual keys, ``probability`` first).
    performance_segment : callable or "module:function", optional
        ``segment(input, result) -> str`` or a list of str (one per row): the segment key
        realised performance is broken down by. Called in the background, never on the request.
    performance_store : str, optional
        Where predictions and labels live: a ``redis://`` / ``rediss://`` URL (every host's workers;
        keys under ``<name>:outcomes``; password from the URL or ``$GUARDED_STORE_PASSWORD``) or a
        SQLite file (the host's workers); default ``$GUARDED_STORE_URL`` when set, else
        ``$GUARDED_STATE_DIR/outcomes-<name>.sqlite``.
    feedback_retention_s : float, default=604800 (7 days)
        How long predictions (and their labels) are kept; feedback for an older id is ``expired``.
    feedback_pending_s : float, default=3600
        How long a label whose prediction is not stored yet waits for it.
    performance_interval_s : float, default=1.0
        Period of the background flush-and-evaluate worker.
    performance_buffer_rows : int, default=100000
        Bound of the in-memory buffer of prediction records (oldest dropped and counted beyond).
    performance_record_inputs : bool, default=False
        Keep each row's monitored features with its prediction.
    performance_max_input_values : int, default=256
        Rows with more features than this are stored without their inputs.
    performance_reference : str or callable, optional
        Reference predictions with labels for the label-free estimates: a ``.npz`` with
        ``scores`` (or ``probabilities``) and ``labels``, or a callable returning ``(scores, labels)``.
    performance_window : int, default=1000
        Latest predictions the label-free estimate describes.
    labels_missing_at_random : bool, default=True
        False when whether a label arrives depends on the outcome (labels only for approved
        loans, clicks only on shown items): the reason then says the bound covers the labelled part only.
    performance_band_z : float, default=3.0
        Width of the label-free estimate's sampling-error band, in standard deviations.
    request_id_field : str or None, default="request_id"
        Key under which the request id is added to a dict result (None: header only).
    """

    section = "performance"
    performance: bool = False
    expectations: Mapping[str, float] | None = None
    expectation_level: float = 0.01
    expectation_min_labels: int = 30
    expectation_error_scale: float | None = None
    performance_task: str | None = None
    performance_output_field: str | None = None
    performance_segment: Any = None
    performance_store: str | None = None
    feedback_retention_s: float = 7 * 86400.0
    feedback_pending_s: float = 3600.0
    performance_interval_s: float = 1.0
    performance_buffer_rows: int = 100_000
    performance_record_inputs: bool = False
    performance_max_input_values: int = 256
    performance_reference: Any = None
    performance_window: int = 1000
    labels_missing_at_random: bool = True
    performance_band_z: float = 3.0
    request_id_field: str | None = "request_id"

    @property
    def enabled(self) -> bool:
        return self.performance or bool(self.expectations)

    def __post_init__(self) -> None:
        check_bool("performance", self.performance)
        if self.expectations is not None:
            if not isinstance(self.expectations, Mapping):
                fail("expectations", self.expectations, "None or a mapping such as {'accuracy': 0.99}")
            for k, v in self.expectations.items():
                if not is_metric(k):
                    fail("expectations", dict(self.expectations),
                         f"metric names among {METRICS} (e.g. 'recall:1'); {k!r} is not one")
                if metric_direction(k) == "at_least":
                    check_number(f"expectations[{k!r}]", v, lo=0, hi=1, lo_open=True, hi_open=True,
                                 valid="a number strictly between 0 and 1")
                else:
                    check_number(f"expectations[{k!r}]", v, lo=0, lo_open=True, valid="an error > 0")
                    if self.expectation_error_scale is None:
                        fail("expectation_error_scale", None,
                             f"a number > 0 (the largest error to count) when expectations name {k!r}")
            object.__setattr__(self, "expectations", MappingProxyType(dict(self.expectations)))
        check_level("expectation_level", self.expectation_level)
        check_integer("expectation_min_labels", self.expectation_min_labels, lo=1)
        if self.expectation_error_scale is not None:
            check_number("expectation_error_scale", self.expectation_error_scale, lo=0, lo_open=True)
        if self.performance_task is not None and self.performance_task not in _TASKS:
            fail("performance_task", self.performance_task, f"None or one of {_TASKS}")
        for name in ("performance_output_field", "performance_store", "request_id_field"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v):
                fail(name, v, "None or a non-empty string")
        if self.performance_segment is not None and not (callable(self.performance_segment) or (
                isinstance(self.performance_segment, str) and ":" in self.performance_segment)):
            fail("performance_segment", self.performance_segment,
                 "None, a callable segment(input, result) -> str, or 'module:function'")
        if self.performance_reference is not None and not (callable(self.performance_reference) or (
                isinstance(self.performance_reference, str) and self.performance_reference)):
            fail("performance_reference", self.performance_reference,
                 "None, the path of a .npz with scores and labels, or a callable returning (scores, labels)")
        check_number("feedback_retention_s", self.feedback_retention_s, lo=0, lo_open=True, valid="seconds > 0")
        check_number("feedback_pending_s", self.feedback_pending_s, lo=0, lo_open=True, valid="seconds > 0")
        check_number("performance_interval_s", self.performance_interval_s, lo=0, lo_open=True, valid="seconds > 0")
        check_integer("performance_buffer_rows", self.performance_buffer_rows, lo=1)
        check_bool("performance_record_inputs", self.performance_record_inputs)
        check_integer("performance_max_input_values", self.performance_max_input_values, lo=1)
        check_integer("performance_window", self.performance_window, lo=2)
        check_bool("labels_missing_at_random", self.labels_missing_at_random)
        check_number("performance_band_z", self.performance_band_z, lo=0, lo_open=True)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if d["expectations"] is not None:
            d["expectations"] = dict(d["expectations"])
        return d


def from_config(section: PerformanceSettings, context: "GuardContext") -> Component | None:
    if not section.enabled:
        return None
    from .component import PerformanceComponent

    return PerformanceComponent.from_settings(section)  # type: ignore[no-any-return]


PERFORMANCE = Capability("performance", PerformanceSettings, from_config)  # type: ignore[arg-type]
