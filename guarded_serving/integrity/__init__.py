"""Deployment integrity: a signed manifest of artifact hashes, dependency pins and
the preprocessing fingerprint, verified before and while serving.

- :mod:`.hashing` -- streaming SHA-256 of files and directory trees.
- :mod:`.manifest` -- the manifest format, creation, canonical encoding.
- :mod:`.fingerprint` -- fingerprint of a ``module:function`` preprocessing callable.
- :mod:`.signing` -- Ed25519 keys, signing and verification.
- :mod:`.verify` -- file-by-file comparison of a deployment with its manifest.
- :mod:`.permissions` -- can the process read its artifacts and write its directories.
- :mod:`.component` -- :class:`IntegrityGuard`, the guard component.
- :mod:`.cli` -- ``guarded-serving manifest create|verify`` and ``keygen``.
"""

from .component import IntegrityGuard
from .errors import IntegrityError, ManifestError
from .fingerprint import Fingerprint, fingerprint
from .hashing import FileDigest, sha256_file
from .manifest import FORMAT, Artifact, Manifest, create_manifest, pinned_packages
from .permissions import PermissionProblem, check_permissions
from .signing import SignatureError, generate_keypair, load_public_key, sign_manifest, verify_signature
from .verify import ArtifactVerifier, Finding, VerificationReport, verify_manifest, verify_preprocessing

__all__ = [
    "FORMAT",
    "Artifact",
    "ArtifactVerifier",
    "FileDigest",
    "Finding",
    "Fingerprint",
    "IntegrityError",
    "IntegrityGuard",
    "Manifest",
    "ManifestError",
    "PermissionProblem",
    "SignatureError",
    "VerificationReport",
    "check_permissions",
    "create_manifest",
    "fingerprint",
    "generate_keypair",
    "load_public_key",
    "pinned_packages",
    "sha256_file",
    "sign_manifest",
    "verify_manifest",
    "verify_preprocessing",
    "verify_signature",
]
