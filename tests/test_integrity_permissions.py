"""Tests of guarded_serving.integrity.permissions, with real denials (unprivileged child when root)."""

from __future__ import annotations

import shutil

import pytest

from guarded_serving.integrity.permissions import check_permissions

from tests.integrity_helpers import run_unprivileged, shared_tmpdir, unprivileged

CHECK = """
import json
from guarded_serving.integrity.permissions import check_permissions
p = check_permissions(read={read!r}, write={write!r})
print(json.dumps([x.to_dict() for x in p]))
"""


@pytest.fixture
def tree():
    """A traversable temp tree: a readable and an unreadable file, a writable and a read-only dir."""
    prefix, how = unprivileged()
    if prefix is None:
        pytest.skip(how)
    d = shared_tmpdir()
    (d / "ok.bin").write_bytes(b"ok")
    (d / "ok.bin").chmod(0o644)
    (d / "secret.bin").write_bytes(b"no")
    (d / "secret.bin").chmod(0o000)
    (d / "state").mkdir()
    (d / "state").chmod(0o777)
    (d / "logs").mkdir()
    (d / "logs").chmod(0o555)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class TestUnprivileged:
    def test_unreadable_artifact_is_reported_with_path_and_permission(self, tree):
        """An artifact the process cannot read is reported as a missing read permission."""
        out = run_unprivileged(CHECK.format(read=[str(tree / "ok.bin"), str(tree / "secret.bin")], write=[]), tree)
        assert [(p["path"], p["permission"]) for p in out] == [(str(tree / "secret.bin"), "read")]
        assert "Permission denied" in out[0]["reason"] and "mode ----------" in out[0]["reason"]

    def test_unwritable_state_directory_is_reported(self, tree):
        """A directory the process cannot write is reported as a missing write permission."""
        out = run_unprivileged(CHECK.format(read=[], write=[str(tree / "state"), str(tree / "logs")]), tree)
        assert [(p["path"], p["permission"]) for p in out] == [(str(tree / "logs"), "write")]

    def test_directory_that_cannot_be_created(self, tree):
        """A needed directory under a read-only parent cannot be created and says so."""
        out = run_unprivileged(CHECK.format(read=[], write=[str(tree / "logs" / "app")]), tree)
        assert out[0]["permission"] == "write" and "cannot be created" in out[0]["reason"]

    def test_unreadable_file_inside_directory_artifact(self, tree):
        """Reading a directory artifact checks every file in it."""
        out = run_unprivileged(CHECK.format(read=[str(tree)], write=[]), tree)
        assert [p["path"] for p in out] == [str(tree / "secret.bin")]


class TestInProcess:
    def test_everything_permitted(self, tmp_path):
        """Readable files and writable dirs give no problems, and leave no probe file behind."""
        (tmp_path / "a").write_bytes(b"x")
        assert check_permissions(read=[tmp_path / "a"], write=[tmp_path]) == []
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]

    def test_missing_write_dir_is_created(self, tmp_path):
        """A needed directory that does not exist yet is created."""
        assert check_permissions(write=[tmp_path / "state" / "db"]) == []
        assert (tmp_path / "state" / "db").is_dir()

    def test_write_target_is_a_file(self, tmp_path):
        """A writable 'directory' that is a file is reported."""
        (tmp_path / "f").write_text("x")
        (p,) = check_permissions(write=[tmp_path / "f"])
        assert p.permission == "write" and "not a directory" in p.reason
