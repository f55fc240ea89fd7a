"""The capabilities a guard is built from, in their default order.

Each capability package describes itself with a
:class:`~guarded_serving.component.Capability` (a configuration section and a
factory) in its ``capability`` module; this registry lists them.
:class:`~guarded_serving.GuardConfig` builds one section per capability, and
:class:`~guarded_serving.Guard` calls each factory with its section and the
context. A third-party capability joins with :func:`register_capability`
before its guards are built: its section's fields become keywords of
``GuardConfig`` and ``Guard``.
"""

from __future__ import annotations

import threading

from .component import Capability
from .drift.capability import DRIFT
from .edge_cases.capability import EDGE_CASES, OUTPUT_CHECK
from .errors import ConfigError
from .feedback_loops.capability import LOOP
from .integrity.capability import INTEGRITY
from .operational.capability import OPERATIONAL, SLO
from .performance.capability import PERFORMANCE
from .settings import GuardSettings

__all__ = ["capabilities", "register_capability"]

_lock = threading.Lock()
# Default order; the guard then moves providers of a key before the components that need it.
_CAPABILITIES: list[Capability] = [SLO, INTEGRITY, OPERATIONAL, EDGE_CASES, OUTPUT_CHECK, DRIFT, PERFORMANCE,
                                   LOOP]


def capabilities() -> tuple[Capability, ...]:
    """Every registered capability, built-in ones first."""
    return tuple(_CAPABILITIES)


def register_capability(capability: Capability) -> None:
    """Add a capability; its name and its section's field names must be new."""
    if not isinstance(capability, Capability):
        raise ConfigError(f"capability={capability!r} is invalid: expected a guarded_serving.component.Capability")
    with _lock:
        taken = {"guard"} | {c.name for c in _CAPABILITIES}
        if capability.name in taken:
            raise ConfigError(f"capability name {capability.name!r} is taken: registered are {sorted(taken)}")
        fields = set(GuardSettings.field_names())
        for c in _CAPABILITIES:
            fields |= set(c.section.field_names())
        clash = sorted(fields & set(capability.section.field_names()))
        if clash:
            raise ConfigError(f"capability {capability.name!r}: settings {clash} are already keywords of GuardConfig")
        _CAPABILITIES.append(capability)
