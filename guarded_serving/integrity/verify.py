"""Compare a deployment with its manifest, file by file.

:class:`ArtifactVerifier` keeps, per file, the ``stat`` key (size, mtime,
ctime, inode) seen when it last hashed it. A *full* pass hashes everything; a
*quick* pass (the background re-check) stats every file and re-hashes only
those whose key changed, and re-lists directory artifacts to catch added or
removed files. A file written during a pass is caught by the next one: the key
is taken before hashing.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError
from .fingerprint import fingerprint
from .hashing import FileDigest, StatKey, iter_tree, sha256_file, stat_key
from .manifest import Artifact, Manifest

__all__ = ["ArtifactVerifier", "Finding", "VerificationReport", "verify_manifest", "verify_preprocessing"]

MODIFIED = "modified"
MISSING = "missing"
EXTRA = "extra"
UNREADABLE = "unreadable"
WRONG_TYPE = "wrong_type"
PREPROCESSING = "preprocessing"


@dataclass(frozen=True)
class Finding:
    """One difference between the manifest and what is on disk.

    ``expected`` / ``found`` are digests (``FileDigest``), or short strings
    where there is no digest (``"absent"``, ``"not in the manifest"``, an error).
    """

    path: str
    problem: str
    expected: FileDigest | str | None
    found: FileDigest | str | None
    abs_path: str = ""

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}: expected {_fmt(self.expected)}, found {_fmt(self.found)}"

    def to_dict(self) -> dict[str, Any]:
        def enc(v: Any) -> Any:
            return v.to_dict() if isinstance(v, FileDigest) else v
        return {"path": self.path, "problem": self.problem, "expected": enc(self.expected),
                "found": enc(self.found)}


def _fmt(v: FileDigest | str | None) -> str:
    if isinstance(v, FileDigest):
        return v.short()
    return "nothing" if v is None else str(v)


@dataclass
class VerificationReport:
    manifest_digest: str
    findings: list[Finding] = field(default_factory=list)
    #: ``(path, digest)`` of every file that matched.
    matched: list[tuple[str, FileDigest]] = field(default_factory=list)
    files_checked: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    duration_s: float = 0.0
    checked_at: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.ok:
            return f"{self.files_checked} files match the manifest (digest {self.manifest_digest[:16]})"
        return f"{len(self.findings)} of {self.files_checked} files differ from the manifest: " + \
            "; ".join(str(f) for f in self.findings[:5]) + (" ..." if len(self.findings) > 5 else "")


class ArtifactVerifier:
    """Verifies a manifest's artifacts, remembering what it hashed (thread-safe)."""

    def __init__(self, manifest: Manifest, root: str | os.PathLike[str] | None = None) -> None:
        self.manifest = manifest
        self.root = manifest.root(root)
        self.digest = manifest.digest()
        self._known: dict[str, tuple[StatKey, FileDigest]] = {}
        self._lock = threading.Lock()

    def resolve(self, artifact: Artifact) -> Path:
        p = Path(artifact.path)
        return p if p.is_absolute() else self.root / p

    def paths(self) -> list[Path]:
        """Absolute paths of every artifact (files and directories)."""
        return [self.resolve(a) for a in self.manifest.artifacts]

    def expected(self, path: str | os.PathLike[str]) -> tuple[str, FileDigest] | None:
        """``(display path, digest)`` the manifest records for the file at ``path``, or None when
        ``path`` is not one of its artifacts (compared after resolving links and ``..``)."""
        target = Path(path).resolve()
        for art in self.manifest.artifacts:
            base = self.resolve(art).resolve()
            if art.type == "file":
                if base == target:
                    return art.path, FileDigest(art.sha256, art.size)
            elif target.is_relative_to(base):
                rel = target.relative_to(base).as_posix()
                fd = (art.files or {}).get(rel)
                if fd is not None:
                    return f"{art.path.rstrip('/')}/{rel}", fd
        return None

    def read_verified(self, path: str | os.PathLike[str]) -> bytes:
        """The bytes of ``path``, read once and hashed: returned only when they are the bytes the
        manifest records, so what is deserialised is what was verified (nothing can be swapped in
        between). Raises :class:`IntegrityError` otherwise, before anything is deserialised."""
        import hashlib

        exp = self.expected(path)
        if exp is None:
            raise IntegrityError(
                f"{path} is not an artifact of manifest {self.manifest.source or '(in memory)'} (artifacts resolve "
                f"against {self.root}): refusing to load a file the guard does not verify; point the manifest "
                f"(or artifact_root) at the directory the model is loaded from")
        shown, digest = exp
        with open(path, "rb") as fh:
            data = fh.read()
        found = FileDigest(hashlib.sha256(data).hexdigest(), len(data))
        if found != digest:
            finding = Finding(shown, MODIFIED, digest, found, str(path))
            raise IntegrityError(f"refusing to load {path}: {finding}", findings=[finding])
        return data

    def verify(self, *, full: bool = True) -> VerificationReport:
        """Check every artifact; ``full=False`` re-hashes only files whose stat changed."""
        with self._lock:
            t0 = time.perf_counter()
            rep = VerificationReport(self.digest, checked_at=time.time())
            for art in self.manifest.artifacts:
                base = self.resolve(art)
                if art.type == "file":
                    self._check_file(art.path, base, FileDigest(art.sha256, art.size), full, rep)
                else:
                    self._check_dir(art, base, full, rep)
            rep.duration_s = time.perf_counter() - t0
            return rep

    def _check_dir(self, art: Artifact, base: Path, full: bool, rep: VerificationReport) -> None:
        expected = art.files or {}
        shown = art.path.rstrip("/")
        if not base.exists():
            rep.findings.append(Finding(shown + "/", MISSING, f"a directory of {len(expected)} files",
                                        "absent", str(base)))
            rep.files_checked += len(expected)
            return
        if not base.is_dir():
            rep.findings.append(Finding(shown, WRONG_TYPE, "a directory", "not a directory", str(base)))
            return
        try:
            present = dict(iter_tree(base))
        except OSError as exc:
            rep.findings.append(Finding(shown + "/", UNREADABLE, "a readable directory",
                                        f"{type(exc).__name__}: {exc.strerror or exc}", str(base)))
            return
        for rel in sorted(set(expected) | set(present)):
            disp = f"{shown}/{rel}"
            if rel not in present:
                rep.files_checked += 1
                rep.findings.append(Finding(disp, MISSING, expected[rel], "absent", str(base / rel)))
            elif rel not in expected:
                found: FileDigest | str
                try:
                    found = sha256_file(present[rel])
                except OSError as exc:
                    found = f"{type(exc).__name__}: {exc.strerror or exc}"
                rep.findings.append(Finding(disp, EXTRA, "not in the manifest", found, str(present[rel])))
            else:
                self._check_file(disp, present[rel], expected[rel], full, rep)

    def _check_file(self, shown: str, path: Path, expected: FileDigest, full: bool,
                    rep: VerificationReport) -> None:
        rep.files_checked += 1
        key_s = str(path)
        try:
            key = stat_key(path)
        except FileNotFoundError:
            self._known.pop(key_s, None)
            rep.findings.append(Finding(shown, MISSING, expected, "absent", key_s))
            return
        except IsADirectoryError:
            rep.findings.append(Finding(shown, WRONG_TYPE, expected, "not a regular file", key_s))
            return
        except OSError as exc:
            rep.findings.append(Finding(shown, UNREADABLE, expected, f"{type(exc).__name__}: {exc.strerror}", key_s))
            return
        known = self._known.get(key_s)
        if not full and known is not None and known[0] == key:
            found = known[1]
        else:
            try:
                found = sha256_file(path)
            except OSError as exc:
                self._known.pop(key_s, None)
                rep.findings.append(Finding(shown, UNREADABLE, expected,
                                            f"{type(exc).__name__}: {exc.strerror or exc}", key_s))
                return
            rep.files_hashed += 1
            rep.bytes_hashed += found.size
            self._known[key_s] = (key, found)
        if found != expected:
            rep.findings.append(Finding(shown, MODIFIED, expected, found, key_s))
        else:
            rep.matched.append((shown, found))


def verify_manifest(manifest: Manifest, root: str | os.PathLike[str] | None = None) -> VerificationReport:
    """One full verification of ``manifest``'s artifacts."""
    return ArtifactVerifier(manifest, root).verify(full=True)


def verify_preprocessing(manifest: Manifest) -> list[Finding]:
    """Fingerprint the manifest's preprocessing callable in this process and compare."""
    exp = manifest.preprocessing
    if exp is None:
        return []
    try:
        got = fingerprint(exp.callable)
    except ValueError as exc:
        return [Finding(exp.callable, PREPROCESSING, "an importable callable", str(exc))]
    return [Finding(f"{exp.callable} ({what})", PREPROCESSING, f"sha256 {e}", f"sha256 {f}")
            for what, e, f in exp.differences(got)]
