"""Hardening (issue 18) against the served example: the probe's attacks replayed, bounded bodies,
metric labels and logs, the health token, a fuzz run, and an orphaned worker exiting.

One server for the module (chaos off, a health token, a small body limit); the parent-death
test starts its own, since it kills it."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-health-token"
LIMIT = 256 * 1024
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _sign_openssf(model_dir: Path, out: Path) -> dict[str, str]:
    """Sign ``model_dir`` with the model-signing package's own API (an EC key made here); the
    environment that makes the example verify that signature. Empty without the package."""
    try:
        from model_signing import signing
    except ImportError:
        return {}
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    (out / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    (out / "key.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo))
    signing.Config().use_elliptic_key_signer(private_key=out / "key.pem").sign(model_dir, out / "model.sig")
    return {"GUARDED_MODEL_SIGNATURE": str(out / "model.sig"), "GUARDED_MODEL_SIGNATURE_KEY": str(out / "key.pub")}


@pytest.fixture(scope="module")
def server(artifacts, tmp_path_factory):
    """The example with chaos off, a health token, a 256 KiB body limit, and (when the model-signing
    package is installed) its artifacts directory signed with OpenSSF Model Signing."""
    tmp = tmp_path_factory.mktemp("hardening")
    art = tmp / "artifacts"
    shutil.copytree(artifacts, art, ignore=shutil.ignore_patterns("digits", "sentiment"))
    (art / "notes.json").write_text('{"trained_by": "services.train"}')  # signed, not in the manifest
    env = {"GUARDED_ARTIFACT_DIR": str(art), "GUARDED_HEALTH_TOKEN": TOKEN, "GUARDED_MAX_BODY_BYTES": str(LIMIT),
           "GUARDED_STATE_DIR": str(tmp / "state"), "GUARDED_INTEGRITY_INTERVAL_S": "0.5",
           **_sign_openssf(art, tmp)}
    env.pop("GUARDED_CHAOS", None)
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as s:
        s.artifact_dir, s.state_dir = art, tmp / "state"
        s.signed = "GUARDED_MODEL_SIGNATURE" in env
        yield s


@pytest.fixture(scope="module")
def X(artifacts) -> np.ndarray:
    return np.load(artifacts / "reference.npz")["X_train"]


def _health(server) -> dict:
    return requests.get(server.url + "/guard/health", headers=AUTH, timeout=10).json()


def _stats(server) -> dict:
    return requests.get(server.url + "/guard/stats", headers=AUTH, timeout=10).json()


def test_probe_attacks_do_not_flip_readiness(server, X):
    """100 POSTs to the disabled chaos endpoint and 40 text/plain POSTs of 1e308 in a low-variance
    feature: all 4xx, none counted as a model error, /readyz stays 200."""
    good = X[:2].tolist()
    for _ in range(100):
        r = requests.post(server.url + "/predict_chaos", json={"inputs": good, "fail": True}, timeout=10)
        assert r.status_code == 404
    j = int(np.argmin(X.std(axis=0)))
    row = X[0].tolist()
    row[j] = 1e308
    for _ in range(40):
        r = requests.post(server.url + "/predict", data=json.dumps({"inputs": [row]}),
                          headers={"Content-Type": "text/plain"}, timeout=10)
        assert r.status_code == 400 and f"feature {j}" in r.text, r.text
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    s = _stats(server)
    assert s["errors"] == 0 and s["invalid_inputs"] >= 40
    assert _health(server)["checks"]["model_errors"]["status"] == "ok"


def test_disabled_endpoint_is_not_registered(server):
    doc = requests.get(server.url + "/docs.json", timeout=10).json()
    assert "/predict" in doc["paths"] and not any("chaos" in p for p in doc["paths"])


def test_body_over_the_limit_is_413_naming_the_limit(server):
    body = b'{"inputs": [[' + b"1.0," * (LIMIT // 4) + b'1.0]]}'
    r = requests.post(server.url + "/predict", data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and str(LIMIT) in r.json()["error"]

    def chunks():
        yield b'{"inputs": [['
        for _ in range(LIMIT // 4096 + 2):
            yield b"1.0," * 1024
        yield b"1.0]]}"

    r = requests.post(server.url + "/predict", data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and str(LIMIT) in r.json()["error"]


@pytest.mark.parametrize("body, ctype, expected", [
    (None, "multipart/form-data", "boundary"),
    ("bool", "application/json", "is a boolean"),
    ("string", "application/json", "is a string"),
    ("null", "application/json", "is null"),
])
def test_malformed_bodies_get_4xx_naming_the_problem(server, X, body, ctype, expected):
    row = X[0].tolist()
    if body is None:
        data = b"--x\r\nContent-Disposition: form-data; name=\"inputs\"\r\n\r\n[[1]]\r\n--x--\r\n"
    else:
        row[3] = {"bool": True, "string": "abc", "null": None}[body]
        data = json.dumps({"inputs": [X[1].tolist(), row]}).encode()
    r = requests.post(server.url + "/predict", data=data, headers={"Content-Type": ctype}, timeout=10)
    assert 400 <= r.status_code < 500 and expected in r.text, r.text
    if body is not None:
        assert "row 1, column 3" in r.text


def test_unknown_paths_do_not_grow_metrics(server):
    def series() -> int:
        text = requests.get(server.url + "/metrics", timeout=10).text
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))

    requests.get(server.url + "/no-such-path-0", timeout=10)
    before = series()
    for i in range(200):
        assert requests.get(f"{server.url}/no-such-path-{i}-{os.urandom(4).hex()}", timeout=10).status_code == 404
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert "no-such-path" not in text and 'endpoint="/<other>"' in text
    assert series() <= before + 5


def test_health_and_stats_show_status_only_without_the_token(server):
    anon = requests.get(server.url + "/guard/health", timeout=10)
    assert anon.status_code == 200 and set(anon.json()) == {"status", "ready"}
    assert set(requests.get(server.url + "/guard/stats", timeout=10).json()) == {"status", "ready"}
    wrong = requests.get(server.url + "/guard/health", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert set(wrong.json()) == {"status", "ready"}
    full = _health(server)
    assert "checks" in full and "worker_pid" in json.dumps(_stats(server))


def test_client_errors_are_logged_in_one_line_without_traceback(server, X):
    for _ in range(30):
        requests.post(server.url + "/predict", json={"inputs": [[1.0, 2.0]]}, timeout=10)
    log = server.log_path.read_text(errors="replace")
    assert "client error on /predict" in log
    assert "Traceback" not in log
    assert log.count("expected 30 features per row") <= 12  # rate-limited: a burst, then a count


def test_fuzz_bad_bodies_never_5xx_nor_restart_a_worker(server, X):
    """A few hundred generated bad bodies (seeded): 0 answers 5xx, the worker's pid unchanged,
    health status unchanged."""
    rng = np.random.default_rng(18)
    pid, status = _pid(_stats(server)), _health(server)["status"]
    atoms = [None, True, False, "x", "", "1e999", 1e308, -1e308, float("nan"), [], {}, [[]], 0, -1, 2**70,
             "\u0000", 1.5]
    bodies: list[tuple[bytes, str]] = []
    for i in range(300):
        kind = i % 10
        row = X[rng.integers(len(X))].tolist()
        if kind == 0:
            row[rng.integers(30)] = atoms[rng.integers(len(atoms))]
            doc: object = {"inputs": [row]}
        elif kind == 1:
            doc = {"inputs": row[: rng.integers(0, 30)]}
        elif kind == 2:
            doc = {"inputs": [[row] * 2]}
        elif kind == 3:
            doc = {"wrong": [row]}
        elif kind == 4:
            doc = atoms[rng.integers(len(atoms))]
        elif kind == 5:
            bodies.append((bytes(rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8)), "application/json"))
            continue
        elif kind == 6:
            text = json.dumps({"inputs": [row]})
            bodies.append((text[: rng.integers(1, len(text))].encode(), "application/json"))
            continue
        elif kind == 7:
            bodies.append((json.dumps({"inputs": [row]}).encode(), ["text/plain", "multipart/form-data",
                                                                    "application/x-www-form-urlencoded",
                                                                    "image/png"][rng.integers(4)]))
            continue
        elif kind == 8:
            doc = {"inputs": [row], "inputs2": "x" * int(rng.integers(0, 5000))}
        else:
            doc = {"inputs": [[float(v) * 10.0 ** int(rng.integers(-300, 300)) for v in row]]}
        try:
            data = json.dumps(doc, allow_nan=True).encode()
        except (TypeError, ValueError):
            data = repr(doc).encode()
        bodies.append((data, "application/json"))
    codes = []
    for data, ctype in bodies:
        r = requests.post(server.url + "/predict", data=data, headers={"Content-Type": ctype}, timeout=30)
        codes.append(r.status_code)
    assert len(codes) == 300
    assert [c for c in codes if c >= 500] == []
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    s = _stats(server)
    assert _pid(s) == pid
    assert _health(server)["status"] == status


def test_state_is_private(server, X):
    """The drift store's directory is 0700 and its files 0600 (raw rows of other clients' traffic)."""
    import stat

    assert requests.post(server.url + "/predict", json={"inputs": X[:3].tolist()}, timeout=10).status_code == 200
    state = server.state_dir
    files = list(state.iterdir())
    assert any(f.name.endswith(".sqlite") for f in files), files
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [(f.name, oct(f.stat().st_mode)) for f in files]


def test_openssf_signed_model_directory_is_verified_and_tampering_fails(server):
    """The served artifacts, signed with the model-signing package's API, verify at startup; one file
    tampered while serving turns integrity.model_signature failing in the background re-check.
    (Last of the module's tests on this server: it leaves the deployment tampered.)"""
    if not server.signed:
        pytest.skip("the optional model-signing package is not installed (pip install 'guarded-serving[signing]')")
    check = _health(server)["checks"]["integrity.model_signature"]
    assert check["status"] == "ok", check
    (server.artifact_dir / "notes.json").write_text('{"trained_by": "someone else"}')

    def failing() -> bool:
        return _health(server)["checks"]["integrity.model_signature"]["status"] == "failing"

    assert wait_until(failing, 60, 0.3)
    assert "notes.json" in _health(server)["checks"]["integrity.model_signature"]["reason"]
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 503


def test_manifest_of_another_directory_is_a_startup_error(artifacts, tmp_path):
    """The manifest kept beside pristine files while the service loads a tampered copy: the guard checks
    the served directory (artifact_root), so `bentoml serve` refuses to start, naming the file."""
    served = tmp_path / "served"
    shutil.copytree(artifacts, served, ignore=shutil.ignore_patterns("digits", "sentiment", "manifest.json"))
    with open(served / "model.pkl", "r+b") as fh:
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 0xFF]))
    env = {"GUARDED_ARTIFACT_DIR": str(served), "GUARDED_MANIFEST": str(artifacts / "manifest.json"),
           "GUARDED_STATE_DIR": str(tmp_path / "state")}
    server = BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT)
    try:
        with pytest.raises(RuntimeError, match="bentoml serve exited") as info:
            server.start(timeout=120)
    finally:
        server.stop()
        server._tmp.cleanup()
    assert "IntegrityError" in str(info.value) and "model.pkl: modified" in str(info.value)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_not_ready_policy_never_unpickles_a_tampered_model(artifacts, tmp_path):
    """integrity_policy=not_ready with a model.pkl carrying a payload: the service starts not ready,
    /predict answers 503 (not 200 from the payload's model), and the payload never ran."""
    served = tmp_path / "served"
    shutil.copytree(artifacts, served, ignore=shutil.ignore_patterns("digits", "sentiment"))
    marker = tmp_path / "payload-ran"
    (served / "model.pkl").write_bytes(pickle.dumps(_Payload(str(marker))))
    env = {"GUARDED_ARTIFACT_DIR": str(served), "GUARDED_INTEGRITY_POLICY": "not_ready",
           "GUARDED_STATE_DIR": str(tmp_path / "state")}
    server = BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT)
    try:
        server.start(timeout=180, ready_status=503)
        r = requests.post(server.url + "/predict", json={"inputs": [[1.0] * 30]}, timeout=30)
        assert r.status_code == 503
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 503
    finally:
        server.stop()
        server._tmp.cleanup()
    assert not marker.exists()


def _pid(stats: dict) -> int:
    return stats.get("worker_pid") or stats["drift"]["worker_pid"]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_worker_exits_when_bentoml_serve_is_killed(artifacts, tmp_path):
    """SIGKILL of the `bentoml serve` parent alone: its orphaned worker stops serving, exits, and the
    port is free again."""
    import psutil

    port = free_port()
    env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_STATE_DIR": str(tmp_path / "state")}
    server = BentoServer("services.cancer:CancerClassifier", port, env=env, cwd=ROOT)
    server.start(timeout=180)
    try:
        workers = psutil.Process(server.proc.pid).children(recursive=True)
        assert workers
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        assert wait_until(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers),
                          60, 0.2), server.log_tail()
        assert wait_until(lambda: _port_free(port), 30, 0.2)
        assert "parent process" in server.log_path.read_text(errors="replace")
    finally:
        server.stop()
        server._tmp.cleanup()
