"""Errors of the integrity checks."""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import GuardError

__all__ = ["IntegrityError", "ManifestError"]


class ManifestError(GuardError, ValueError):
    """A manifest file is unreadable or malformed; the message says where and what."""


class IntegrityError(GuardError):
    """The deployment does not match its manifest (or cannot read/write what it needs).

    The message names every offending file with the expected and the found
    digest; ``findings`` (:class:`~.verify.Finding`) and ``permission_problems``
    (:class:`~.permissions.PermissionProblem`) hold them as objects. (This module sits
    below them and imports neither, so the package has no import loop.)
    """

    def __init__(self, message: str, *, findings: Sequence[Any] = (),
                 permission_problems: Sequence[Any] = ()) -> None:
        self.findings = tuple(findings)
        self.permission_problems = tuple(permission_problems)
        super().__init__(message)
