"""The ``edge_cases`` configuration section and its factory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..component import Capability, Component
from ..settings import Section, check_number, fail
from .combined import parse_parts
from .component import DETECTOR_NAMES, POLICIES, EdgeCaseComponent
from .content import ContentCheck

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["EDGE_CASES", "OUTPUT_CHECK", "EdgeCaseSettings", "OutputCheckSettings"]


@dataclass(frozen=True, kw_only=True)
class EdgeCaseSettings(Section):
    """Edge cases: per-row out-of-distribution verdicts from a reference profile.

    Parameters
    ----------
    profile : str, path or Profile, default=None
        A reference profile (``guarded-serving profile``); when set, every request's rows
        get conformal out-of-distribution p-values, and the profile sets the expected
        feature count and where missing values (NaN) are accepted.
    edge_policy : {"flag", "reject", "fallback"}, default="flag"
        What happens to a call with rows flagged as edge cases: serve and flag it,
        refuse it (HTTP 422), or send the flagged rows to ``edge_fallback``.
    edge_fpr : float, default=0.01
        Target false-positive rate on in-distribution rows (flag when p <= edge_fpr).
    edge_fallback : callable, default=None
        ``fallback(rows) -> results`` for flagged rows; required by ``edge_policy="fallback"``.
    edge_detector : str, default="combined"
        Which of the profile's detectors scores rows: ``"combined"`` (tail + Mahalanobis,
        combined by their null evidence), ``"tail"``, ``"mahalanobis"``, ``"knn"``, ``"copula"``
        (Mahalanobis on per-feature normal scores), or parts joined by ``+`` (e.g.
        ``"tail+mahalanobis+knn"``, ``"mahalanobis+copula"``), combined the same way.
    """

    section = "edge_cases"
    profile: Any = None
    edge_policy: str = "flag"
    edge_fpr: float = 0.01
    edge_fallback: Any = None
    edge_detector: str = "combined"

    @property
    def enabled(self) -> bool:
        return self.profile is not None

    def __post_init__(self) -> None:
        if self.edge_policy not in POLICIES:
            fail("edge_policy", self.edge_policy, "'flag', 'reject' or 'fallback'")
        check_number("edge_fpr", self.edge_fpr, lo=0, hi=1, lo_open=True, hi_open=True,
                     valid="a fraction strictly between 0 and 1, e.g. 0.01")
        if self.edge_fallback is not None and not callable(self.edge_fallback):
            fail("edge_fallback", self.edge_fallback, "None or a callable fallback(rows) -> results")
        if self.edge_policy == "fallback" and self.edge_fallback is None:
            fail("edge_fallback", self.edge_fallback, "a callable fallback(rows) -> results when edge_policy='fallback'")
        if not isinstance(self.edge_detector, str) or (self.edge_detector not in DETECTOR_NAMES
                                                       and parse_parts(self.edge_detector) is None):
            fail("edge_detector", self.edge_detector, "'combined', 'tail', 'mahalanobis', 'knn', 'copula', or parts "
                 "joined by '+' such as 'tail+mahalanobis+knn'")
        if self.profile is not None and not isinstance(self.profile, (str, os.PathLike)) \
                and not hasattr(self.profile, "detector"):
            fail("profile", self.profile, "None, a path to a profile file, or a Profile")


def from_config(section: EdgeCaseSettings, context: "GuardContext") -> Component | None:
    if not section.enabled:
        return None
    return EdgeCaseComponent(section.profile, policy=section.edge_policy, fpr=section.edge_fpr,
                             fallback=section.edge_fallback, detector=section.edge_detector)


EDGE_CASES = Capability("edge_cases", EdgeCaseSettings, from_config)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class OutputCheckSettings(Section):
    """The output content check (:mod:`.content`): edge cases of what the model answers.

    Parameters
    ----------
    output_check : bool or callable, default=False
        ``True``: the built-in check of text answers; a callable ``check(text) -> reason
        or None``: yours; ``False``: off.
    output_policy : {"flag", "reject", "fallback"}, default="flag"
    output_fallback : callable, default=None
        ``fallback(text) -> replacement``; required by ``output_policy="fallback"``.
    output_field : str, default=None
        The key of a dict result holding the text answers (default: the first usual key,
        ``text``, ``answer``, ``reply``, ...).
    """

    section = "output_check"
    output_check: Any = False
    output_policy: str = "flag"
    output_fallback: Any = None
    output_field: str | None = None

    @property
    def enabled(self) -> bool:
        return self.output_check is not False and self.output_check is not None

    def __post_init__(self) -> None:
        if not (isinstance(self.output_check, bool) or self.output_check is None or callable(self.output_check)):
            fail("output_check", self.output_check, "True, False or a callable check(text) -> reason or None")
        if self.output_policy not in POLICIES:
            fail("output_policy", self.output_policy, "'flag', 'reject' or 'fallback'")
        if self.output_policy == "fallback" and not callable(self.output_fallback):
            fail("output_fallback", self.output_fallback, "a callable fallback(text) -> replacement when "
                 "output_policy='fallback'")


def output_from_config(section: OutputCheckSettings, context: "GuardContext") -> Component | None:
    if not section.enabled:
        return None
    return ContentCheck(section.output_check, policy=section.output_policy, fallback=section.output_fallback,
                        field=section.output_field)


OUTPUT_CHECK = Capability("output_check", OutputCheckSettings, output_from_config)  # type: ignore[arg-type]
