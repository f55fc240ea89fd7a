"""OpenTelemetry instrumentation: attribute names, tracing, metrics and an SDK helper.

Library code here depends on ``opentelemetry-api`` only; :mod:`.sdk` is the one
module that touches the SDK, and only when an application calls it.
"""

from . import attributes
from .sdk import configure_telemetry

__all__ = ["attributes", "configure_telemetry"]
