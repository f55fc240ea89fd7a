"""``guarded-serving manifest create|verify`` and ``guarded-serving keygen``.

::

    guarded-serving keygen --out release                     # release.key + release.pub
    guarded-serving manifest create --name breast_cancer --version 1 \\
        --artifact model=services/artifacts/model.pkl --artifact services/artifacts/reference.npz \\
        --package scikit-learn --package numpy --preprocessing services.features:prepare \\
        --key release.key --out services/artifacts/manifest.json
    guarded-serving manifest verify services/artifacts/manifest.json --public-key release.pub

``verify`` prints every file with its expected and found digest and exits 1
on any difference (2 when the manifest itself cannot be read). The current
directory is put on ``sys.path`` (as ``python -m`` does) so that the
preprocessing callable imports from the project.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["add_subparser"]

_ROLE_PREFIX = re.compile(r"^([A-Za-z0-9_.\-]{1,64})=(.+)$")


def add_subparser(subparsers: Any) -> None:
    """Register ``manifest`` (create, verify) and ``keygen``."""
    kg = subparsers.add_parser("keygen", help="create an Ed25519 key pair for signing manifests",
                               description="Write OUT.key (private, mode 0600) and OUT.pub (public), PEM.")
    kg.add_argument("--out", required=True, help="path prefix of the key files")
    kg.add_argument("--force", action="store_true", help="overwrite existing key files")
    kg.set_defaults(func=_keygen)

    man = subparsers.add_parser("manifest", help="create or verify a deployment manifest")
    msub = man.add_subparsers(title="manifest commands", metavar="ACTION")
    man.set_defaults(func=lambda args: (man.print_help(sys.stderr), 2)[1])

    c = msub.add_parser("create", help="hash artifacts, pin packages, fingerprint preprocessing",
                        description="Write a manifest (JSON) describing a deployment.")
    c.add_argument("--name", required=True, help="model name")
    c.add_argument("--version", required=True, help="model version")
    c.add_argument("--artifact", action="append", default=[], metavar="[ROLE=]PATH", required=True,
                   help="a file or directory (e.g. a BentoML model store entry); repeatable; "
                        "ROLE defaults to 'artifact'")
    c.add_argument("--profile", metavar="PATH", help="the edge-case reference profile (hashed, role 'profile')")
    c.add_argument("--package", action="append", default=[], metavar="NAME[==VERSION]",
                   help="pin a package at its version in this environment; repeatable")
    c.add_argument("--preprocessing", metavar="MODULE:FUNCTION", help="preprocessing callable to fingerprint")
    c.add_argument("--key", metavar="PRIVATE_KEY", help="sign with this Ed25519 private key (PEM)")
    c.add_argument("--root", help="directory artifact paths are stored relative to (default: that of --out)")
    c.add_argument("--out", required=True, help="where to write the manifest")
    c.set_defaults(func=_create)

    v = msub.add_parser("verify", help="compare a deployment with its manifest, file by file",
                        description="Exit 0 when everything matches, 1 on any difference, 2 when the "
                                    "manifest (or key) cannot be read.")
    v.add_argument("manifest")
    v.add_argument("--public-key", metavar="PUBLIC_KEY", help="require a signature valid for this key (PEM)")
    v.add_argument("--root", help="directory relative artifact paths resolve against (default: the manifest's)")
    v.add_argument("--no-packages", action="store_true", help="do not compare package versions")
    v.add_argument("--no-preprocessing", action="store_true", help="do not fingerprint the preprocessing code")
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_verify)


def _cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _keygen(args: argparse.Namespace) -> int:
    from .signing import generate_keypair

    try:
        priv, pub = generate_keypair(args.out, overwrite=args.force)
    except (FileExistsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"private key: {priv} (keep it out of the deployment)\npublic key:  {pub}")
    return 0


def _create(args: argparse.Namespace) -> int:
    from .errors import ManifestError
    from .manifest import create_manifest
    from .signing import sign_manifest

    _cwd_on_path()
    arts = []
    for spec in args.artifact:
        m = _ROLE_PREFIX.match(spec)
        role, path = (m.group(1), m.group(2)) if m and not Path(spec).exists() else ("artifact", spec)
        arts.append((role, path))
    out = Path(args.out)
    try:
        man = create_manifest(name=args.name, version=args.version, artifacts=arts,
                              root=args.root or out.resolve().parent, packages=args.package,
                              preprocessing=args.preprocessing, profile=args.profile)
        if args.key:
            man = sign_manifest(man, args.key)
    except (ValueError, OSError, ManifestError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    man.save(out)
    n = sum(len(a.expected_files()) for a in man.artifacts)
    print(f"wrote {out}: model {man.model_name} {man.model_version}, {len(man.artifacts)} artifacts "
          f"({n} files), {len(man.packages)} packages, "
          f"preprocessing {'fingerprinted' if man.preprocessing else 'none'}, "
          f"{'signed (key ' + man.signature['key_id'] + ')' if man.signature else 'unsigned'}; "
          f"digest {man.digest()}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from .errors import IntegrityError, ManifestError
    from .manifest import Manifest
    from .signing import verify_signature
    from .verify import ArtifactVerifier, verify_preprocessing

    _cwd_on_path()
    try:
        man = Manifest.load(args.manifest)
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = 0
    lines: list[str] = []
    result: dict[str, Any] = {"manifest": str(man.source), "digest": man.digest(),
                              "model": {"name": man.model_name, "version": man.model_version}}
    if args.public_key:
        try:
            kid = verify_signature(man, args.public_key)
            lines.append(f"SIGNATURE  ok (key {kid})")
            result["signature"] = {"ok": True, "key_id": kid}
        except IntegrityError as exc:
            failures += 1
            lines.append(f"SIGNATURE  FAILED: {exc}")
            result["signature"] = {"ok": False, "error": str(exc)}
        except ManifestError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        lines.append("SIGNATURE  not checked (no --public-key)" + ("; the manifest is signed" if man.signature else ""))
    rep = ArtifactVerifier(man, args.root).verify(full=True)
    for path, d in rep.matched:
        lines.append(f"OK         {path}\n           sha256 {d.sha256} ({d.size} bytes)")
    for f in rep.findings:
        failures += 1
        lines.append(f"{f.problem.upper():<10} {f.path}\n           expected {_fmt(f.expected)}\n"
                     f"           found    {_fmt(f.found)}")
    result["files"] = {"matched": [{"path": p, **d.to_dict()} for p, d in rep.matched],
                       "findings": [f.to_dict() for f in rep.findings]}
    if man.preprocessing is not None and not args.no_preprocessing:
        pre = verify_preprocessing(man)
        for f in pre:
            failures += 1
            lines.append(f"PREPROC    {f.path}\n           expected {f.expected}\n           found    {f.found}")
        if not pre:
            lines.append(f"OK         preprocessing {man.preprocessing.callable}")
        result["preprocessing"] = [f.to_dict() for f in pre]
    if man.packages and not args.no_packages:
        pkgs = []
        for name, want in man.packages.items():
            try:
                have: str | None = metadata.version(name)
            except metadata.PackageNotFoundError:
                have = None
            ok = have == want
            failures += not ok
            pkgs.append({"name": name, "expected": want, "found": have})
            lines.append(f"{'OK' if ok else 'PACKAGE':<10} {name}: expected {want}, found "
                         f"{have or 'not installed'}")
        result["packages"] = pkgs
    result["ok"] = failures == 0
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"manifest {man.source}: model {man.model_name} {man.model_version}, digest {man.digest()}")
        print("\n".join(lines))
        print("verified: everything matches" if failures == 0 else f"FAILED: {failures} differences")
    return 0 if failures == 0 else 1


def _fmt(v: Any) -> str:
    from .hashing import FileDigest

    if isinstance(v, FileDigest):
        return f"sha256 {v.sha256} ({v.size} bytes)"
    return str(v)
