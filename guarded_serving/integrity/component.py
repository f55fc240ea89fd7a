"""The integrity component: verify the deployment before serving and keep checking while serving.

At construction (``Guard.__init__`` -> ``bind``, i.e. when the service module
is imported, before ``bentoml serve`` accepts a request) it:

1. loads the manifest and, when ``manifest_public_key`` is given, verifies its
   Ed25519 signature (an unsigned manifest is then refused too);
2. checks it can read every artifact and write every ``writable_dirs`` entry;
3. hashes every artifact and compares with the manifest;
4. fingerprints the preprocessing callable and compares.

Any failure raises :class:`~guarded_serving.integrity.errors.IntegrityError`
under ``integrity_policy="refuse"`` (the default; the message names each file
with the expected and the found digest), or makes the matching
``integrity.*`` check ``failing`` (service not ready) under ``"not_ready"``.

While serving, a background worker re-verifies every
``integrity_check_interval_s`` seconds: it stats every file and re-hashes only
those whose size, mtime, ctime or inode changed, and re-lists directory
artifacts. A file replaced in place turns ``integrity.artifacts`` failing (not
ready); restoring it turns it ok again.

Every span carries ``guard.artifact.digest`` (the manifest's digest),
``guard.artifact.manifest_version`` (the model version it records) and
``guard.artifact.verified``; the checks' details repeat them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .. import health as H
from ..component import Component
from ..keys import PINNED_PACKAGES
from ..telemetry import attributes as A
from ..worker import PeriodicWorker
from .errors import IntegrityError, ManifestError
from .manifest import Manifest
from .ossf import ModelSignature, SignatureCheck
from .permissions import PermissionProblem, check_permissions
from .signing import load_public_key, verify_signature
from .verify import ArtifactVerifier, Finding, VerificationReport, verify_preprocessing

if TYPE_CHECKING:
    from ..context import GuardContext

__all__ = ["IntegrityGuard", "POLICIES"]

POLICIES = ("refuse", "not_ready")
_log = logging.getLogger("guarded_serving.integrity")


class IntegrityGuard(Component):
    """Deployment integrity: manifest, signature, permissions, artifact hashes, preprocessing.

    Parameters
    ----------
    manifest : path or Manifest, optional
        The deployment manifest. ``None`` checks permissions only.
    public_key : path, PEM str/bytes, optional
        Ed25519 public key; when given the manifest must carry a valid signature.
    root : path, optional
        Directory relative artifact paths resolve against (default: the manifest's).
    policy : {"refuse", "not_ready"}, default="refuse"
        What a failure at startup does: raise, or mark the service not ready.
    interval_s : float, default=30
        Seconds between background re-checks; 0 disables them.
    writable_dirs : iterable of path
        Directories the service must be able to write (state, logs).
    require_signature : bool, default=False
        An unsigned manifest, or a signature without a public key to check it, is a failure
        (refused at startup under ``refuse``). Without it such a manifest is ``degraded``.
    model_signature : ModelSignature, optional
        An OpenSSF model signature (:mod:`.ossf`) verified at startup and in the background.
    """

    name = "integrity"
    span_scope = "anomalous"  # the deployment's digest: on anomalous spans (all spans with span_detail="full")
    provides = (PINNED_PACKAGES,)

    def __init__(self, *, manifest: str | os.PathLike[str] | Manifest | None = None,
                 public_key: Any = None, root: str | os.PathLike[str] | None = None,
                 policy: str = "refuse", interval_s: float = 30.0,
                 writable_dirs: Iterable[str | os.PathLike[str]] = (), require_signature: bool = False,
                 model_signature: ModelSignature | None = None) -> None:
        self.manifest_source = manifest
        self.public_key = public_key
        self.root = root
        self.policy = policy
        self.interval_s = interval_s
        self.writable_dirs = tuple(Path(p) for p in writable_dirs)
        self.require_signature = require_signature
        self.model_signature = model_signature
        self._ossf: SignatureCheck | None = None
        self._signature_status = H.UNAVAILABLE
        self.manifest: Manifest | None = None
        self.verifier: ArtifactVerifier | None = None
        self._manifest_problem: str | None = None
        self._signature_note = "not checked"
        self._permission_problems: list[PermissionProblem] = []
        self._preprocessing: list[Finding] = []
        self._report: VerificationReport | None = None
        self._checks_run = 0
        self._attrs: Mapping[str, Any] = {}
        self._worker: PeriodicWorker | None = None

    # -- startup ----------------------------------------------------------------
    def bind(self, context: "GuardContext | None" = None) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"integrity_policy={self.policy!r} is invalid: expected one of {POLICIES}")
        if self.manifest_source is not None:
            self._load_manifest()
        reads = self.verifier.paths() if self.verifier is not None else []
        self._permission_problems = check_permissions(read=reads, write=self.writable_dirs)
        if self.verifier is not None:
            self._report = self.verifier.verify(full=True)
            self._checks_run = 1
            self._preprocessing = verify_preprocessing(self.verifier.manifest)
        if self.model_signature is not None:
            self._ossf = self.model_signature.verify()
        self._refresh_attrs()
        problems = self._problems()
        if problems:
            text = self._failure_text(problems)
            if self.policy == "refuse":
                raise IntegrityError(text, findings=self._all_findings(),
                                     permission_problems=self._permission_problems)
            _log.error("%s (integrity_policy='not_ready': serving stays not ready)", text)

    def resources(self) -> Mapping[Any, Any]:
        """The manifest's package pins (``PINNED_PACKAGES``) for the dependency checks."""
        if self.manifest is None or not self.manifest.packages:
            return {}
        return {PINNED_PACKAGES: dict(self.manifest.packages)}

    def _load_manifest(self) -> None:
        src = self.manifest_source
        try:
            m = src if isinstance(src, Manifest) else Manifest.load(src)  # type: ignore[arg-type]
        except ManifestError as exc:
            self._manifest_problem = str(exc)
            return
        if self.public_key is not None:
            try:
                kid = verify_signature(m, load_public_key(self.public_key))
                self._signature_note = f"signature verified with key {kid}"
                self._signature_status = H.OK
            except (IntegrityError, ManifestError) as exc:
                self._manifest_problem = str(exc)
                self._signature_note = "signature does not verify"
                self._signature_status = H.FAILING
        else:
            self._signature_note = (
                "signed, but no public key is configured to check the signature: an edited manifest "
                "(digests changed to match tampered files) passes; set manifest_public_key" if m.signature
                else "not signed: anyone who can write the manifest can make tampered files pass; sign it "
                     "(guarded-serving manifest create --key) and set manifest_public_key")
            self._signature_status = H.FAILING if self.require_signature else H.DEGRADED
            if self.require_signature:
                self._manifest_problem = f"require_signature is set but the manifest is {self._signature_note}"
        self.manifest = m
        self.verifier = ArtifactVerifier(m, self.root)

    def _all_findings(self) -> list[Finding]:
        return [*(self._report.findings if self._report else []), *self._preprocessing]

    def _problems(self) -> list[str]:
        out = []
        if self._manifest_problem:
            out.append(self._manifest_problem)
        if self._ossf is not None and not self._ossf.ok:
            out.append(self._ossf.reason)
        out.extend(str(p) for p in self._permission_problems)
        out.extend(str(f) for f in self._all_findings())
        return out

    def _failure_text(self, problems: list[str]) -> str:
        m = self.manifest
        head = (f"deployment does not match manifest {m.source or ''} (model {m.model_name} {m.model_version})"
                if m is not None else "deployment integrity check failed")
        return head + ":\n  " + "\n  ".join(problems)

    def _refresh_attrs(self) -> None:
        if self.manifest is None:
            self._attrs = {}
            return
        verified = (not self._manifest_problem and self._report is not None and self._report.ok
                    and not self._preprocessing and (self._ossf is None or self._ossf.ok))
        self._attrs = {A.ARTIFACT_DIGEST: self.verifier.digest,  # type: ignore[union-attr]
                       A.ARTIFACT_MANIFEST_VERSION: self.manifest.model_version,
                       A.ARTIFACT_VERIFIED: verified}

    # -- background re-check ----------------------------------------------------------
    def start(self) -> None:
        if (self.verifier is None and self.model_signature is None) or self.interval_s <= 0 or (
                self._worker is not None and self._worker.running):
            return
        self._worker = PeriodicWorker("integrity", self.recheck, self.interval_s, join_timeout_s=10, weak=True).start()

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def recheck(self, *, full: bool = False) -> VerificationReport | None:
        """One re-verification (what the background thread runs): the manifest's files (stat
        first, re-hash on change) and the OpenSSF model signature (a full pass); returns the
        manifest's report (None without a manifest)."""
        if self.model_signature is not None:
            was = self._ossf is None or self._ossf.ok
            self._ossf = self.model_signature.verify()
            if was and not self._ossf.ok:
                _log.error("%s", self._ossf.reason)
        if self.verifier is None:
            if self.model_signature is None:
                raise RuntimeError("no manifest configured")
            return None
        was_ok = self._report is None or self._report.ok
        rep = self.verifier.verify(full=full)
        self._report = rep
        self._checks_run += 1
        self._refresh_attrs()
        if was_ok and not rep.ok:
            _log.error("artifacts changed while serving: %s", "; ".join(str(f) for f in rep.findings))
        elif not was_ok and rep.ok:
            _log.warning("artifacts match the manifest again")
        return rep

    # -- loading artifacts ---------------------------------------------------------------
    def open_artifact(self, path: str | os.PathLike[str]) -> bytes:
        """The bytes of the artifact at ``path``, read once and checked against the manifest.

        Load the model from these bytes (``pickle.loads(guard.open_artifact(p))``): what is
        deserialised is exactly what was verified. A file that does not match, that the
        manifest does not list, or a manifest that failed (signature, ``require_signature``)
        raises :class:`IntegrityError` under every policy, so a tampered pickle never runs.
        Without a manifest the file is read as is (health says ``integrity.manifest``
        unavailable).
        """
        if self._manifest_problem:
            raise IntegrityError(f"refusing to load {path}: the manifest failed: {self._manifest_problem}")
        if self._ossf is not None and not self._ossf.ok:
            raise IntegrityError(f"refusing to load {path}: {self._ossf.reason}")
        if self.verifier is None:
            with open(path, "rb") as fh:
                return fh.read()
        return self.verifier.read_verified(path)

    # -- read side ------------------------------------------------------------------
    def span_attributes(self) -> Mapping[str, Any]:
        return self._attrs

    def checks(self) -> Iterable[H.CheckResult]:
        out: list[H.CheckResult] = []
        m = self.manifest
        if self.manifest_source is None:
            out.append(H.CheckResult(
                "integrity.manifest", H.UNAVAILABLE,
                "no deployment manifest configured: the model files, their dependencies and the "
                "preprocessing code are not verified" + ("" if self.model_signature is None else
                                                          " (an OpenSSF model signature is checked)"),
                affects_readiness=False))
        elif self._manifest_problem:
            out.append(H.CheckResult("integrity.manifest", H.FAILING, self._manifest_problem,
                                     {"manifest": str(self.manifest_source)}))
        else:
            out.append(H.CheckResult("integrity.manifest", H.OK, f"manifest {m.source} loaded; "  # type: ignore[union-attr]
                                     f"{self._signature_note}", self._manifest_details()))
        if m is not None and self._signature_status != H.OK:
            out.append(H.CheckResult(
                "integrity.signature", self._signature_status,
                f"manifest {m.source or ''} is {self._signature_note}" if self._signature_status != H.FAILING
                or self.public_key is None else f"manifest signature: {self._manifest_problem}",
                {"signed": m.signature is not None, "public_key": self.public_key is not None,
                 "require_signature": self.require_signature}))
        elif m is not None:
            out.append(H.CheckResult("integrity.signature", H.OK, self._signature_note,
                                     {"signed": True, "public_key": True}))
        if self._ossf is not None:
            sig = self.model_signature
            out.append(H.CheckResult("integrity.model_signature", H.OK if self._ossf.ok else H.FAILING,
                                     self._ossf.reason,
                                     {"model_dir": str(sig.model_dir), "signature": str(sig.signature),  # type: ignore[union-attr]
                                      "last_check_unix": self._ossf.checked_at,
                                      "last_check_s": round(self._ossf.duration_s, 4)}))
        if self._report is not None:
            rep = self._report
            details = {**self._manifest_details(), "files_checked": rep.files_checked,
                       "checks_run": self._checks_run, "last_check_unix": rep.checked_at,
                       "last_check_s": round(rep.duration_s, 4), "interval_s": self.interval_s,
                       "mismatches": [f.to_dict() for f in rep.findings]}
            status = H.OK if rep.ok else H.FAILING
            out.append(H.CheckResult("integrity.artifacts", status, rep.summary(), details))
        if m is not None and m.preprocessing is not None:
            if self._preprocessing:
                out.append(H.CheckResult("integrity.preprocessing", H.FAILING,
                                         "preprocessing code differs from the manifest's: "
                                         + "; ".join(str(f) for f in self._preprocessing),
                                         {"mismatches": [f.to_dict() for f in self._preprocessing]}))
            else:
                out.append(H.CheckResult("integrity.preprocessing", H.OK,
                                         f"{m.preprocessing.callable} matches the manifest's fingerprint",
                                         m.preprocessing.to_dict()))
        if self._worker is not None:
            broken = self._worker.check("integrity.recheck", what="the background re-verification")
            if broken is not None:
                out.append(broken)
        reads = len(self.verifier.paths()) if self.verifier else 0
        if self._permission_problems:
            out.append(H.CheckResult("integrity.permissions", H.FAILING,
                                     "; ".join(str(p) for p in self._permission_problems),
                                     {"problems": [p.to_dict() for p in self._permission_problems]}))
        elif reads or self.writable_dirs:
            out.append(H.CheckResult("integrity.permissions", H.OK,
                                     f"can read {reads} artifacts and write {len(self.writable_dirs)} directories",
                                     {"writable_dirs": [str(p) for p in self.writable_dirs]}))
        return out

    def _manifest_details(self) -> dict[str, Any]:
        m = self.manifest
        if m is None:
            return {}
        return {"manifest": str(m.source) if m.source else None, "digest": self.verifier.digest,  # type: ignore[union-attr]
                "model": m.model_name, "manifest_version": m.model_version, "format": m.format,
                "signed": m.signature is not None, "created_at": m.created_at}

    def stats(self) -> Mapping[str, Any]:
        rep = self._report
        if rep is None:
            return {}
        return {"checks_run": self._checks_run, "files_checked": rep.files_checked,
                "files_hashed_last": rep.files_hashed, "bytes_hashed_last": rep.bytes_hashed,
                "mismatches": len(rep.findings), "verified": bool(self._attrs.get(A.ARTIFACT_VERIFIED)),
                "last_check_age_s": round(max(0.0, time.time() - rep.checked_at), 3)}
