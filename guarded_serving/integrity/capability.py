"""The ``integrity`` configuration section and its factory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..component import Capability, Component
from ..settings import Section, as_tuple, check_number, check_path, fail
from .component import POLICIES, IntegrityGuard

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["INTEGRITY", "IntegritySettings"]


@dataclass(frozen=True, kw_only=True)
class IntegritySettings(Section):
    """Deployment integrity: manifest, signature, permissions, artifact hashes, preprocessing.

    Parameters
    ----------
    manifest : str or path or None, default=None
        Deployment manifest (``guarded-serving manifest create``) verified at
        construction and re-verified while serving. ``None`` disables artifact checks.
    manifest_public_key : str or path or None, default=None
        Ed25519 public key (PEM file or PEM text); when set the manifest must
        carry a signature that verifies with it.
    artifact_root : str or path or None, default=None
        Directory relative artifact paths resolve against (default: the manifest's).
    integrity_policy : {"refuse", "not_ready"}, default="refuse"
        On an integrity failure at startup: raise ``IntegrityError`` (the service
        does not start), or start with the ``integrity.*`` check failing (not ready).
    integrity_check_interval_s : float, default=30
        Seconds between background re-checks (stat first, re-hash on change); 0 disables.
    writable_dirs : tuple of str, default=()
        Directories the service must be able to write (state, logs), checked at startup.
    """

    section = "integrity"
    manifest: str | os.PathLike[str] | None = None
    manifest_public_key: str | os.PathLike[str] | None = None
    artifact_root: str | os.PathLike[str] | None = None
    integrity_policy: str = "refuse"
    integrity_check_interval_s: float = 30.0
    writable_dirs: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.manifest is not None or bool(self.writable_dirs)

    def __post_init__(self) -> None:
        for fname in ("manifest", "manifest_public_key", "artifact_root"):
            check_path(fname, getattr(self, fname), pem=fname == "manifest_public_key")
        if self.integrity_policy not in POLICIES:
            fail("integrity_policy", self.integrity_policy, " or ".join(map(repr, POLICIES)))
        check_number("integrity_check_interval_s", self.integrity_check_interval_s, lo=0,
                     valid="a number of seconds >= 0 (0 disables the background re-check)")
        as_tuple(self, "writable_dirs")
        if not isinstance(self.writable_dirs, tuple) or not all(
                isinstance(d, (str, os.PathLike)) and str(d) for d in self.writable_dirs):
            fail("writable_dirs", self.writable_dirs, "a tuple of directory paths")


def from_config(section: IntegritySettings, context: "GuardContext") -> Component | None:
    if not section.enabled:
        return None
    return IntegrityGuard(manifest=section.manifest, public_key=section.manifest_public_key,
                          root=section.artifact_root, policy=section.integrity_policy,
                          interval_s=section.integrity_check_interval_s, writable_dirs=section.writable_dirs)


INTEGRITY = Capability("integrity", IntegritySettings, from_config)  # type: ignore[arg-type]
