"""Headless Chromium (Debian's ``chromium``) for tests: the DOM after scripts ran, and screenshots.

Test artifacts (screenshots) go to ``$GUARDED_TEST_ARTIFACTS``, default ``build/test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CHROMIUM", "artifact_dir", "dump_dom", "screenshot"]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def artifact_dir() -> Path:
    d = Path(os.environ.get("GUARDED_TEST_ARTIFACTS") or ROOT / "build" / "test-artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _run(url: str, *args: str, size: tuple[int, int], budget_ms: int, timeout: float) -> subprocess.CompletedProcess[str]:
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="gs-chromium-") as profile:
        # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
               f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={budget_ms}", *args, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=profile)


def dump_dom(url: str, *, size: tuple[int, int] = (1400, 900), budget_ms: int = 15000,
             timeout: float = 120.0) -> str:
    """The serialised DOM of ``url`` once its scripts ran (``--dump-dom``)."""
    res = _run(url, "--dump-dom", size=size, budget_ms=budget_ms, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom {url} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return res.stdout


def screenshot(url: str, path: Path, *, size: tuple[int, int] = (1400, 900), budget_ms: int = 15000,
               timeout: float = 120.0) -> Path:
    """A PNG of ``url`` at ``size`` once its scripts ran (``--screenshot``)."""
    path = Path(path).resolve()
    path.unlink(missing_ok=True)
    res = _run(url, f"--screenshot={path}", size=size, budget_ms=budget_ms, timeout=timeout)
    if res.returncode != 0 or not path.exists():
        raise RuntimeError(f"chromium --screenshot {url} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return path
