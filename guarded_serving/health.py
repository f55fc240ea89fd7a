"""Health check results and their aggregation.

A check is anything that yields :class:`CheckResult` values; the guard collects
them from its components and folds them into one report::

    {"status": "degraded",
     "checks": {"latency_slo": {"status": "degraded", "reason": "...", ...}, ...}}

Statuses are ordered ``ok < unavailable < degraded < failing``. ``unavailable``
means "no reading exists here" (e.g. no temperature sensors in a container)
and never makes the service unhealthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = ["OK", "UNAVAILABLE", "DEGRADED", "FAILING", "CheckResult", "aggregate", "worst"]

OK = "ok"
UNAVAILABLE = "unavailable"
DEGRADED = "degraded"
FAILING = "failing"

_RANK = {OK: 0, UNAVAILABLE: 0, DEGRADED: 1, FAILING: 2}
STATUSES = (OK, UNAVAILABLE, DEGRADED, FAILING)


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check.

    Parameters
    ----------
    name : str
        Stable identifier, e.g. ``"latency_slo"`` or ``"hardware.memory"``.
    status : {"ok", "unavailable", "degraded", "failing"}
    reason : str
        One sentence a person can act on.
    details : mapping
        JSON-serialisable readings behind the verdict.
    affects_readiness : bool, default=True
        Whether ``failing`` here may make the service not ready (the guard's
        ``readiness_checks`` setting can narrow this further).
    """

    name: str
    status: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)
    affects_readiness: bool = True

    def __post_init__(self) -> None:
        if self.status not in _RANK:
            raise ValueError(f"status={self.status!r} is invalid: expected one of {STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "details": dict(self.details),
                "affects_readiness": self.affects_readiness}


def worst(statuses: Iterable[str]) -> str:
    """The most severe of ``statuses`` as an overall status (``ok`` if empty)."""
    top = OK
    for s in statuses:
        if _RANK[s] > _RANK[top]:
            top = s
    return top


def aggregate(results: Iterable[CheckResult], readiness_checks: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Fold check results into the report returned by ``Guard.health()``.

    A ``failing`` check that is not allowed to affect readiness counts as
    ``degraded`` in the overall status, so the service stays ready while the
    report still shows it failing.
    """
    checks: dict[str, Any] = {}
    effective = []
    for r in results:
        checks[r.name] = r.to_dict()
        gates = r.affects_readiness and (readiness_checks is None or _matches(r.name, readiness_checks))
        effective.append(r.status if (r.status != FAILING or gates) else DEGRADED)
    status = worst(effective)
    return {"status": status, "ready": status != FAILING, "checks": checks}


def _matches(name: str, selectors: tuple[str, ...]) -> bool:
    # "hardware" selects "hardware" and "hardware.gpu0.temperature".
    return any(name == s or name.startswith(s + ".") for s in selectors)
