"""OpenSSF Model Signing: verify a model directory signed with the ``model-signing`` package.

The OpenSSF format (a Sigstore bundle over a manifest of every file's digest) is the
ecosystem's standard; this module checks such a signature offline with a public key, so a
model directory signed by ``model_signing.signing.Config().use_elliptic_key_signer(...)``
(or ``python -m model_signing sign key ...``) is verified at startup and re-verified in the
background like a guarded-serving manifest. The package is an optional extra
(``pip install guarded-serving[signing]``); without it a configured signature is a
:class:`~guarded_serving.errors.ConfigError` naming the missing package.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

__all__ = ["ModelSignature", "SignatureCheck", "model_signing_available"]


def model_signing_available() -> bool:
    """Whether the optional ``model-signing`` package imports."""
    try:
        import model_signing  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class SignatureCheck:
    ok: bool
    reason: str
    checked_at: float
    duration_s: float


class ModelSignature:
    """An OpenSSF model signature of ``model_dir``, verified with ``public_key`` (a PEM file of
    the elliptic-curve key the model was signed with).

    Parameters
    ----------
    model_dir : path
        The signed model directory (the one the service loads the model from).
    signature : path
        The signature bundle (``model.sig``). Keep it outside ``model_dir``, or sign with it among
        the ignored paths (``hashing.Config().set_ignored_paths(...)``): the hashing settings are
        taken from the signed manifest, never from the caller.
    public_key : path
        The signer's public key (PEM).
    """

    def __init__(self, model_dir: str | os.PathLike[str], signature: str | os.PathLike[str],
                 public_key: str | os.PathLike[str]) -> None:
        self.model_dir = Path(model_dir)
        self.signature = Path(signature)
        self.public_key = Path(public_key)

    def verify(self) -> SignatureCheck:
        """Re-hash the directory and check it against the signed manifest (full pass)."""
        try:
            from model_signing import verifying
        except ImportError as exc:
            raise ConfigError(f"model_signature={str(self.signature)!r} needs the optional 'model-signing' "
                              f"package (pip install 'guarded-serving[signing]'): {exc}") from None
        t0, at = time.perf_counter(), time.time()
        try:
            # the hashing settings (algorithm, ignored paths) are read from the signed manifest itself
            verifying.Config().use_elliptic_key_verifier(public_key=self.public_key).verify(
                self.model_dir, self.signature)
        except Exception as exc:  # noqa: BLE001 - ValueError on a mismatch, others on a bad bundle or key
            text = str(exc).strip().replace("\n", " ")
            return SignatureCheck(False, f"OpenSSF model signature {self.signature} does not verify "
                                         f"{self.model_dir}: {type(exc).__name__}: {text[:600]}",
                                  at, time.perf_counter() - t0)
        return SignatureCheck(True, f"OpenSSF model signature {self.signature.name} verifies {self.model_dir} "
                                    f"with key {self.public_key.name}", at, time.perf_counter() - t0)
