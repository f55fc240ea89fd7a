"""Tests of guarded_serving.integrity.hashing: streaming file and tree digests."""

from __future__ import annotations

import hashlib
import os

import pytest

from guarded_serving.integrity.hashing import FileDigest, iter_tree, sha256_file, stat_key, tree_digest


class TestSha256File:
    def test_matches_hashlib_across_chunk_boundaries(self, tmp_path):
        """A file spanning several chunks, plus a partial one, hashes to hashlib's digest."""
        data = os.urandom(3 * 8192 + 123)
        p = tmp_path / "blob"
        p.write_bytes(data)
        assert sha256_file(p, chunk_size=8192) == FileDigest(hashlib.sha256(data).hexdigest(), len(data))

    def test_empty_file(self, tmp_path):
        """An empty file has the SHA-256 of no bytes and size 0."""
        p = tmp_path / "empty"
        p.write_bytes(b"")
        assert sha256_file(p) == FileDigest(hashlib.sha256(b"").hexdigest(), 0)

    def test_one_flipped_byte_changes_the_digest(self, tmp_path):
        """Changing a single byte changes the digest but not the size."""
        p = tmp_path / "blob"
        p.write_bytes(b"a" * 5000)
        before = sha256_file(p)
        with open(p, "r+b") as fh:
            fh.seek(2500)
            fh.write(b"b")
        after = sha256_file(p)
        assert after.size == before.size and after.sha256 != before.sha256

    def test_tiny_chunk_size_is_refused(self, tmp_path):
        """A chunk size below 4096 bytes is a clear ValueError."""
        with pytest.raises(ValueError, match="chunk_size=10"):
            sha256_file(tmp_path, chunk_size=10)

    def test_missing_file_raises_file_not_found(self, tmp_path):
        """A missing file raises FileNotFoundError unchanged."""
        with pytest.raises(FileNotFoundError):
            sha256_file(tmp_path / "nope")


class TestTree:
    def test_lists_nested_files_sorted_with_posix_paths(self, tmp_path):
        """Nested files are listed sorted by their relative POSIX path."""
        (tmp_path / "b").mkdir()
        (tmp_path / "b" / "z.txt").write_text("z")
        (tmp_path / "a.txt").write_text("a")
        assert [rel for rel, _ in iter_tree(tmp_path)] == ["a.txt", "b/z.txt"]

    def test_tree_digest_changes_on_rename(self, tmp_path):
        """Renaming a file with the same content changes the tree digest."""
        d = FileDigest("0" * 64, 1)
        assert tree_digest({"a": d}) != tree_digest({"b": d})
        assert tree_digest({"a": d, "b": d}) == tree_digest({"b": d, "a": d})

    def test_stat_key_changes_when_file_replaced_with_old_mtime(self, tmp_path):
        """Replacing a file by rename, even with the old size and mtime restored, changes its stat key."""
        p = tmp_path / "m"
        p.write_bytes(b"x" * 10)
        before = stat_key(p)
        st = os.stat(p)
        tmp = tmp_path / "m.new"
        tmp.write_bytes(b"y" * 10)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, p)
        after = stat_key(p)
        assert after[:2] == before[:2] and after != before
