"""The plug-in interface through which each capability joins a guard.

A :class:`Component` is one concept (hardware health, artifact integrity,
edge-case scoring, drift). The guard calls its hooks; every hook has a no-op
default, and the guard only calls the hooks a component overrides.

Request-path hooks (``before_call``, ``after_call``) must stay O(features):
anything slower (sampling hardware, window statistics, hashing) belongs in
background work started by ``start()`` and read back from a cache.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from .call import Call
    from .guard import Guard
    from .health import CheckResult

__all__ = ["Component"]


class Component:
    """Base class of guard components. Override what you need."""

    #: Stable name, used as the key of this component's ``stats()`` entry.
    name: str = "component"

    #: Which spans carry ``span_attributes()``: ``"every"`` recorded span, or only
    #: ``"anomalous"`` ones (context that explains an anomaly). With the guard's
    #: ``span_detail="full"`` every span carries all of them. Attribute count is
    #: what OTLP encoding costs, so context stays off normal spans by default.
    span_scope: str = "every"

    def bind(self, guard: "Guard") -> None:
        """Called once when the guard is built. Validate eagerly here; no threads yet."""

    def start(self) -> None:
        """Start background work, in the serving worker (first call or ``Guard.start()``)."""

    def stop(self) -> None:
        """Stop background work; must be idempotent."""

    def before_call(self, call: "Call") -> None:
        """On the request path after input validation. May annotate the call
        (``call.attributes``, ``call.flag()``), replace its input
        (``call.set_input``), answer it (``call.answer``) or raise
        :class:`~guarded_serving.errors.RejectedInputError`."""

    def after_call(self, call: "Call") -> None:
        """On the request path after the model returned (``call.result``) or
        raised (``call.error``); may replace ``call.result``."""

    def checks(self) -> Iterable["CheckResult"]:
        """Current health verdicts; cheap (read cached state)."""
        return ()

    def span_attributes(self) -> Mapping[str, Any]:
        """Attributes put on recorded spans (see ``span_scope``); return a cached mapping."""
        return {}

    def stats(self) -> Mapping[str, Any]:
        """Counters for ``Guard.stats()[self.name]``."""
        return {}
