"""The ``integrity`` configuration section and its factory."""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..component import Capability, Component
from ..settings import Section, as_tuple, check_bool, check_number, check_path, fail
from .component import POLICIES, IntegrityGuard
from .ossf import ModelSignature

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
    require_signature : bool, default=False
        Refuse (or, under ``not_ready``, fail) an unsigned manifest or one whose signature
        cannot be checked for want of ``manifest_public_key``. Without it they are ``degraded``.
    model_signature : str or path or None, default=None
        An OpenSSF Model Signing bundle (the ``model-signing`` package, optional extra
        ``[signing]``) over ``artifact_root`` (else the bundle's directory), verified with
        ``model_signature_key`` at startup and every ``integrity_check_interval_s``.
    model_signature_key : str or path or None, default=None
        The signer's elliptic-curve public key (PEM file); required with ``model_signature``.

    The integrity component is always present: without a manifest it reports
    ``integrity.manifest`` unavailable (nothing verified), never silence.
    """

    section = "integrity"
    manifest: str | os.PathLike[str] | None = None
    manifest_public_key: str | os.PathLike[str] | None = None
    artifact_root: str | os.PathLike[str] | None = None
    integrity_policy: str = "refuse"
    integrity_check_interval_s: float = 30.0
    writable_dirs: tuple[str, ...] = ()
    require_signature: bool = False
    model_signature: str | os.PathLike[str] | None = None
    model_signature_key: str | os.PathLike[str] | None = None

    @property
    def enabled(self) -> bool:
        return True

    def __post_init__(self) -> None:
        for fname in ("manifest", "manifest_public_key", "artifact_root", "model_signature", "model_signature_key"):
            check_path(fname, getattr(self, fname), pem=fname == "manifest_public_key")
        check_bool("require_signature", self.require_signature)
        if self.model_signature is not None and self.model_signature_key is None:
            fail("model_signature_key", None, "the signer's public key (PEM file) when model_signature is set")
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
    signature = None
    if section.model_signature is not None:
        sig = Path(section.model_signature)
        signature = ModelSignature(section.artifact_root or sig.parent, sig, section.model_signature_key)  # type: ignore[arg-type]
    return IntegrityGuard(manifest=section.manifest, public_key=section.manifest_public_key,
                          root=section.artifact_root, policy=section.integrity_policy,
                          interval_s=section.integrity_check_interval_s, writable_dirs=section.writable_dirs,
                          require_signature=section.require_signature, model_signature=signature)


INTEGRITY = Capability("integrity", IntegritySettings, from_config)  # type: ignore[arg-type]
