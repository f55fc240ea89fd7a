"""guarded-serving: catch operational and ML failures on a model's predict path while serving."""

from ._version import __version__
from .call import Call
from .component import Capability, Component
from .config import GuardConfig
from .context import GuardContext
from .errors import ConfigError, GuardError, InvalidInputError, RejectedInputError
from .guard import Guard
from .health import CheckResult
from .keys import StateKey
from .registry import register_capability
from .worker import PeriodicWorker

__all__ = [
    "Call",
    "Capability",
    "CheckResult",
    "Component",
    "ConfigError",
    "Guard",
    "GuardConfig",
    "GuardContext",
    "GuardError",
    "InvalidInputError",
    "PeriodicWorker",
    "RejectedInputError",
    "StateKey",
    "__version__",
    "register_capability",
]
