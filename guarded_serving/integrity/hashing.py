"""Streaming SHA-256 of files and directory trees, in bounded memory.

A file is read with ``readinto`` into one preallocated buffer (1 MiB by
default) and fed to :mod:`hashlib` (OpenSSL, which releases the GIL for large
updates), so memory stays at one buffer whatever the file size and throughput
is the machine's SHA-256 speed (``benchmarks/bench_hash.py`` compares it with
``sha256sum``).

A directory is hashed file by file (regular files and symlinks to files,
sorted by their POSIX relative path); its tree digest is the SHA-256 of the
lines ``"<relpath>\\0<sha256>\\0<size>\\n"``, so renaming, adding or removing a
file changes it as surely as changing a byte.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

__all__ = ["CHUNK_SIZE", "FileDigest", "StatKey", "iter_tree", "sha256_file", "stat_key", "tree_digest"]

#: Bytes read per ``readinto``; large enough that per-call overhead vanishes.
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """SHA-256 (hex) and size in bytes of one file."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size": self.size}

    def short(self) -> str:
        return f"sha256 {self.sha256} ({self.size} bytes)"


def sha256_file(path: str | os.PathLike[str], *, chunk_size: int = CHUNK_SIZE) -> FileDigest:
    """Hash ``path`` in chunks of ``chunk_size`` bytes; memory is one chunk.

    Raises the ``OSError`` of ``open``/``read`` (``FileNotFoundError``,
    ``PermissionError``, ``IsADirectoryError``) unchanged.
    """
    if chunk_size < 4096:
        raise ValueError(f"chunk_size={chunk_size} is invalid: expected >= 4096 bytes")
    h = hashlib.sha256()
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    size = 0
    with open(path, "rb", buffering=0) as fh:
        if hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:  # pragma: no cover - e.g. a pipe
                pass
        readinto = fh.readinto
        update = h.update
        while True:
            n = readinto(buf)
            if not n:
                break
            update(view[:n])
            size += n
    return FileDigest(h.hexdigest(), size)


def iter_tree(root: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    """``(posix_relpath, path)`` of every file under ``root``, sorted.

    Regular files and symlinks to files are listed; symlinked directories are
    not descended (a link out of the tree is not part of it). A broken link or
    a special file (FIFO, socket, device) is listed too, so that hashing it
    fails loudly rather than being skipped silently.
    """
    root = Path(root)
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_raise):
        dirnames.sort()
        base = Path(dirpath)
        for name in filenames:
            p = base / name
            out.append((p.relative_to(root).as_posix(), p))
    out.sort()
    return iter(out)


def _raise(err: OSError) -> None:
    raise err


def tree_digest(files: Mapping[str, FileDigest]) -> str:
    """The digest of a directory from its files' digests (order-independent input)."""
    h = hashlib.sha256()
    for rel in sorted(files):
        d = files[rel]
        h.update(f"{rel}\0{d.sha256}\0{d.size}\n".encode("utf-8"))
    return h.hexdigest()


#: What the background check compares before deciding to re-hash a file.
StatKey = tuple[int, int, int, int, int]


def stat_key(path: str | os.PathLike[str]) -> StatKey:
    """``(size, mtime_ns, ctime_ns, inode, device)`` of ``path`` (follows links).

    ``ctime`` and the inode catch what size and mtime miss: a file written
    back with its old mtime (``touch -r``) still gets a new ctime, and a file
    swapped by rename (``os.replace``) gets a new inode.
    """
    st = os.stat(path)
    if not stat_mod.S_ISREG(st.st_mode):
        raise IsADirectoryError(f"{path} is not a regular file")
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
