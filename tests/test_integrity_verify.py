"""Tests of guarded_serving.integrity.verify: file-by-file comparison with the manifest."""

from __future__ import annotations

import json
import os
import shutil

from guarded_serving.integrity.hashing import sha256_file
from guarded_serving.integrity.manifest import Manifest, create_manifest
from guarded_serving.integrity.verify import ArtifactVerifier, verify_manifest, verify_preprocessing

from tests.integrity_helpers import deployment, flip_byte, trained


def _load(d):
    return Manifest.load(d / "manifest.json")


class TestFullVerification:
    def test_untouched_deployment_matches(self, tmp_path):
        """The trained artifacts match their manifest, and every file is listed as matched."""
        rep = verify_manifest(_load(deployment(tmp_path / "d")))
        assert rep.ok and [p for p, _ in rep.matched] == ["model.pkl", "reference.npz"]

    def test_tampered_byte(self, tmp_path):
        """One flipped byte is reported as modified with both digests and equal sizes."""
        d = deployment(tmp_path / "d")
        expected = sha256_file(d / "model.pkl")
        flip_byte(d / "model.pkl")
        (f,) = verify_manifest(_load(d)).findings
        assert (f.path, f.problem, f.expected) == ("model.pkl", "modified", expected)
        assert f.found.size == expected.size and f.found.sha256 != expected.sha256
        assert expected.sha256 in str(f) and f.found.sha256 in str(f)

    def test_swapped_older_model(self, tmp_path):
        """An older model (another training run) copied over the model file is reported modified."""
        d = deployment(tmp_path / "d")
        shutil.copy(trained(1) / "model.pkl", d / "model.pkl")
        (f,) = verify_manifest(_load(d)).findings
        assert f.problem == "modified" and f.found == sha256_file(trained(1) / "model.pkl")

    def test_missing_file(self, tmp_path):
        """A deleted artifact is reported missing."""
        d = deployment(tmp_path / "d")
        (d / "reference.npz").unlink()
        (f,) = verify_manifest(_load(d)).findings
        assert (f.path, f.problem, f.found) == ("reference.npz", "missing", "absent")

    def test_extra_and_missing_files_in_a_directory_artifact(self, tmp_path):
        """In a directory artifact, an added file is extra and a removed one missing."""
        d = deployment(tmp_path / "d")
        m = create_manifest(name="c", version="1", root=tmp_path, artifacts=[("bundle", d)])
        (d / "injected.py").write_text("print('hi')")
        (d / "reference.npz").unlink()
        problems = {(f.path, f.problem) for f in verify_manifest(m, tmp_path).findings}
        assert problems == {("d/injected.py", "extra"), ("d/reference.npz", "missing")}

    def test_directory_replaced_by_file(self, tmp_path):
        """A directory artifact that became a file is a wrong-type finding."""
        d = deployment(tmp_path / "d")
        m = create_manifest(name="c", version="1", root=tmp_path, artifacts=[("bundle", d)])
        shutil.rmtree(d)
        d.write_text("not a dir")
        (f,) = verify_manifest(m, tmp_path).findings
        assert f.problem == "wrong_type"


class TestQuickRecheck:
    def test_unchanged_files_are_not_rehashed(self, tmp_path):
        """A quick pass over unchanged files hashes nothing."""
        v = ArtifactVerifier(_load(deployment(tmp_path / "d")))
        assert v.verify(full=True).files_hashed == 2
        rep = v.verify(full=False)
        assert rep.ok and rep.files_hashed == 0 and rep.files_checked == 2

    def test_replaced_in_place_with_same_size_and_mtime_is_caught(self, tmp_path):
        """A same-size file swapped in by rename with the old mtime restored is re-hashed and caught."""
        d = deployment(tmp_path / "d")
        v = ArtifactVerifier(_load(d))
        v.verify(full=True)
        st = os.stat(d / "model.pkl")
        data = bytearray((d / "model.pkl").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (d / "model.new").write_bytes(bytes(data))
        os.utime(d / "model.new", ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(d / "model.new", d / "model.pkl")
        rep = v.verify(full=False)
        assert rep.files_hashed == 1 and [f.problem for f in rep.findings] == ["modified"]

    def test_restored_file_verifies_again(self, tmp_path):
        """After the original file is put back, the quick pass is clean again."""
        d = deployment(tmp_path / "d")
        v = ArtifactVerifier(_load(d))
        v.verify(full=True)
        good = (d / "model.pkl").read_bytes()
        flip_byte(d / "model.pkl")
        assert not v.verify(full=False).ok
        (d / "model.pkl").write_bytes(good)
        assert v.verify(full=False).ok


class TestPreprocessing:
    def test_matching_preprocessing(self, tmp_path):
        """The trained manifest's preprocessing fingerprint matches the code in this tree."""
        assert verify_preprocessing(_load(deployment(tmp_path / "d"))) == []

    def test_preprocessing_differs(self, tmp_path):
        """A manifest recording other preprocessing code is reported, hash by hash."""
        d = deployment(tmp_path / "d")
        data = json.loads((d / "manifest.json").read_text())
        data["preprocessing"]["source_sha256"] = "0" * 64
        (d / "manifest.json").write_text(json.dumps(data))
        (f,) = verify_preprocessing(_load(d))
        assert f.problem == "preprocessing" and "source" in f.path and "0" * 64 in f.expected

    def test_preprocessing_not_importable(self, tmp_path):
        """A preprocessing callable that cannot be imported is a finding, not a crash."""
        d = deployment(tmp_path / "d")
        data = json.loads((d / "manifest.json").read_text())
        data["preprocessing"]["callable"] = "gs_missing_mod_xyz:prepare"
        (d / "manifest.json").write_text(json.dumps(data))
        (f,) = verify_preprocessing(_load(d))
        assert "cannot import" in f.found


def test_report_summary_lists_findings(tmp_path):
    """The summary counts differences and names them."""
    d = deployment(tmp_path / "d")
    flip_byte(d / "model.pkl")
    assert verify_manifest(_load(d)).summary().startswith("1 of 2 files differ")
