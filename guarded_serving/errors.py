"""Exceptions raised by guarded-serving.

Input errors subclass BentoML's ``InvalidArgument`` so that, inside a BentoML
service, they become an HTTP 400 whose body carries the message; they also
subclass ``ValueError`` so plain Python callers can catch them naturally.
"""

from __future__ import annotations

from http import HTTPStatus

from bentoml.exceptions import InvalidArgument as _BentoInvalidArgument

__all__ = [
    "ConfigError",
    "GuardError",
    "InvalidInputError",
    "RejectedInputError",
    "is_client_error",
]


class GuardError(Exception):
    """Base class for errors raised by the guard itself (never by the model)."""


class ConfigError(GuardError, ValueError):
    """A configuration value is invalid; the message names it and what is valid."""


class InvalidInputError(GuardError, _BentoInvalidArgument, ValueError):
    """The request's input is malformed (type, shape, NaN/inf, empty batch).

    ``field`` names the offending parameter, ``problem`` says what is wrong.
    Served as HTTP 400.
    """

    error_code = HTTPStatus.BAD_REQUEST

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


class RejectedInputError(GuardError, _BentoInvalidArgument, ValueError):
    """A detector rejected the input under the ``reject`` policy. Served as HTTP 422."""

    error_code = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, message: str, *, details: object = None) -> None:
        self.details = details
        super().__init__(message)


def is_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` answers the caller with a 4xx: the request was wrong, the model did not fail.

    Read from the exception's ``error_code`` (BentoML, possibly an ``HTTPStatus``) or
    ``status_code`` (Starlette); a pydantic ``ValidationError`` (the body does not match the API's
    schema) counts too.
    """
    if type(exc).__name__ == "ValidationError":
        return True
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    if code is None:
        code = getattr(exc, "status_code", None)
    try:
        return 400 <= int(code) < 500  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
