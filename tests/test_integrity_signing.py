"""Tests of guarded_serving.integrity.signing: Ed25519 keys and manifest signatures."""

from __future__ import annotations

import json
import stat

import pytest

from guarded_serving.integrity.errors import ManifestError
from guarded_serving.integrity.manifest import Manifest
from guarded_serving.integrity.signing import SignatureError, generate_keypair, sign_manifest, verify_signature

from tests.integrity_helpers import deployment


@pytest.fixture
def signed(tmp_path):
    """A deployment whose manifest is signed with key 'a'; returns (dir, a.pub, b.pub)."""
    d = deployment(tmp_path / "d")
    a_key, a_pub = generate_keypair(tmp_path / "a")
    _, b_pub = generate_keypair(tmp_path / "b")
    sign_manifest(Manifest.load(d / "manifest.json"), a_key).save(d / "manifest.json")
    return d, a_pub, b_pub


class TestKeys:
    def test_keygen_writes_private_key_0600_and_refuses_overwrite(self, tmp_path):
        """keygen writes a 0600 private key and a public key, and will not overwrite them."""
        priv, pub = generate_keypair(tmp_path / "k")
        assert stat.S_IMODE(priv.stat().st_mode) == 0o600
        assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
        with pytest.raises(FileExistsError, match="refusing to overwrite"):
            generate_keypair(tmp_path / "k")

    def test_non_key_file_is_a_clear_error(self, tmp_path):
        """A public key file that is not PEM is a ManifestError naming it."""
        (tmp_path / "x.pub").write_text("hello")
        d = deployment(tmp_path / "d")
        with pytest.raises(ManifestError, match="x.pub is not a PEM public key"):
            verify_signature(Manifest.load(d / "manifest.json"), tmp_path / "x.pub")


class TestVerify:
    def test_good_signature_verifies(self, signed):
        """A manifest signed with key a verifies with a.pub and returns its key id."""
        d, a_pub, _ = signed
        assert len(verify_signature(Manifest.load(d / "manifest.json"), a_pub)) == 16

    def test_bad_signature_after_edit(self, signed):
        """Editing a recorded digest after signing makes the signature fail."""
        d, a_pub, _ = signed
        data = json.loads((d / "manifest.json").read_text())
        data["artifacts"][0]["sha256"] = "0" * 64
        (d / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(SignatureError, match="changed after signing"):
            verify_signature(Manifest.load(d / "manifest.json"), a_pub)

    def test_corrupt_signature_value(self, signed):
        """A signature value that is not valid base64 is refused."""
        d, a_pub, _ = signed
        data = json.loads((d / "manifest.json").read_text())
        data["signature"]["value"] = "!!!"
        (d / "manifest.json").write_text(json.dumps(data))
        with pytest.raises(SignatureError, match="not base64"):
            verify_signature(Manifest.load(d / "manifest.json"), a_pub)

    def test_wrong_key(self, signed):
        """Verifying with another key fails and names both key ids."""
        d, _, b_pub = signed
        with pytest.raises(SignatureError, match="signed by key [0-9a-f]{16}, not by the given key [0-9a-f]{16}"):
            verify_signature(Manifest.load(d / "manifest.json"), b_pub)

    def test_unsigned_manifest_with_key_is_refused(self, tmp_path):
        """When a public key is given, an unsigned manifest is refused."""
        d = deployment(tmp_path / "d")
        _, pub = generate_keypair(tmp_path / "k")
        with pytest.raises(SignatureError, match="not signed"):
            verify_signature(Manifest.load(d / "manifest.json"), pub)
