"""guarded-serving: catch operational and ML failures on a model's predict path while serving."""

from ._version import __version__
from .call import Call
from .component import Component
from .config import GuardConfig
from .errors import ConfigError, GuardError, InvalidInputError, RejectedInputError
from .guard import Guard
from .health import CheckResult

__all__ = [
    "Call",
    "CheckResult",
    "Component",
    "ConfigError",
    "Guard",
    "GuardConfig",
    "GuardError",
    "InvalidInputError",
    "RejectedInputError",
    "__version__",
]
