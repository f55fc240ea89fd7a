"""A real ``redis-server`` (Debian's package) for tests, and a loopback proxy that delays it.

- :class:`RedisServer` -- ``redis-server`` on 127.0.0.1, a free port, its own temp
  directory; optional password, TLS (a throwaway CA and certificate, :func:`make_tls_files`)
  and append-only persistence (``appendfsync always``: an acknowledged write is on disk);
  stop, SIGKILL and restart on the same port and dir.
- :class:`DelayProxy` -- a TCP proxy on 127.0.0.1 that holds every chunk for
  ``delay_s`` before forwarding it (a slow or far-away Redis).
- fixtures ``redis_server`` (one per test module) and ``redis_url``; tests skip with
  a clear reason when ``redis-server`` is not installed (``apt-get install redis-server``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from guarded_serving.testing import free_port, wait_until

__all__ = ["DelayProxy", "RedisServer", "make_tls_files", "redis_server", "redis_url"]

BINARY = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


class RedisServer:
    """``redis-server`` on 127.0.0.1 in a temp directory (kept across restarts)."""

    def __init__(self, *, password: str | None = None, appendonly: bool = False, port: int | None = None,
                 tls: bool = False) -> None:
        if BINARY is None:
            why = "redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)"
            if "PYTEST_CURRENT_TEST" in os.environ:
                pytest.skip(why)
            raise RuntimeError(why)
        self.password = password
        self.appendonly = appendonly
        self.port = port or free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="gs-redis-")
        self.dir = Path(self._tmp.name)
        self.proc: subprocess.Popen[bytes] | None = None
        #: With ``tls=True``: the port speaks TLS only; ``tls_files["ca"]`` is the CA to trust.
        self.tls_files = make_tls_files(self.dir) if tls else None

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        auth = f":{password}@" if password else ""
        return f"{'rediss' if self.tls_files else 'redis'}://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> "RedisServer":
        ports = ["--port", str(self.port)]
        if self.tls_files:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls_files["cert"]),
                     "--tls-key-file", str(self.tls_files["key"]), "--tls-ca-cert-file", str(self.tls_files["ca"]),
                     "--tls-auth-clients", "no"]
        args = [BINARY, "--bind", "127.0.0.1", *ports, "--dir", str(self.dir),
                "--save", "", "--daemonize", "no", "--protected-mode", "no", "--logfile", str(self.dir / "redis.log")]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_until(self.ping, timeout, 0.05):
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:] if (self.dir / "redis.log").exists() else ""
            self.stop()
            raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port}:\n{log}")
        return self

    def ping(self) -> bool:
        """True when the server answers PING (with the password, if any)."""
        if self.tls_files:
            try:
                c = self.client()
                try:
                    return bool(c.ping())
                finally:
                    c.close()
            except Exception:
                return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    if not s.recv(64).startswith(b"+OK"):
                        return False
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        tls = {"ssl": True, "ssl_ca_certs": str(self.tls_files["ca"])} if self.tls_files else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5, **tls)

    def stop(self, timeout: float = 10.0) -> None:
        """A clean shutdown (SIGTERM: an append-only file is flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: what was not on disk is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class DelayProxy:
    """A loopback TCP proxy to ``127.0.0.1:target_port`` that delays every chunk by ``delay_s``."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self.port = self._srv.getsockname()[1]
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                data = src.recv(65536)
                if not data:
                    break
                time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> "DelayProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._srv.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


@pytest.fixture(scope="module")
def redis_server():
    """A private redis-server on 127.0.0.1 for one test module (skipped when not installed)."""
    if BINARY is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server; .ci/run installs it)")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server):
    """The URL of the module's Redis, emptied before each test."""
    c = redis_server.client()
    c.flushall()
    c.close()
    return redis_server.url


def make_tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (PEM files in ``directory``):
    ``ca``, ``cert``, ``key``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guarded-serving test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files
