"""Errors of the integrity checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..errors import GuardError

if TYPE_CHECKING:
    from .permissions import PermissionProblem
    from .verify import Finding

__all__ = ["IntegrityError", "ManifestError"]


class ManifestError(GuardError, ValueError):
    """A manifest file is unreadable or malformed; the message says where and what."""


class IntegrityError(GuardError):
    """The deployment does not match its manifest (or cannot read/write what it needs).

    The message names every offending file with the expected and the found
    digest; ``findings`` and ``permission_problems`` hold them as objects.
    """

    def __init__(self, message: str, *, findings: Sequence["Finding"] = (),
                 permission_problems: Sequence["PermissionProblem"] = ()) -> None:
        self.findings = tuple(findings)
        self.permission_problems = tuple(permission_problems)
        super().__init__(message)
