"""Tests of guarded_serving.integrity.component: the guard refusing, reporting and re-checking."""

from __future__ import annotations

import json
import shutil

import pytest

from guarded_serving import ConfigError, Guard
from guarded_serving.integrity import IntegrityError, Manifest, generate_keypair, sign_manifest
from guarded_serving.integrity.hashing import sha256_file
from guarded_serving.testing import in_memory_tracer_provider, wait_until

from tests.integrity_helpers import deployment, flip_byte, run_unprivileged, shared_tmpdir, trained, unprivileged


def _guard(d, **kw):
    kw.setdefault("integrity_check_interval_s", 0)
    return Guard(name="cancer", version="1", manifest=str(d / "manifest.json"), **kw)


_wait = wait_until


class TestStartup:
    def test_good_deployment_is_ready_with_digest_in_health(self, tmp_path):
        """Against matching artifacts the guard is ready and health shows the verified digest and version."""
        d = deployment(tmp_path / "d")
        g = _guard(d)
        h = g.health()
        assert h["ready"]
        art = h["checks"]["integrity.artifacts"]
        assert art["status"] == "ok"
        assert art["details"]["digest"] == Manifest.load(d / "manifest.json").digest()
        assert art["details"]["manifest_version"] == "1"
        assert {h["checks"][k]["status"] for k in ("integrity.manifest", "integrity.preprocessing",
                                                   "integrity.permissions")} == {"ok"}

    def test_tampered_artifact_refuses_naming_file_and_digests(self, tmp_path):
        """A flipped byte makes the guard refuse to build, naming the file and both digests."""
        d = deployment(tmp_path / "d")
        expected = sha256_file(d / "model.pkl").sha256
        flip_byte(d / "model.pkl")
        found = sha256_file(d / "model.pkl").sha256
        with pytest.raises(IntegrityError) as ei:
            _guard(d)
        msg = str(ei.value)
        assert "model.pkl: modified" in msg and expected in msg and found in msg
        assert [f.path for f in ei.value.findings] == ["model.pkl"]

    def test_not_ready_policy_starts_but_is_not_ready(self, tmp_path):
        """Under integrity_policy='not_ready' a mismatch leaves the service up but not ready."""
        d = deployment(tmp_path / "d")
        shutil.copy(trained(1) / "model.pkl", d / "model.pkl")
        g = _guard(d, integrity_policy="not_ready")
        h = g.health()
        assert not h["ready"] and h["checks"]["integrity.artifacts"]["status"] == "failing"
        assert h["checks"]["integrity.artifacts"]["details"]["mismatches"][0]["path"] == "model.pkl"

    def test_wrong_key_refuses(self, tmp_path):
        """A manifest signed by another key than the one configured is refused."""
        d = deployment(tmp_path / "d")
        a_key, _ = generate_keypair(tmp_path / "a")
        _, b_pub = generate_keypair(tmp_path / "b")
        sign_manifest(Manifest.load(d / "manifest.json"), a_key).save(d / "manifest.json")
        with pytest.raises(IntegrityError, match="does not verify"):
            _guard(d, manifest_public_key=str(b_pub))

    def test_right_key_verifies(self, tmp_path):
        """A manifest signed by the configured key is accepted and health says so."""
        d = deployment(tmp_path / "d")
        key, pub = generate_keypair(tmp_path / "a")
        sign_manifest(Manifest.load(d / "manifest.json"), key).save(d / "manifest.json")
        g = _guard(d, manifest_public_key=str(pub))
        assert "signature verified" in g.health()["checks"]["integrity.manifest"]["reason"]

    def test_manifest_edited_to_match_tampered_model_fails_signature(self, tmp_path):
        """Swapping the model and rewriting its recorded hash is caught by the signature."""
        d = deployment(tmp_path / "d")
        key, pub = generate_keypair(tmp_path / "a")
        sign_manifest(Manifest.load(d / "manifest.json"), key).save(d / "manifest.json")
        shutil.copy(trained(1) / "model.pkl", d / "model.pkl")
        data = json.loads((d / "manifest.json").read_text())
        new = sha256_file(d / "model.pkl")
        data["artifacts"][0].update(sha256=new.sha256, size=new.size)
        (d / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(IntegrityError, match="changed after signing"):
            _guard(d, manifest_public_key=str(pub))

    def test_preprocessing_mismatch_refuses(self, tmp_path):
        """A manifest whose preprocessing fingerprint differs from the serving code is refused."""
        d = deployment(tmp_path / "d")
        data = json.loads((d / "manifest.json").read_text())
        data["preprocessing"]["module_sha256"] = "1" * 64
        (d / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(IntegrityError, match="services.features:prepare \\(module file\\): preprocessing"):
            _guard(d)

    def test_missing_manifest_refuses(self, tmp_path):
        """A manifest path that does not exist is refused with its path."""
        with pytest.raises(IntegrityError, match="cannot read it"):
            Guard(name="c", manifest=str(tmp_path / "nope.json"))

    @pytest.mark.parametrize("field, value", [("integrity_policy", "warn"), ("integrity_check_interval_s", -1),
                                              ("writable_dirs", "logs"), ("manifest", 3)])
    def test_bad_config_names_field(self, field, value):
        """Invalid integrity settings raise ConfigError naming the field."""
        with pytest.raises(ConfigError, match=field):
            Guard(name="c", **{field: value})


class TestServing:
    def test_span_attributes_carry_digest_and_version(self, tmp_path):
        """Anomalous spans carry the verified manifest digest, its model version and verified=true; with
        span_detail="full" every span does (compact ordinary spans leave the deployment's constants out)."""
        d = deployment(tmp_path / "d")
        digest = Manifest.load(d / "manifest.json").digest()
        for detail in ("compact", "full"):
            provider, exporter = in_memory_tracer_provider()
            g2 = Guard(_guard(d).config, tracer_provider=provider, span_detail=detail)

            @g2
            def predict(inputs):
                if inputs[0][0] < 0:
                    raise RuntimeError("model failure")
                return [0]

            predict([[1.0, 2.0]])
            with pytest.raises(RuntimeError):
                predict([[-1.0, 2.0]])
            ordinary, failed = exporter.get_finished_spans()
            carrying = [failed, ordinary] if detail == "full" else [failed]
            for s in carrying:
                assert s.attributes["guard.artifact.digest"] == digest
                assert s.attributes["guard.artifact.manifest_version"] == "1"
                assert s.attributes["guard.artifact.verified"] is True
            if detail == "compact":
                assert "guard.artifact.digest" not in ordinary.attributes
                assert "guard.outcome" not in ordinary.attributes  # "ok" by definition on an ordinary call
                assert ordinary.attributes["guard.latency_ms"] > 0
            else:
                assert ordinary.attributes["guard.outcome"] == "ok"

    def test_recheck_catches_in_place_replacement_and_recovery(self, tmp_path):
        """A re-check after an in-place replacement fails the check; restoring the file clears it."""
        d = deployment(tmp_path / "d")
        g = _guard(d)
        comp = g.component("integrity")
        good = (d / "model.pkl").read_bytes()
        shutil.copy(trained(1) / "model.pkl", d / "model.pkl")
        rep = comp.recheck()
        assert not rep.ok and not g.is_ready()
        assert comp.span_attributes()["guard.artifact.verified"] is False
        (d / "model.pkl").write_bytes(good)
        assert comp.recheck().ok and g.is_ready()

    def test_background_thread_catches_replacement(self, tmp_path):
        """The background re-check, on its own, notices a replaced artifact and stops when asked."""
        d = deployment(tmp_path / "d")
        g = _guard(d, integrity_check_interval_s=0.1).start()
        try:
            assert g.is_ready()
            shutil.copy(trained(1) / "model.pkl", d / "model.pkl")
            assert _wait(lambda: not g.is_ready()), "background check did not notice within 15 s"
            assert g.stats()["integrity"]["mismatches"] == 1
        finally:
            g.stop()
        assert g.component("integrity")._worker is None

    def test_permissions_only_without_manifest(self, tmp_path):
        """With writable_dirs and no manifest the permission check runs, and the missing manifest is
        said out loud (unavailable), not silent."""
        g = Guard(name="c", writable_dirs=(str(tmp_path / "state"),))
        checks = g.health()["checks"]
        assert [k for k in checks if k.startswith("integrity")] == ["integrity.manifest", "integrity.permissions"]
        assert checks["integrity.manifest"]["status"] == "unavailable"


GUARD_AS_CHILD = """
import json
from guarded_serving import Guard
from guarded_serving.integrity import IntegrityError
try:
    Guard(name="c", manifest={manifest!r}, writable_dirs=({state!r},), integrity_check_interval_s=0)
    print(json.dumps({{"error": None}}))
except IntegrityError as exc:
    print(json.dumps({{"error": str(exc), "perm": [p.to_dict() for p in exc.permission_problems]}}))
"""


def test_unreadable_artifact_and_unwritable_state_dir_refuse_unprivileged():
    """Run unprivileged, the guard refuses to start, naming the unreadable model and the unwritable state dir."""
    prefix, how = unprivileged()
    if prefix is None:
        pytest.skip(how)
    tmp = shared_tmpdir()
    try:
        d = deployment(tmp / "d")
        d.chmod(0o755)
        for p in d.iterdir():
            p.chmod(0o644)
        (d / "model.pkl").chmod(0o000)
        (tmp / "state").mkdir()
        (tmp / "state").chmod(0o555)
        out = run_unprivileged(GUARD_AS_CHILD.format(manifest=str(d / "manifest.json"), state=str(tmp / "state")),
                               tmp)
        assert {(p["path"], p["permission"]) for p in out["perm"]} == {
            (str(d / "model.pkl"), "read"), (str(tmp / "state"), "write")}
        assert f"cannot read {d / 'model.pkl'}" in out["error"] and f"cannot write {tmp / 'state'}" in out["error"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
