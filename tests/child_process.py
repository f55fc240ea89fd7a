"""A helper process a test starts (Prometheus, a private Jaeger): stop it politely, read its log."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

__all__ = ["ChildProcess"]


class ChildProcess:
    """Mixin for a test helper holding ``proc`` (a Popen or None) and ``log_path``."""

    proc: "subprocess.Popen[bytes] | None" = None
    log_path: Path
    stop_timeout_s: float = 15.0

    def stop(self) -> None:
        """SIGTERM, wait ``stop_timeout_s``, then SIGKILL (idempotent)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
