"""The one typed configuration of a guard: its own settings plus one section per capability.

:class:`GuardConfig` composes :class:`~guarded_serving.settings.GuardSettings`
and the section of every registered capability
(:mod:`guarded_serving.registry`); each section validates itself inside its
own package when it is built. Users write flat keywords, which are the
sections' field names::

    >>> cfg = GuardConfig(name="iris", latency_slo_ms=200, drift=True)
    >>> cfg.section("slo").latency_slo_ms, cfg.latency_slo_ms
    (200, 200)
    >>> GuardConfig(name="iris", latency_slo_ms=-1)
    Traceback (most recent call last):
    ...
    guarded_serving.errors.ConfigError: latency_slo_ms=-1 is invalid: expected a number > 0 (milliseconds)

Sections, their settings and defaults:

- ``guard`` (:class:`~guarded_serving.settings.GuardSettings`): name, version,
  trace_sample_ratio, input_arg, n_features, max_batch_rows, allow_nan,
  readiness_checks, span_detail;
- ``slo`` (:class:`~guarded_serving.operational.capability.SloSettings`):
  latency_slo_ms, slo_target, burn-rate windows and thresholds, error rates;
- ``integrity`` (:class:`~guarded_serving.integrity.capability.IntegritySettings`):
  manifest, manifest_public_key, artifact_root, integrity_policy, ...;
- ``operational`` (:class:`~guarded_serving.operational.capability.OperationalSettings`):
  operational, hardware_interval_s, dependencies, probes, ...;
- ``edge_cases`` (:class:`~guarded_serving.edge_cases.capability.EdgeCaseSettings`):
  profile, edge_policy, edge_fpr, edge_fallback, edge_detector;
- ``drift`` (:class:`~guarded_serving.drift.capability.DriftSettings`):
  drift, drift_store, drift_reference, drift_window, ...;
- ``performance`` (:class:`~guarded_serving.performance.capability.PerformanceSettings`):
  performance, expectations, expectation_level, performance_segment, performance_store,
  feedback_retention_s, performance_reference, ...
"""

from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Any, Mapping

from .registry import capabilities
from .settings import GuardSettings, Section

__all__ = ["GuardConfig", "GuardSettings"]


class GuardConfig:
    """Configuration of a :class:`~guarded_serving.Guard` (immutable, validated when built).

    Parameters
    ----------
    **settings
        Flat keywords: any field of :class:`~guarded_serving.settings.GuardSettings`
        (``name`` is required) or of a capability's section. An unknown keyword is a
        ``TypeError`` naming it; a bad value a :class:`~guarded_serving.ConfigError`.

    Attributes
    ----------
    guard : GuardSettings
    sections : mapping of str to Section
        One per registered capability, by capability name.

    Every setting also reads as an attribute (``cfg.latency_slo_ms``).
    """

    __slots__ = ("guard", "_sections", "__weakref__")

    def __init__(self, **settings: Any) -> None:
        rest = dict(settings)
        if "name" not in rest:
            raise TypeError("GuardConfig() missing required keyword argument: 'name'")
        core = GuardSettings(**{k: rest.pop(k) for k in GuardSettings.field_names() if k in rest})
        sections: dict[str, Section] = {}
        for cap in capabilities():
            sections[cap.name] = cap.section(**{k: rest.pop(k) for k in cap.section.field_names() if k in rest})
        if rest:
            known = list(core.field_names()) + [f for s in sections.values() for f in s.field_names()]
            hints = {k: difflib.get_close_matches(k, known, n=1) for k in rest}
            text = ", ".join(f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items())
            raise TypeError(f"GuardConfig got unexpected setting(s) {text}")
        object.__setattr__(self, "guard", core)
        object.__setattr__(self, "_sections", MappingProxyType(sections))

    # -- reading ------------------------------------------------------------------------
    @property
    def sections(self) -> Mapping[str, Section]:
        return self._sections

    def section(self, name: str) -> Any:
        """The section of capability ``name`` (KeyError naming the known ones)."""
        try:
            return self._sections[name]
        except KeyError:
            raise KeyError(f"no configuration section {name!r}: known are {sorted(self._sections)}") from None

    def __getattr__(self, name: str) -> Any:
        # flat read access: the guard's own settings first, then each section's
        if name.startswith("_"):
            raise AttributeError(name)
        core = object.__getattribute__(self, "guard")
        if name in type(core).__dataclass_fields__:  # type: ignore[attr-defined]
            return getattr(core, name)
        for sec in object.__getattribute__(self, "_sections").values():
            if name in type(sec).__dataclass_fields__:  # type: ignore[attr-defined]
                return getattr(sec, name)
        raise AttributeError(f"GuardConfig has no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"GuardConfig is immutable: use config.replace({name}=...)")

    def to_dict(self) -> dict[str, Any]:
        """Every setting as a flat dict (what ``GuardConfig(**d)`` rebuilds)."""
        out = self.guard.to_dict()
        for sec in self._sections.values():
            out.update(sec.to_dict())
        return out

    def replace(self, **changes: Any) -> "GuardConfig":
        """Return a copy with ``changes`` applied (validated again)."""
        return GuardConfig(**{**self.to_dict(), **changes})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GuardConfig) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"GuardConfig(name={self.guard.name!r}, version={self.guard.version!r}, sections={list(self._sections)})"
