"""Ed25519 signatures over a manifest's canonical encoding.

Whoever can replace the model file can usually rewrite the manifest next to
it; a signature made with a private key kept elsewhere (the training or
release pipeline) and checked with the public key at serving time closes that
gap::

    guarded-serving keygen --out release          # release.key (0600) + release.pub
    guarded-serving manifest create ... --key release.key
    Guard(..., manifest="manifest.json", manifest_public_key="release.pub")

Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo public). The signature
entry is ``{"algorithm": "ed25519", "key_id": <first 16 hex of the public
key's SHA-256>, "value": <base64>}``; the key id only helps tell keys apart
in messages, trust comes from the public key the verifier is given.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import IntegrityError, ManifestError
from .manifest import Manifest

__all__ = ["SignatureError", "generate_keypair", "key_id", "load_private_key", "load_public_key",
           "sign_manifest", "verify_signature"]

ALGORITHM = "ed25519"


class SignatureError(IntegrityError):
    """The manifest's signature is missing, malformed, or does not verify with the given key."""


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``OUT.key`` (private, mode 0600) and ``OUT.pub``; return their paths."""
    out = Path(out)
    priv_p, pub_p = out.with_name(out.name + ".key"), out.with_name(out.name + ".pub")
    for p in (priv_p, pub_p):
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} exists; refusing to overwrite a key (pass overwrite=True / --force)")
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(priv_p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(priv)
    os.chmod(priv_p, 0o600)
    pub_p.write_bytes(pub)
    return priv_p, pub_p


def _pem(source: Any, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ManifestError(f"{what} {source}: cannot read it: {exc}") from exc


def load_private_key(source: str | bytes | os.PathLike[str]) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM path, PEM text or bytes."""
    try:
        key = serialization.load_pem_private_key(_pem(source, "private key"), password=None)
    except ValueError as exc:
        raise ManifestError(f"private key {_label(source)} is not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ManifestError(f"private key {_label(source)} is a {type(key).__name__}, expected Ed25519")
    return key


def load_public_key(source: str | bytes | os.PathLike[str] | Ed25519PublicKey) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM path, PEM text or bytes."""
    if isinstance(source, Ed25519PublicKey):
        return source
    try:
        key = serialization.load_pem_public_key(_pem(source, "public key"))
    except ValueError as exc:
        raise ManifestError(f"public key {_label(source)} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ManifestError(f"public key {_label(source)} is a {type(key).__name__}, expected Ed25519")
    return key


def _label(source: Any) -> str:
    return "(PEM text)" if isinstance(source, bytes) or (isinstance(source, str) and "-----" in source) \
        else str(source)


def sign_manifest(manifest: Manifest, private_key: Ed25519PrivateKey | str | bytes | os.PathLike[str]) -> Manifest:
    """A copy of ``manifest`` carrying an Ed25519 signature of its canonical encoding."""
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    unsigned = dataclasses.replace(manifest, signature=None)
    value = key.sign(unsigned.canonical_bytes())
    sig = {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
           "value": base64.b64encode(value).decode("ascii")}
    return dataclasses.replace(manifest, signature=sig)


def verify_signature(manifest: Manifest, public_key: Any) -> str:
    """Check the signature with ``public_key``; return the key id, raise :class:`SignatureError` otherwise."""
    key = load_public_key(public_key)
    where = f"manifest {manifest.source}" if manifest.source else "manifest"
    sig = manifest.signature
    if not sig:
        raise SignatureError(f"{where} is not signed, but a public key was given: a signed manifest is required")
    if sig.get("algorithm") != ALGORITHM:
        raise SignatureError(f"{where}: signature algorithm {sig.get('algorithm')!r} is not supported "
                             f"(expected {ALGORITHM!r})")
    try:
        value = base64.b64decode(sig["value"], validate=True)
    except (ValueError, KeyError) as exc:
        raise SignatureError(f"{where}: signature value is not base64: {exc}") from None
    kid = key_id(key)
    try:
        key.verify(value, manifest.canonical_bytes())
    except InvalidSignature:
        hint = (f"it was signed by key {sig.get('key_id')}, not by the given key {kid}"
                if sig.get("key_id") and sig.get("key_id") != kid
                else "the manifest was changed after signing")
        raise SignatureError(f"{where}: signature does not verify with public key {kid}: {hint}") from None
    return kid
