"""Shared helpers of the integrity tests: real files, and running code without file-mode bypass.

Root ignores file modes, so ``chmod`` alone denies it nothing. To make the
permission tests meaningful when the suite runs as root, the check runs in a
child process that really lacks the privilege:

1. as the ``nobody`` user (``setpriv --reuid``), when this interpreter is
   reachable for it;
2. else as root *without* ``CAP_DAC_OVERRIDE`` and ``CAP_DAC_READ_SEARCH``
   (``setpriv`` drops them from the inheritable and bounding sets), so the
   kernel enforces mode bits on uid 0 like on anyone else -- used where the
   interpreter lives in root's 0700 home, out of nobody's reach;
3. else the test is skipped, saying why.

Not root: the child runs as the current user, for whom ``chmod`` is enough.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_DROP = "-dac_override,-dac_read_search"


def shared_tmpdir() -> Path:
    """A temp dir under /tmp that other users can traverse (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="gs-integrity-"))
    d.chmod(0o755)
    return d


def _probe(prefix: list[str]) -> bool:
    d = shared_tmpdir()
    try:
        f = d / "denied"
        f.write_text("x")
        f.chmod(0o000)
        code = ("import guarded_serving.integrity\n"
                f"try:\n    open({str(f)!r}).read()\n    print('READ')\n"
                "except PermissionError:\n    print('DENIED')")
        r = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env=_env(d), cwd=str(d))
        return r.returncode == 0 and r.stdout.strip() == "DENIED"
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(d, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def unprivileged() -> tuple[list[str] | None, str]:
    """``(command prefix, how)`` for a child without file-mode bypass, or ``(None, why not)``."""
    if os.geteuid() != 0:
        return [], f"running as uid {os.geteuid()} (not root): file modes apply"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None, "running as root and setpriv (util-linux) is not installed: cannot drop privileges"
    try:
        nobody = pwd.getpwnam("nobody")
        prefix = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
        if _probe(prefix):
            return prefix, "as user nobody"
    except KeyError:
        pass
    prefix = [setpriv, f"--inh-caps={_DROP}", f"--bounding-set={_DROP}"]
    if _probe(prefix):
        return prefix, "as root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (nobody cannot reach this interpreter)"
    return None, "running as root and neither user nobody nor a capability drop could be used"


def _env(workdir: Path) -> dict[str, str]:
    home = workdir / "home"
    home.mkdir(exist_ok=True)
    home.chmod(0o777)
    return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
            "PYTHONDONTWRITEBYTECODE": "1"}


def run_unprivileged(code: str, workdir: Path) -> dict[str, Any]:
    """Run ``code`` (which prints one JSON object last) unprivileged; return that object."""
    prefix, how = unprivileged()
    assert prefix is not None, how
    r = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=_env(workdir), cwd=str(workdir))
    assert r.returncode == 0, f"child failed ({how}):\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@functools.lru_cache(maxsize=None)
def trained(seed: int) -> Path:
    """Artifacts of the example model trained with ``seed`` (model.pkl, reference.npz, manifest.json), once."""
    from services.train import train

    out = Path(tempfile.mkdtemp(prefix=f"gs-trained-{seed}-"))
    atexit.register(shutil.rmtree, out, True)
    train(out, seed)
    return out


def deployment(dest: Path, seed: int = 0) -> Path:
    """A fresh copy of the trained artifacts in ``dest`` (its manifest included); returns ``dest``."""
    shutil.copytree(trained(seed), dest, dirs_exist_ok=True)
    return dest


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Flip one byte of ``path`` in place (default: the middle one)."""
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        pos = size // 2 if offset is None else offset
        fh.seek(pos)
        b = fh.read(1)
        fh.seek(pos)
        fh.write(bytes([b[0] ^ 0xFF]))
