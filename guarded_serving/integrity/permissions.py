"""Can this process read every artifact and write every directory it needs?

The check *tries* the operation instead of asking ``os.access``: it opens and
reads one byte of every file, lists every directory, and creates then removes
a temporary file in every directory that must be writable. So it gives the
true answer under ACLs, read-only mounts, SELinux and root (for whom
``os.access`` and mode bits say little). A writable directory that does not
exist yet is created (as the service would), which also tests its parent.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["PermissionProblem", "check_permissions"]


@dataclass(frozen=True)
class PermissionProblem:
    """``path`` lacks ``permission`` ("read" or "write") for this process."""

    path: str
    permission: str
    reason: str

    def __str__(self) -> str:
        return f"cannot {self.permission} {self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "permission": self.permission, "reason": self.reason}


def _who(path: Path) -> str:
    try:
        st = os.stat(path)
        owner = f"owner uid {st.st_uid} gid {st.st_gid}, mode {stat_mod.filemode(st.st_mode)}"
    except OSError:
        owner = "not stat-able"
    return f"{owner}; this process runs as uid {os.geteuid()} gid {os.getegid()}"


def _reason(exc: OSError, path: Path) -> str:
    msg = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{msg} ({_who(path)})"
    return msg


def _check_read(path: Path, out: list[PermissionProblem]) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            names = sorted(os.listdir(path))
            for name in names:
                _check_read(path / name, out)
            return
        with open(path, "rb", buffering=0) as fh:
            fh.read(1)
    except FileNotFoundError:
        return  # a missing artifact is the manifest verification's finding, not a permission one
    except OSError as exc:
        out.append(PermissionProblem(str(path), "read", _reason(exc, path)))


def _check_write(path: Path, out: list[PermissionProblem]) -> None:
    if path.exists() and not path.is_dir():
        out.append(PermissionProblem(str(path), "write", "exists but is not a directory"))
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parent = next((p for p in path.parents if p.exists()), path)
        out.append(PermissionProblem(str(path), "write",
                                     f"does not exist and cannot be created: {_reason(exc, parent)}"))
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".guarded-serving-write-check-", dir=path)
    except OSError as exc:
        out.append(PermissionProblem(str(path), "write", _reason(exc, path)))
        return
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        os.unlink(tmp)


def check_permissions(read: Iterable[str | os.PathLike[str]] = (),
                      write: Iterable[str | os.PathLike[str]] = ()) -> list[PermissionProblem]:
    """Every problem found: files/directories in ``read`` that cannot be read
    (directories recursively), directories in ``write`` that cannot be written."""
    out: list[PermissionProblem] = []
    for p in read:
        _check_read(Path(p), out)
    for p in write:
        _check_write(Path(p), out)
    return out
