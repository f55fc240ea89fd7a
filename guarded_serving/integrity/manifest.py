"""The deployment manifest: what was trained, hashed, pinned and (optionally) signed.

A manifest is one JSON file::

    {
      "format": "guarded-serving-manifest/1",
      "model": {"name": "breast_cancer", "version": "1"},
      "created_at": "2025-01-01T12:00:00Z",
      "tool": {"name": "guarded-serving", "version": "0.1.0"},
      "artifacts": [
        {"role": "model", "path": "model.pkl", "type": "file", "sha256": "...", "size": 1234},
        {"role": "bento_model", "path": "models/cancer/abc", "type": "directory",
         "sha256": "<tree digest>", "size": 5678,
         "files": {"model.yaml": {"sha256": "...", "size": 300}, "saved_model.pkl": {...}}}
      ],
      "profile": {"path": "profile.json", "sha256": "...", "size": 99},      # or null
      "packages": {"numpy": "1.26.4", "scikit-learn": "1.5.2"},
      "preprocessing": {"callable": "services.features:prepare", "source_sha256": "...",
                        "code_sha256": "...", "module_sha256": "...", "python": "cpython-3.11"},
      "signature": {"algorithm": "ed25519", "key_id": "...", "value": "<base64>"}   # optional
    }

Relative artifact paths resolve against the manifest's own directory (or an
explicit root), so a deployment directory can move as a whole. ``packages``
maps normalised distribution names to the versions found in the environment
that created the manifest (the training environment); the dependency checker
reads it from :attr:`Manifest.packages`. ``profile`` is the edge-case
reference profile, hashed like any artifact (it is also listed under
``artifacts`` with role ``profile``).

The signature covers the *canonical encoding* of everything but the
``signature`` key: UTF-8 JSON with sorted keys, no whitespace, no NaN
(:func:`canonical_bytes`). The manifest holds no floats, so the encoding is
exact across platforms.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .._version import __version__
from .errors import ManifestError
from .fingerprint import Fingerprint, fingerprint
from .hashing import FileDigest, iter_tree, sha256_file, tree_digest

__all__ = ["FORMAT", "Artifact", "Manifest", "canonical_bytes", "create_manifest", "pinned_packages"]

FORMAT = "guarded-serving-manifest/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_ROLE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def canonical_bytes(obj: Mapping[str, Any]) -> bytes:
    """The canonical encoding that is hashed and signed (``signature`` key left out)."""
    body = {k: v for k, v in obj.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class Artifact:
    """One artifact: a file, or a directory with a digest per file."""

    role: str
    path: str
    type: str  # "file" | "directory"
    sha256: str
    size: int
    files: Mapping[str, FileDigest] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "path": self.path, "type": self.type,
                             "sha256": self.sha256, "size": self.size}
        if self.files is not None:
            d["files"] = {rel: fd.to_dict() for rel, fd in sorted(self.files.items())}
        return d

    def expected_files(self) -> dict[str, FileDigest]:
        """``{display path: digest}`` of every file (the path itself for a file artifact)."""
        if self.type == "file":
            return {self.path: FileDigest(self.sha256, self.size)}
        return {f"{self.path.rstrip('/')}/{rel}": fd for rel, fd in (self.files or {}).items()}


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest. Build one with :func:`create_manifest` or :meth:`load`."""

    model_name: str
    model_version: str
    artifacts: tuple[Artifact, ...]
    packages: Mapping[str, str] = field(default_factory=dict)
    preprocessing: Fingerprint | None = None
    profile: Mapping[str, Any] | None = None
    created_at: str = ""
    tool: Mapping[str, str] = field(default_factory=lambda: {"name": "guarded-serving", "version": __version__})
    signature: Mapping[str, str] | None = None
    format: str = FORMAT
    #: Where the manifest was loaded from (not serialised).
    source: Path | None = field(default=None, compare=False)

    # -- encoding ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": self.format,
            "model": {"name": self.model_name, "version": self.model_version},
            "created_at": self.created_at,
            "tool": dict(self.tool),
            "artifacts": [a.to_dict() for a in self.artifacts],
            "profile": None if self.profile is None else dict(self.profile),
            "packages": dict(sorted(self.packages.items())),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
        }
        if self.signature is not None:
            d["signature"] = dict(self.signature)
        return d

    def canonical_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def digest(self) -> str:
        """SHA-256 of the canonical encoding: one hash naming this exact deployment."""
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def root(self, override: str | os.PathLike[str] | None = None) -> Path:
        """Directory relative artifact paths resolve against."""
        if override is not None:
            return Path(override)
        return self.source.parent if self.source is not None else Path.cwd()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest as indented JSON (atomically: temp file + rename)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    # -- decoding ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Manifest":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"manifest {path}: cannot read it: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"manifest {path}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, source=path.resolve())

    @classmethod
    def from_dict(cls, d: Any, *, source: Path | None = None) -> "Manifest":
        where = f"manifest {source}" if source else "manifest"

        def bad(what: str) -> ManifestError:
            return ManifestError(f"{where}: {what}")

        if not isinstance(d, dict):
            raise bad(f"expected a JSON object, got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise bad(f"format={d.get('format')!r} is not supported: expected {FORMAT!r}")
        model = d.get("model")
        if not isinstance(model, dict) or not isinstance(model.get("name"), str) \
                or not isinstance(model.get("version"), str):
            raise bad("'model' must be {\"name\": str, \"version\": str}")
        arts = d.get("artifacts")
        if not isinstance(arts, list):
            raise bad("'artifacts' must be a list")
        artifacts = []
        for i, a in enumerate(arts):
            try:
                artifacts.append(_artifact_from_dict(a))
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"artifacts[{i}] is malformed: {exc}") from None
        packages = d.get("packages") or {}
        if not isinstance(packages, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in packages.items()):
            raise bad("'packages' must map package names to version strings")
        pre = d.get("preprocessing")
        try:
            preprocessing = None if pre is None else Fingerprint.from_dict(pre)
        except (KeyError, TypeError) as exc:
            raise bad(f"'preprocessing' is malformed: {exc}") from None
        sig = d.get("signature")
        if sig is not None and (not isinstance(sig, dict) or not isinstance(sig.get("value"), str)):
            raise bad("'signature' must be {\"algorithm\", \"key_id\", \"value\"}")
        profile = d.get("profile")
        if profile is not None and (not isinstance(profile, dict) or "path" not in profile):
            raise bad("'profile' must be null or {\"path\", \"sha256\", \"size\"}")
        return cls(model_name=model["name"], model_version=model["version"], artifacts=tuple(artifacts),
                   packages=packages, preprocessing=preprocessing, profile=profile,
                   created_at=str(d.get("created_at", "")), tool=dict(d.get("tool") or {}),
                   signature=sig, format=d["format"], source=source)


