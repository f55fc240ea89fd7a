"""Private by default: the state the guard writes (drift windows, profiles) is readable by its
owner only. Directories the guard creates are 0700, files 0600; existing directories are left
as their owner set them (a shared mount keeps its mode)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_dir", "private_file"]

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and missing parents) with mode 0700; an existing directory is untouched."""
    p = Path(path)
    missing = []
    q = p
    while not q.exists() and q != q.parent:
        missing.append(q)
        q = q.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another worker made it first
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask
    return p


def private_file(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` empty with mode 0600 if it does not exist (its directory private too), so
    that what is written to it later (SQLite and its -wal/-shm files, which copy the database
    file's mode) is never readable by other users."""
    p = Path(path)
    private_dir(p.parent)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return p
    os.close(fd)
    os.chmod(p, FILE_MODE)
    return p
