"""Tests of guarded_serving.integrity.manifest: creating, encoding and loading manifests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

from guarded_serving.integrity.manifest import FORMAT, Manifest, canonical_bytes, create_manifest, pinned_packages
from guarded_serving.integrity.errors import ManifestError
from guarded_serving.integrity.verify import verify_manifest

from tests.integrity_helpers import ROOT, deployment


class TestCreate:
    def test_file_artifacts_packages_and_preprocessing(self, tmp_path):
        """A manifest records each file's digest and size, the package pins and the preprocessing fingerprint."""
        d = deployment(tmp_path / "d")
        m = create_manifest(name="cancer", version="7", root=d, artifacts=[("model", d / "model.pkl")],
                            packages=["numpy", "scikit_learn"], preprocessing="services.features:prepare")
        (a,) = m.artifacts
        assert (a.role, a.path, a.type, a.size) == ("model", "model.pkl", "file", (d / "model.pkl").stat().st_size)
        assert m.packages == {"numpy": metadata.version("numpy"), "scikit-learn": metadata.version("scikit-learn")}
        assert m.preprocessing is not None and m.preprocessing.callable == "services.features:prepare"
        assert m.to_dict()["format"] == FORMAT and m.created_at.endswith("Z")

    def test_roundtrip_through_json(self, tmp_path):
        """A saved manifest loads back equal, with the same digest."""
        d = deployment(tmp_path / "d")
        m = create_manifest(name="cancer", version="1", root=d, artifacts=[("data", d)],
                            profile=None, packages=["numpy==1.0"])
        m2 = Manifest.load(m.save(tmp_path / "d" / "m.json"))
        assert m2 == m and m2.digest() == m.digest()

    def test_profile_is_a_hashed_artifact_with_its_own_entry(self, tmp_path):
        """The reference profile is listed among artifacts (role 'profile') and in 'profile'."""
        d = deployment(tmp_path / "d")
        (d / "profile.json").write_text('{"features": 30}')
        m = create_manifest(name="c", version="1", root=d, artifacts=[("model", d / "model.pkl")],
                            profile=d / "profile.json")
        assert m.profile["path"] == "profile.json" and m.artifacts[-1].role == "profile"
        assert m.profile["sha256"] == m.artifacts[-1].sha256

    def test_paths_outside_root_are_relative_with_dotdot(self, tmp_path):
        """An artifact outside the root is stored with '..' and still verifies."""
        d = deployment(tmp_path / "d")
        (tmp_path / "m").mkdir()
        m = create_manifest(name="c", version="1", root=tmp_path / "m", artifacts=[("model", d / "model.pkl")])
        assert m.artifacts[0].path == "../d/model.pkl"
        m.save(tmp_path / "m" / "manifest.json")
        assert verify_manifest(Manifest.load(tmp_path / "m" / "manifest.json")).ok

    def test_uninstalled_package_is_a_clear_error(self):
        """Pinning a package that is not installed says so and how to pin it explicitly."""
        with pytest.raises(ValueError, match="not installed.*NAME==VERSION"):
            pinned_packages(["gs-no-such-package-xyz"])

    def test_missing_artifact_and_no_artifacts_are_errors(self, tmp_path):
        """A missing artifact path, or none at all, cannot make a manifest."""
        with pytest.raises(FileNotFoundError):
            create_manifest(name="c", version="1", root=tmp_path, artifacts=[("m", tmp_path / "nope")])
        with pytest.raises(ValueError, match="at least one artifact"):
            create_manifest(name="c", version="1", root=tmp_path, artifacts=[])

    @pytest.mark.integration
    def test_bentoml_model_store_entry(self, tmp_path):
        """A real BentoML model store entry is hashed as a directory, file by file (saved by a real
        ``bentoml`` process: slow, hence integration)."""
        home = tmp_path / "bentoml"
        code = textwrap.dedent("""
            import pickle, bentoml
            m = pickle.load(open(%r, "rb"))
            tag = bentoml.picklable_model.save_model("cancer", m).tag
            print(bentoml.models.get(tag).path)
        """) % str(deployment(tmp_path / "d") / "model.pkl")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env={"BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                "BENTOML_DO_NOT_TRACK": "true"})
        assert r.returncode == 0, r.stderr
        entry = r.stdout.strip().splitlines()[-1]
        m = create_manifest(name="c", version="1", root=home, artifacts=[("bento_model", entry)])
        (a,) = m.artifacts
        assert a.type == "directory" and "model.yaml" in a.files and "saved_model.pkl" in a.files
        m.save(home / "manifest.json")
        assert verify_manifest(Manifest.load(home / "manifest.json")).ok


class TestLoad:
    def test_canonical_encoding_ignores_key_order_and_signature(self):
        """The signed bytes are the same whatever the key order and with or without a signature."""
        assert canonical_bytes({"b": 1, "a": [1, 2]}) == canonical_bytes({"a": [1, 2], "b": 1, "signature": {}})

    @pytest.mark.parametrize("edit, match", [
        (lambda d: d.update(format="other/9"), "format='other/9' is not supported"),
        (lambda d: d.update(model="x"), "'model' must be"),
        (lambda d: d["artifacts"][0].update(sha256="zz"), r"artifacts\[0\] is malformed"),
        (lambda d: d.update(packages={"numpy": 1}), "'packages' must map"),
    ])
    def test_malformed_manifests_name_the_problem(self, tmp_path, edit, match):
        """A malformed manifest raises ManifestError naming the file and the field."""
        d = deployment(tmp_path / "d")
        data = json.loads((d / "manifest.json").read_text())
        edit(data)
        (d / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(ManifestError, match=match):
            Manifest.load(d / "manifest.json")

    def test_not_json_and_missing_file(self, tmp_path):
        """A file that is not JSON, or absent, is a ManifestError naming it."""
        (tmp_path / "m.json").write_text("{nope")
        with pytest.raises(ManifestError, match="not valid JSON"):
            Manifest.load(tmp_path / "m.json")
        with pytest.raises(ManifestError, match="cannot read"):
            Manifest.load(tmp_path / "absent.json")
