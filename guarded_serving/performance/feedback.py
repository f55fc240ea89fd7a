"""Feedback items (the true outcome of a request id) and what became of each.

An item is ``{"request_id": id, "label": y}`` (optionally ``"row": i`` for one row of a
batch, and ``"source": tag``), or a tuple ``(request_id, label[, row])``. A list ``label``
gives one label per row of the request (rows 0, 1, ...). Each row's result is a
:class:`FeedbackResult`; a bad item never costs the other items of a batch.

``source`` says where the label came from, as a short tag (:data:`SOURCE_PATTERN`: 1-32
letters, digits, ``_ . : -``): ``"model"`` when the label exists because the model acted on
its answer (a loan granted, a song played from the list), ``"exploration"`` from the random
slice, anything else (``"organic"``, ``"audit"``) independent of the model. It is stored with
the label; the feedback-loop check reads the share of labels the model's own outputs produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

from ..sources import SOURCE_PATTERN, source_problem

__all__ = ["HTTP_STATUS", "SOURCE_PATTERN", "FeedbackResult", "check_source", "parse_items"]

def check_source(source: object) -> str | None:
    """Why ``source`` is not a usable tag (None: fine; None itself is fine: untagged)."""
    return source_problem(source)


#: HTTP status of each result status (2xx: the label is kept).
HTTP_STATUS = {"recorded": 200, "unchanged": 200, "pending": 202, "bad_request": 400, "unknown": 404,
               "conflict": 409, "expired": 410, "invalid": 422}


@dataclass(frozen=True)
class FeedbackResult:
    """What became of the label of one ``(request_id, row)``.

    ``status``: ``recorded`` (joined to its prediction), ``unchanged`` (the same label was
    recorded before: feedback is idempotent), ``pending`` (kept; its prediction is not stored
    yet and it is joined when it is), ``conflict`` (a different label was recorded first),
    ``invalid`` (wrong type for the prediction), ``unknown`` (no prediction with this id),
    ``expired`` (older than the retention), ``bad_request`` (not an item at all).
    """

    request_id: Any
    row: int | None
    status: str
    message: str

    @property
    def ok(self) -> bool:
        """Whether the label is kept (recorded, unchanged or pending)."""
        return self.status in ("recorded", "unchanged", "pending")

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.status]

    def to_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "row": self.row, "status": self.status,
                "http_status": self.http_status, "message": self.message}


def _label_value(label: Any) -> float | str:
    """The label as a float, or why it is not a usable label."""
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        if hasattr(label, "item") and not isinstance(label, (str, bytes)):  # numpy scalars
            try:
                return _label_value(label.item())
            except (TypeError, ValueError):
                pass
        return f"label {label!r} is a {type(label).__name__}: expected a number (a class index or a value)"
    v = float(label)
    if not math.isfinite(v):
        return f"label {label!r} is not finite"
    return v


def parse_items(items: Iterable[Any]) -> list[tuple[str, int, float, str | None] | FeedbackResult]:
    """One entry per row: ``(request_id, row, label, source)``, or the :class:`FeedbackResult`
    saying why it is not usable."""
    out: list[tuple[str, int, float, str | None] | FeedbackResult] = []
    for i, item in enumerate(items):
        source = None
        if isinstance(item, dict):
            rid, label, row = item.get("request_id"), item.get("label", _MISSING), item.get("row")
            source = item.get("source")
            extra = sorted(set(item) - {"request_id", "label", "row", "source"})
            if extra:
                out.append(FeedbackResult(rid, None, "bad_request", f"item {i}: unexpected field(s) {extra}; "
                                          "expected request_id, label, row, source"))
                continue
        elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
            rid, label = item[0], item[1]
            row = item[2] if len(item) == 3 else None
        else:
            out.append(FeedbackResult(None, None, "bad_request",
                                      f"item {i}: expected {{'request_id': ..., 'label': ...}}, got {item!r:.80}"))
            continue
        if not isinstance(rid, str) or not rid:
            out.append(FeedbackResult(rid, None, "bad_request", f"item {i}: request_id {rid!r} is missing or not "
                                      "a string (use the X-Request-Id of the prediction)"))
            continue
        if label is _MISSING:
            out.append(FeedbackResult(rid, None, "bad_request", f"request {rid}: the label is missing"))
            continue
        why = check_source(source)
        if why is not None:
            out.append(FeedbackResult(rid, row if isinstance(row, int) and not isinstance(row, bool) else None,
                                      "bad_request", f"item {i} (request {rid}): {why}"))
            continue
        if row is not None and (isinstance(row, bool) or not isinstance(row, int) or row < 0):
            out.append(FeedbackResult(rid, None, "bad_request", f"request {rid}: row {row!r} is invalid: expected "
                                      "an integer >= 0 (the row of the request's batch)"))
            continue
        labels = label if isinstance(label, (list, tuple)) else None
        if labels is not None and row is not None:
            out.append(FeedbackResult(rid, row, "bad_request", f"request {rid}: give either a list of labels "
                                      "(one per row) or one label with its row, not both"))
            continue
        if labels is not None and not labels:
            out.append(FeedbackResult(rid, None, "bad_request", f"request {rid}: the list of labels is empty"))
            continue
        for j, lab in enumerate(labels if labels is not None else [label]):
            r = j if labels is not None else (row or 0)
            v = _label_value(lab)
            if isinstance(v, str):
                out.append(FeedbackResult(rid, r, "invalid", f"request {rid} row {r}: {v}"))
            else:
                out.append((rid, r, v, source))
    return out


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()
