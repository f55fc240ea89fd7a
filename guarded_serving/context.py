"""The read-only context a guard hands to its components when it binds them.

Everything a component may use from its guard and from its peers, and nothing
else: the configuration (frozen), the telemetry providers (public, also for
user components), the shared store, and the guard-scoped values other
components published under typed keys (:mod:`guarded_serving.keys`). A
component never receives the guard itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar

from ._version import __version__
from .keys import StateKey

if TYPE_CHECKING:
    from .store.base import WindowStore

__all__ = ["STORE_URL_ENV", "GuardContext", "default_state_dir", "default_store_url"]

#: Environment variable naming the shared store when a component's setting is None.
STORE_URL_ENV = "GUARDED_STORE_URL"

T = TypeVar("T")
_MISSING = object()


def default_store_url() -> str | None:
    """``$GUARDED_STORE_URL`` (e.g. ``redis://127.0.0.1:6379/0``): the shared store of every
    component whose own store setting is None; None when unset or empty."""
    return os.environ.get(STORE_URL_ENV) or None


def default_state_dir() -> Path:
    """``$GUARDED_STATE_DIR``, else ``.state/`` under the working directory."""
    return Path(os.environ.get("GUARDED_STATE_DIR") or Path.cwd() / ".state")


class GuardContext:
    """What components see of their guard (read-only).

    Attributes
    ----------
    config : GuardConfig
        The guard's frozen configuration (``config.section("drift")`` for one section).
    model_name, model_version : str
    """

    __slots__ = ("config", "model_name", "model_version", "_tracer_provider", "_resolve_tracer_provider",
                 "_meter_provider", "_resources", "_resources_view")

    def __init__(self, config: Any, *, tracer_provider_resolver: Callable[[], Any], meter_provider: Any = None) -> None:
        self.config = config
        self.model_name: str = config.name
        self.model_version: str = config.version
        self._resolve_tracer_provider = tracer_provider_resolver
        self._tracer_provider: Any = None
        self._meter_provider = meter_provider
        self._resources: dict[StateKey[Any], Any] = {}
        self._resources_view: Mapping[StateKey[Any], Any] = MappingProxyType(self._resources)

    # -- telemetry --------------------------------------------------------------------
    @property
    def tracer_provider(self) -> Any:
        """The provider the guard's spans go to (BentoML's inside a BentoML worker once the
        guard started, else the one passed to the guard, else the global one)."""
        if self._tracer_provider is None:
            self._tracer_provider = self._resolve_tracer_provider()
        return self._tracer_provider

    def tracer(self) -> Any:
        return self.tracer_provider.get_tracer("guarded_serving", __version__)

    @property
    def meter_provider(self) -> Any:
        """The meter provider passed to the guard, or None (the global one)."""
        return self._meter_provider

    def meter(self) -> Any:
        from opentelemetry import metrics

        return metrics.get_meter("guarded_serving", __version__, meter_provider=self._meter_provider)

    # -- shared state ------------------------------------------------------------------
    def open_store(self, target: "str | os.PathLike[str] | WindowStore | None", *, name: str,
                   retention: int) -> "WindowStore":
        """The shared window store: ``target`` (a store, a ``redis://`` / ``rediss://`` URL, or a
        SQLite path), else :func:`default_store_url` (``$GUARDED_STORE_URL``) when set, else
        ``<state dir>/<name>-<model>.sqlite``. A Redis store's keys are namespaced
        ``<model>:<version>:<name>``. Nothing connects here."""
        from .store import open_store

        if target is None:
            target = default_store_url() or default_state_dir() / f"{name}-{self.model_name}.sqlite"
        return open_store(target, retention=retention, namespace=f"{self.model_name}:{self.model_version}:{name}")

    def get(self, key: StateKey[T], default: Any = _MISSING) -> T:
        """The value a component published for the guard-scoped ``key``; ``default``
        (or KeyError naming the key) when no component provides it."""
        try:
            return self._resources[key]  # type: ignore[no-any-return]
        except KeyError:
            if default is _MISSING:
                raise KeyError(f"no component of this guard provides {key!r}") from None
            return default  # type: ignore[no-any-return]

    @property
    def resources(self) -> Mapping[StateKey[Any], Any]:
        """Every guard-scoped value published so far (read-only view)."""
        return self._resources_view

    # -- written by the guard only ------------------------------------------------------
    def _publish(self, owner: str, values: Mapping[StateKey[Any], Any]) -> None:
        for k, v in values.items():
            if not isinstance(k, StateKey) or k.scope != "guard":
                raise TypeError(f"component {owner!r} published {k!r}: resources() takes guard-scoped StateKeys")
            self._resources[k] = v

    def _set_tracer_provider(self, provider: Any) -> None:
        self._tracer_provider = provider
