"""Tests of guarded_serving.cli and the integrity commands (manifest create|verify, keygen)."""

from __future__ import annotations

import json
import subprocess
import sys

from guarded_serving.cli import main
from guarded_serving.integrity import Manifest

from tests.integrity_helpers import ROOT, deployment, flip_byte

def _create(d, out, *extra):
    return main(["manifest", "create", "--name", "cancer", "--version", "2",
                 "--artifact", f"model={d / 'model.pkl'}", "--artifact", str(d / "reference.npz"),
                 "--package", "numpy", "--preprocessing", "services.features:prepare", "--out", str(out), *extra])

class TestCreate:
    def test_create_writes_a_manifest(self, tmp_path, capsys):
        """manifest create hashes the artifacts with roles and reports the digest."""
        d = deployment(tmp_path / "d")
        assert _create(d, d / "m.json") == 0
        m = Manifest.load(d / "m.json")
        assert [(a.role, a.path) for a in m.artifacts] == [("model", "model.pkl"), ("artifact", "reference.npz")]
        assert m.model_version == "2" and "numpy" in m.packages
        assert m.digest() in capsys.readouterr().out

    def test_create_signed_then_verify_with_key(self, tmp_path, capsys):
        """keygen, create --key and verify --public-key work together."""
        d = deployment(tmp_path / "d")
        assert main(["keygen", "--out", str(tmp_path / "rel")]) == 0
        assert _create(d, d / "m.json", "--key", str(tmp_path / "rel.key")) == 0
        assert main(["manifest", "verify", str(d / "m.json"), "--public-key", str(tmp_path / "rel.pub")]) == 0
        assert "SIGNATURE  ok" in capsys.readouterr().out

    def test_missing_artifact_exits_2(self, tmp_path, capsys):
        """Creating with a missing artifact exits 2 with an error naming it."""
        assert main(["manifest", "create", "--name", "c", "--version", "1", "--artifact", str(tmp_path / "x"),
                     "--out", str(tmp_path / "m.json")]) == 2
        assert "x does not exist" in capsys.readouterr().err

class TestVerify:
    def test_clean_deployment_exits_0_listing_every_file(self, tmp_path, capsys):
        """verify exits 0 and prints each file with its digest."""
        d = deployment(tmp_path / "d")
        assert main(["manifest", "verify", str(d / "manifest.json")]) == 0
        out = capsys.readouterr().out
        assert "OK         model.pkl" in out and "OK         reference.npz" in out and "everything matches" in out

    def test_tampered_exits_1_with_expected_and_found(self, tmp_path, capsys):
        """verify exits 1 and prints the expected and found digests of the tampered file."""
        d = deployment(tmp_path / "d")
        before = Manifest.load(d / "manifest.json").artifacts[0].sha256
        flip_byte(d / "model.pkl")
        assert main(["manifest", "verify", str(d / "manifest.json")]) == 1
        out = capsys.readouterr().out
        assert "MODIFIED   model.pkl" in out and f"expected sha256 {before}" in out and "FAILED: 1 differences" in out

    def test_wrong_key_and_json_output(self, tmp_path, capsys):
        """verify with another key exits 1 and the JSON output says why."""
        d = deployment(tmp_path / "d")
        main(["keygen", "--out", str(tmp_path / "a")])
        main(["keygen", "--out", str(tmp_path / "b")])
        _create(d, d / "m.json", "--key", str(tmp_path / "a.key"))
        capsys.readouterr()
        assert main(["manifest", "verify", str(d / "m.json"), "--public-key", str(tmp_path / "b.pub"), "--json"]) == 1
        res = json.loads(capsys.readouterr().out)
        assert res["ok"] is False and "does not verify" in res["signature"]["error"]

    def test_package_version_mismatch(self, tmp_path, capsys):
        """A pinned version that differs from the installed one fails verify (unless --no-packages)."""
        d = deployment(tmp_path / "d")
        data = json.loads((d / "manifest.json").read_text())
        data["packages"]["numpy"] = "0.0.1"
        (d / "manifest.json").write_text(json.dumps(data))
        assert main(["manifest", "verify", str(d / "manifest.json")]) == 1
        assert "PACKAGE    numpy: expected 0.0.1" in capsys.readouterr().out
        assert main(["manifest", "verify", str(d / "manifest.json"), "--no-packages"]) == 0

    def test_unreadable_manifest_exits_2(self, tmp_path, capsys):
        """A manifest that is not JSON exits 2."""
        (tmp_path / "m.json").write_text("nope")
        assert main(["manifest", "verify", str(tmp_path / "m.json")]) == 2

class TestEntryPoints:
    def test_no_command_prints_help_and_exits_2(self, capsys):
        """Without a command the CLI prints help and returns 2."""
        assert main([]) == 2
        assert "manifest" in capsys.readouterr().err

    def test_python_dash_m(self, tmp_path):
        """python -m guarded_serving runs the same CLI in a fresh process."""
        d = deployment(tmp_path / "d")
        flip_byte(d / "reference.npz")
        r = subprocess.run([sys.executable, "-m", "guarded_serving", "manifest", "verify", str(d / "manifest.json")],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 1 and "MODIFIED   reference.npz" in r.stdout
