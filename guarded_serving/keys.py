"""Typed keys through which components hand data to each other, and what they carry.

Components never read each other's attributes. One component *provides* a key,
another *needs* it; the guard orders components from those declarations and
carries the values:

- a **call** key holds per-call data in :attr:`guarded_serving.Call.state`
  (``call.state[EDGE_P_VALUES]``), fresh for every call;
- a **guard** key holds data fixed when the guard is built (a reference sample,
  the input schema), published once by its provider's
  :meth:`~guarded_serving.Component.resources` and read by others through
  :meth:`guarded_serving.GuardContext.get`.

User components may define keys of their own with :class:`StateKey`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Sequence, TypeVar

import numpy as np

__all__ = ["EDGE_P_VALUES", "EDGE_VERDICT", "FEATURES", "OUTCOME", "INPUT_SCHEMA", "PINNED_PACKAGES", "REFERENCE", "SLO_VIOLATED",
           "InputSchema", "ReferenceData", "StateKey"]

T = TypeVar("T")
SCOPES = ("call", "guard")


class StateKey(Generic[T]):
    """A named, typed slot. Identity is the key: two keys with one name are different keys.

    Parameters
    ----------
    name : str
        Shown in errors and repr, e.g. ``"edge.p_values"``.
    scope : {"call", "guard"}, default="call"
    doc : str
        What the value is (shape, units).
    """

    __slots__ = ("name", "scope", "doc")

    def __init__(self, name: str, scope: str = "call", doc: str = "") -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope={scope!r} is invalid: expected one of {SCOPES}")
        self.name = name
        self.scope = scope
        self.doc = doc

    def __repr__(self) -> str:
        return f"StateKey({self.name!r}, scope={self.scope!r})"


@dataclass(frozen=True)
class ReferenceData:
    """Training-time rows that describe what serving traffic should look like."""

    reference: np.ndarray                      # (n_rows, n_features) float
    feature_names: Sequence[str] | None = None
    categorical: tuple[int, ...] = ()
    reference_predictions: np.ndarray | None = None
    source: str | None = None                  # where it came from, for messages


@dataclass(frozen=True)
class InputSchema:
    """What the monitored input matrix must look like, as learned from training data.

    ``nan_allowed`` is a boolean per feature (NaN accepted there) or None (no NaN anywhere,
    unless the guard's ``allow_nan`` says otherwise). ``minimum``/``maximum`` bound what is
    plausible (values millions of training ranges away are refused before the model sees them);
    ``boolean`` marks 0/1 flags, the only features where a JSON boolean is accepted.
    """

    n_features: int
    feature_names: Sequence[str] = ()
    nan_allowed: np.ndarray | None = None
    source: str | None = None
    view: Any = None  # the fitted InputView that reads raw inputs into these features (None: numbers)
    minimum: np.ndarray | None = None  # per-feature training minimum (NaN: unknown), for plausibility limits
    maximum: np.ndarray | None = None  # per-feature training maximum
    boolean: np.ndarray | None = None  # per feature: a 0/1 flag in training, so JSON booleans are accepted


FEATURES: StateKey[np.ndarray] = StateKey(
    "features", "call", "The monitored feature matrix of the call (``call.inputs``), computed by the guard's "
    "input view only when some component needs it.")
OUTCOME: StateKey[str] = StateKey(
    "outcome", "call", "Ordering token: a component that may change a call's outcome in after_call (withhold "
    "an answer) provides it; components that account outcomes need it, so they see the final one.")
SLO_VIOLATED: StateKey[bool] = StateKey(
    "slo.violated", "call", "True when the call took longer than its latency budget (set in after_call).")
EDGE_P_VALUES: StateKey[np.ndarray] = StateKey(
    "edge.p_values", "call", "Conformal p-value per row, ndarray of shape (n_rows,) (set in before_call).")
EDGE_VERDICT: StateKey[dict[str, Any]] = StateKey(
    "edge.verdict", "call", "Flagged rows, their p-values and explanations (flagged calls only).")
REFERENCE: StateKey[ReferenceData] = StateKey(
    "reference", "guard", "Training reference rows (from the edge-case profile).")
PINNED_PACKAGES: StateKey[dict[str, str | None]] = StateKey(
    "packages.pinned", "guard", "Package -> version the deployment was built with (from the manifest).")
INPUT_SCHEMA: StateKey[InputSchema] = StateKey(
    "input.schema", "guard", "Feature count and per-feature missing-value policy (from the profile).")