def _artifact_from_dict(a: Any) -> Artifact:
    if not isinstance(a, dict):
        raise TypeError(f"expected an object, got {type(a).__name__}")
    kind = a["type"]
    if kind not in ("file", "directory"):
        raise ValueError(f"type={kind!r}: expected 'file' or 'directory'")
    if not isinstance(a["path"], str) or not a["path"]:
        raise ValueError("path must be a non-empty string")
    if not _HEX64.match(str(a["sha256"])):
        raise ValueError(f"sha256={a['sha256']!r} is not 64 lowercase hex digits")
    files = None
    if kind == "directory":
        files = {}
        for rel, fd in a["files"].items():
            if not _HEX64.match(str(fd["sha256"])):
                raise ValueError(f"files[{rel!r}].sha256 is not 64 lowercase hex digits")
            files[rel] = FileDigest(fd["sha256"], int(fd["size"]))
    return Artifact(role=str(a.get("role", "artifact")), path=a["path"], type=kind, sha256=a["sha256"],
                    size=int(a["size"]), files=files)


# -- creation ---------------------------------------------------------------------

def hash_artifact(path: Path, *, role: str, stored_path: str) -> Artifact:
    """Hash a file or a whole directory into an :class:`Artifact`."""
    if not _ROLE.match(role):
        raise ValueError(f"role={role!r} is invalid: expected 1-64 of letters, digits, '_', '.', '-'")
    if path.is_dir():
        files = {rel: sha256_file(p) for rel, p in iter_tree(path)}
        return Artifact(role=role, path=stored_path, type="directory", sha256=tree_digest(files),
                        size=sum(f.size for f in files.values()), files=files)
    if not path.exists():
        raise FileNotFoundError(f"artifact {path} does not exist")
    d = sha256_file(path)
    return Artifact(role=role, path=stored_path, type="file", sha256=d.sha256, size=d.size)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_packages(names: Iterable[str]) -> dict[str, str]:
    """``{normalised name: version}`` from this environment; ``"name==1.2"`` pins explicitly."""
    out: dict[str, str] = {}
    for spec in names:
        if "==" in spec:
            name, version = (s.strip() for s in spec.split("==", 1))
            if not name or not version:
                raise ValueError(f"package {spec!r} is invalid: expected NAME or NAME==VERSION")
        else:
            name = spec.strip()
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                raise ValueError(f"package {name!r} is not installed in this environment "
                                 "(give NAME==VERSION to pin it explicitly)") from None
        out[_normalise(name)] = version
    return dict(sorted(out.items()))


def create_manifest(*, name: str, version: str, artifacts: Sequence[tuple[str, str | os.PathLike[str]]],
                    root: str | os.PathLike[str], packages: Iterable[str] = (),
                    preprocessing: str | None = None, profile: str | os.PathLike[str] | None = None,
                    created_at: str | None = None) -> Manifest:
    """Hash ``artifacts`` (``(role, path)`` pairs, files or directories) into a manifest.

    Paths are stored relative to ``root`` (normally the directory the manifest
    is written to), with ``..`` where needed.
    """
    root_p = Path(root).resolve()
    entries: list[Artifact] = []
    seen: set[str] = set()
    items = list(artifacts) + ([("profile", profile)] if profile is not None else [])
    for role, p in items:
        path = Path(p).resolve()
        stored = Path(os.path.relpath(path, root_p)).as_posix()
        if stored in seen:
            raise ValueError(f"artifact {p} is listed twice")
        seen.add(stored)
        entries.append(hash_artifact(path, role=role, stored_path=stored))
    prof = None
    if profile is not None:
        e = entries[-1]
        prof = {"path": e.path, "sha256": e.sha256, "size": e.size}
    if not entries:
        raise ValueError("a manifest needs at least one artifact")
    stamp = created_at or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return Manifest(model_name=name, model_version=version, artifacts=tuple(entries),
                    packages=pinned_packages(packages),
                    preprocessing=None if preprocessing is None else fingerprint(preprocessing),
                    profile=prof, created_at=stamp)
