"""Run ``bentoml serve`` as a child process on 127.0.0.1 (demo, tests, load tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

from .._polling import wait_until

__all__ = ["BentoServer", "tree_rss_mb", "wait_http"]


def wait_http(url: str, *, timeout: float = 60.0, status: int = 200) -> bool:
    """Poll ``url`` until it answers ``status`` or ``timeout`` seconds pass."""

    def answered() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return bool(r.status == status)
        except urllib.error.HTTPError as e:
            return bool(e.code == status)
        except OSError:
            return False

    return bool(wait_until(answered, timeout, 0.2))


def tree_rss_mb(pid: int) -> tuple[float, int]:
    """(resident memory in MB, process count) of ``pid`` and all its descendants."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0, 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20, len(procs)


class BentoServer:
    """``bentoml serve TARGET --host 127.0.0.1 --port PORT`` in a child process.

    Parameters
    ----------
    target : str
        Import path of the service, e.g. ``"services.cancer:CancerClassifier"``.
    port : int
    env : mapping, optional
        Extra environment for the server (``BENTOML_HOME`` defaults to a temp dir).
    cwd : path, optional
        Working directory (the project root, so ``services`` imports).
    log_path : path, optional
        Where the server's output goes (default: a temp file).
    """

    def __init__(self, target: str, port: int, *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, log_path: str | os.PathLike[str] | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.target = target
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.cwd = str(cwd) if cwd is not None else os.getcwd()
        self._tmp = tempfile.TemporaryDirectory(prefix="gs-bento-")
        self.env = {**os.environ, "BENTOML_HOME": str(Path(self._tmp.name) / "bentoml"),
                    "PYTHONUNBUFFERED": "1", "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
        pythonpath = self.env.get("PYTHONPATH", "")
        self.env["PYTHONPATH"] = self.cwd + (os.pathsep + pythonpath if pythonpath else "")
        self.log_path = Path(log_path) if log_path else Path(self._tmp.name) / "serve.log"
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = 90.0, ready_status: int | None = 200) -> "BentoServer":
        """Start and wait until ``/livez`` answers (and ``/readyz`` gives ``ready_status``).

        Refused (RuntimeError) while this server's process is still running: a second start would
        leave the first process behind, serving, with nothing left to stop it (``with BentoServer(...)``
        starts it already)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"bentoml serve {self.target} is already running as pid {self.proc.pid}: stop() it "
                               f"before starting it again (a with-block starts it already)")
        self._log = open(self.log_path, "wb")
        cmd = [sys.executable, "-m", "bentoml", "serve", self.target, "--host", "127.0.0.1",
               "--port", str(self.port), *self.extra_args]
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        proc = self.proc
        # "exited" or "live" ends the wait; each poll is itself a short wait for /livez
        state = wait_until(lambda: "exited" if proc.poll() is not None else
                           "live" if wait_http(self.url + "/livez", timeout=1.0) else "", timeout, 0.0)
        if state == "exited":
            raise RuntimeError(f"bentoml serve exited with {proc.returncode}:\n{self.log_tail()}")
        if state != "live":
            self.stop()
            raise TimeoutError(f"bentoml serve did not answer /livez in {timeout} s:\n{self.log_tail()}")
        if ready_status is not None and not wait_http(self.url + "/readyz", timeout=max(1.0, deadline - time.monotonic()),
                                                      status=ready_status):
            tail = self.log_tail()
            self.stop()
            raise TimeoutError(f"/readyz never answered {ready_status}:\n{tail}")
        return self

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the server's process group and to every descendant.

        BentoML's workers run in sessions of their own, outside the server's process
        group, so they are signalled one by one (found with psutil).
        """
        if self.proc is not None and self.proc.poll() is None:
            import psutil

            try:
                children = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            os.killpg(self.proc.pid, sig)
            for child in children:
                try:
                    child.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    self.kill(signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "BentoServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self._tmp.cleanup()
