"""The ``feedback_loops`` configuration section and its factory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..component import Capability, Component
from ..settings import (
    Section,
    check_bool,
    check_integer,
    check_level,
    check_number,
    fail,
)

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["LOOP", "LoopSettings"]

_OUTPUTS = ("auto", "ranking", "items", "classes")
_WEIGHTS = ("dcg", "reciprocal", "uniform")


@dataclass(frozen=True, kw_only=True)
class LoopSettings(Section):
    """Degenerate feedback loops: exposure concentration, outcome coupling, a holdout, an alarm.

    Parameters
    ----------
    loop_check : bool, default=False
        Turn the loop check on (:mod:`guarded_serving.feedback_loops`).
    loop_item_field : str or None, default=None
        Key of a dict result holding the items or ranked lists (default: the first usual key).
    loop_user_field : str or None, default=None
        Keyword argument of the API (else result key) with the user or segment id per row.
    loop_exploration_field : str or None, default=None
        Keyword argument (else result key) marking a request, or each row, as exploration (the
        random-exposure holdout).
    loop_request_field : str, default="request_id"
        Result key with the request id when the call carries none.
    loop_output : {"auto", "ranking", "items", "classes"}, default="auto"
    loop_window : int, default=500
        Pooled lists per window (windows are cut by pooled position, the same in every worker).
    loop_alpha : float, default=0.01
        Bound on the probability that the alarm is ever raised while windows stay exchangeable.
    loop_block : int, default=1
        Windows averaged per judged value (raise it when successive windows correlate).
    loop_max_rank : int, default=20
    loop_position_weights : {"dcg", "reciprocal", "uniform"}, default="dcg"
    loop_catalogue_size : int or None, default=None
    loop_reference : str, mapping or None, default=None
        Reference popularity: ``.npz`` with ``items`` and ``popularity``, or a mapping.
    loop_store : str or None, default=None
        ``redis://`` URL or SQLite path; ``None``: ``$GUARDED_STORE_URL``, else
        ``$GUARDED_STATE_DIR/loops-<name>.sqlite``.
    loop_interval_s : float, default=5.0
    loop_min_holdout_clicks : int, default=30
    loop_holdout_lift : float, default=2.0
        ``loop.holdout`` is degraded when the model's favourites take half its exposure or more
        and the random holdout shows, at 97.5% confidence, that users like them less than this
        many times the other items.
    loop_buffer_calls : int, default=20000
    loop_retention_lists : int, default=200000
    """

    section = "feedback_loops"
    loop_check: bool = False
    loop_item_field: str | None = None
    loop_user_field: str | None = None
    loop_exploration_field: str | None = None
    loop_request_field: str = "request_id"
    loop_output: str = "auto"
    loop_window: int = 500
    loop_alpha: float = 0.01
    loop_block: int = 1
    loop_max_rank: int = 20
    loop_position_weights: str = "dcg"
    loop_catalogue_size: int | None = None
    loop_reference: Any = None
    loop_store: str | None = None
    loop_interval_s: float = 5.0
    loop_min_holdout_clicks: int = 30
    loop_holdout_lift: float = 2.0
    loop_buffer_calls: int = 20_000
    loop_retention_lists: int = 200_000

    @property
    def enabled(self) -> bool:
        return self.loop_check

    def __post_init__(self) -> None:
        check_bool("loop_check", self.loop_check)
        for f in ("loop_item_field", "loop_user_field", "loop_exploration_field", "loop_store"):
            v = getattr(self, f)
            if v is not None and (not isinstance(v, str) or not v):
                fail(f, v, "None or a non-empty string")
        if not isinstance(self.loop_request_field, str) or not self.loop_request_field:
            fail("loop_request_field", self.loop_request_field, "a non-empty string")
        if self.loop_output not in _OUTPUTS:
            fail("loop_output", self.loop_output, f"one of {_OUTPUTS}")
        check_integer("loop_window", self.loop_window, lo=2)
        check_level("loop_alpha", self.loop_alpha)
        check_integer("loop_block", self.loop_block, lo=1)
        check_integer("loop_max_rank", self.loop_max_rank, lo=1, hi=1000)
        if self.loop_position_weights not in _WEIGHTS:
            fail("loop_position_weights", self.loop_position_weights, f"one of {_WEIGHTS}")
        if self.loop_catalogue_size is not None:
            check_integer("loop_catalogue_size", self.loop_catalogue_size, lo=2)
        if self.loop_reference is not None and not isinstance(self.loop_reference, (str, Mapping)) \
                and not hasattr(self.loop_reference, "__fspath__"):
            fail("loop_reference", self.loop_reference, "None, a path to an .npz (items, popularity) or a mapping "
                 "item -> popularity")
        check_number("loop_interval_s", self.loop_interval_s, lo=0, lo_open=True, valid="seconds > 0")
        check_integer("loop_min_holdout_clicks", self.loop_min_holdout_clicks, lo=1)
        check_number("loop_holdout_lift", self.loop_holdout_lift, lo=1, lo_open=True, valid="a lift > 1")
        check_integer("loop_buffer_calls", self.loop_buffer_calls, lo=1)
        check_integer("loop_retention_lists", self.loop_retention_lists, lo=1)


def from_config(section: LoopSettings, context: GuardContext) -> Component | None:
    if not section.enabled:
        return None
    from .component import LoopComponent

    return LoopComponent(item_field=section.loop_item_field, user_field=section.loop_user_field,
                         exploration_field=section.loop_exploration_field,
                         request_field=section.loop_request_field, output=section.loop_output,
                         window=section.loop_window, alpha=section.loop_alpha, block=section.loop_block,
                         max_rank=section.loop_max_rank, position_weights=section.loop_position_weights,
                         catalogue_size=section.loop_catalogue_size, reference=section.loop_reference,
                         store=section.loop_store, interval_s=section.loop_interval_s,
                         min_holdout_clicks=section.loop_min_holdout_clicks,
                         holdout_lift=section.loop_holdout_lift,
                         buffer_calls=section.loop_buffer_calls, retention_lists=section.loop_retention_lists)


LOOP = Capability("feedback_loops", LoopSettings, from_config)  # type: ignore[arg-type]
