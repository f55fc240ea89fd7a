"""The plug-in interface through which each capability joins a guard.

A :class:`Component` is one concept (latency SLO, hardware health, artifact
integrity, edge-case scoring, drift, or a rule of your own). The guard calls
its hooks; every hook has a no-op default and the guard only calls the hooks a
component overrides.

Life cycle: ``bind(context)`` once when the guard is built (validate, load,
no threads) -> ``resources()`` once after it -> ``start()`` in the serving
worker -> per call ``before_call`` / ``after_call`` -> ``stop()``. Read side
at any time: ``checks()``, ``span_attributes()``, ``stats()``.

Components talk through typed keys only (:mod:`guarded_serving.keys`): a
component lists the keys it ``provides`` and the keys it ``needs``, and the
guard orders components so that providers run first. A component raising in
any hook never changes the model's result or exception: the guard catches
it, serving goes on, and health shows ``guard.components`` degraded naming
the component and the hook.

Request-path hooks must stay O(features): anything slower (sampling
hardware, window statistics, hashing) belongs in background work
(:class:`guarded_serving.worker.PeriodicWorker`) and is read back from a cache.

A capability package describes itself with a :class:`Capability`: its
configuration section and a factory ``from_config(section, context)`` that
returns its component, or None when the section turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping

if TYPE_CHECKING:
    from .call import Call
    from .context import GuardContext
    from .health import CheckResult
    from .keys import StateKey
    from .settings import Section

__all__ = ["Capability", "Component"]


class Component:
    """Base class of guard components. Override what you need."""

    #: Stable name: the key of this component's ``stats()`` entry; unique within a guard.
    name: str = "component"

    #: Which spans carry ``span_attributes()``: ``"every"`` recorded span, or only
    #: ``"anomalous"`` ones (context that explains an anomaly). With the guard's
    #: ``span_detail="full"`` every span carries all of them.
    span_scope: str = "every"

    #: Keys this component sets (call keys in ``call.state``, guard keys in ``resources()``).
    provides: ClassVar[tuple["StateKey[Any]", ...]] = ()
    #: Keys this component reads; their providers are ordered before it.
    needs: ClassVar[tuple["StateKey[Any]", ...]] = ()

    #: ``stats()`` goes under ``Guard.stats()[name]``; True merges it at the top level
    #: instead (the SLO component's call counters).
    stats_at_top: ClassVar[bool] = False

    def bind(self, context: "GuardContext") -> None:
        """Called once when the guard is built. Validate and load eagerly; no threads yet."""

    def resources(self) -> Mapping["StateKey[Any]", Any]:
        """Values of the guard-scoped keys this component provides (called once after ``bind``)."""
        return {}

    def start(self) -> None:
        """Start background work, in the serving worker (first call or ``Guard.start()``)."""

    def stop(self) -> None:
        """Stop background work; must be idempotent."""

    def before_call(self, call: "Call") -> None:
        """On the request path after input validation. May annotate the call
        (``call.attributes``, ``call.flag()``, ``call.state``, ``call.set_header``),
        replace its input (``call.set_input``), answer it (``call.answer``) or raise
        :class:`~guarded_serving.errors.RejectedInputError`."""

    def after_call(self, call: "Call") -> None:
        """On the request path after the model returned (``call.result``) or
        raised (``call.error``), with ``call.outcome`` and ``call.latency_ms`` set;
        may replace ``call.result``. Runs for refused inputs too (``call.inputs`` None)."""

    def checks(self) -> Iterable["CheckResult"]:
        """Current health verdicts; cheap (read cached state)."""
        return ()

    def span_attributes(self) -> Mapping[str, Any]:
        """Attributes put on recorded spans (see ``span_scope``); return a cached mapping."""
        return {}

    def stats(self) -> Mapping[str, Any]:
        """Counters for ``Guard.stats()[self.name]``."""
        return {}


@dataclass(frozen=True)
class Capability:
    """How a capability package joins the guard: a config section and a factory.

    Parameters
    ----------
    name : str
        The section's name (``cfg.section(name)``) and the component's usual name.
    section : type of Section
        Frozen dataclass whose field names are the flat keywords of ``GuardConfig``.
    from_config : callable
        ``from_config(section, context) -> Component | None`` (None: turned off).
    """

    name: str
    section: type["Section"]
    from_config: Callable[["Section", "GuardContext"], Component | None]
