"""Fault injection against the served example: tracing backends that vanish or never exist, a hardware
sampler that raises, a state directory that turns read-only, and SIGKILL during store writes."""

from __future__ import annotations

import functools
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import uuid

from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

from guarded_serving.serving.process import BentoServer, tree_rss_mb
from guarded_serving.testing import free_port, wait_until
from load_tests.client import drive
from tests.conftest import ROOT
from tests.jaeger import PrivateJaeger, tags_of

pytestmark = pytest.mark.integration

SERVICE = "CancerClassifier"


def post(server, api, payload):
    return requests.post(f"{server.url}/{api}", data=json.dumps(payload, allow_nan=True),
                         headers={"content-type": "application/json"}, timeout=30)


def test_jaeger_stopped_mid_load(artifacts, tmp_path):
    """Jaeger stops during a load run: every prediction still succeeds, server RSS stays bounded,
    and guard spans arrive again once Jaeger is back."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    run_id = uuid.uuid4().hex[:12]
    mine = lambda s: s["processTags"].get("gs.test.run") == run_id  # noqa: E731
    with PrivateJaeger() as jaeger:
        # a budget the loaded 2-core host meets, so spans are the ordinary kind: the test is about the
        # exporter's outage, not about an SLO storm (which would make every call an anomaly span)
        env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": jaeger.traces_endpoint,
               "OTEL_RESOURCE_ATTRIBUTES": f"gs.test.run={run_id}", "OTEL_BSP_SCHEDULE_DELAY": "100",
               "GUARDED_STATE_DIR": str(tmp_path), "GUARDED_LATENCY_SLO_MS": "2000",
               # a queue that fills within the outage (~250 calls/s here), so the plateau is visible; no
               # drift cycles during the measurement: their working memory swings by ~30 MB per cycle
               # (window tests, the sequential alarm), bounded but noise for this test of the exporter; and
               # a drift buffer that is full before the outage (200 rows; ~1.4 KB a row), for the same reason
               "OTEL_BSP_MAX_QUEUE_SIZE": "512", "GUARDED_DRIFT_INTERVAL_S": "3600",
               "GUARDED_DRIFT_BUFFER_ROWS": "200"}
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
            url = server.url + "/predict"
            before = drive(url, {"inputs": X[:1].tolist()}, seconds=4, concurrency=4)
            assert before.failures == 0 and before.ok > 0
            assert jaeger.query.wait_spans(SERVICE, lambda s: mine(s) and "guard.latency_ms" in tags_of(s))
            # start-up work first: the dependency check imports each package in a child process
            # (~100 MB while it lives), which must not count as growth during the outage
            deps_done = wait_until(lambda: all(", import " in c["reason"] for n, c in requests.get(
                server.url + "/guard/health", timeout=10).json()["checks"].items() if n.startswith("dependency.")),
                timeout=120, interval=0.5)
            assert deps_done, "the dependency check did not finish"
            rss_before = tree_rss_mb(server.proc.pid)[0]

            jaeger.stop()
            samples: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.5):
                    samples.append(tree_rss_mb(server.proc.pid)[0])

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            try:
                outage = drive(url, {"inputs": X[:1].tolist()}, seconds=12, concurrency=4)
            finally:
                done.set()
                sampler.join(5)
            assert outage.failures == 0, (outage.statuses, outage.exceptions)
            assert outage.ok > 100
            growth = max(samples) - rss_before
            print(f"RSS before outage {rss_before:.1f} MB, max during outage {max(samples):.1f} MB "
                  f"({outage.ok} calls in {outage.seconds:.0f} s)")
            # While the collector is down the exporter holds at most its queue plus the batch it retries
            # (512 + 512 spans here, ~3.6 KB each, ~3.7 MB: tests/test_exporter_outage.py checks the bound).
            # Measured here (a loaded 2-core host, 1100 to 1500 calls): 6.1, 6.6, 7.8 MB in all. Before
            # services/cancer.py called release_request_timers(), BentoML's request-timeout timers kept
            # every request's context (server span included) for the 30 s timeout: ~8 KB per call through
            # the whole outage (12.0 MB over 1217 calls here; ~2 MB/s at 230 calls/s). load_tests/outage_rss.py
            # prints both curves (GUARDED_RELEASE_TIMERS=0 and =1) over 60 s.
            assert growth < 12, f"server RSS grew {growth:.1f} MB during the Jaeger outage ({outage.ok} calls)"

            jaeger.start()  # same ports, empty memory store: whatever arrives now was exported after the outage
            after = drive(url, {"inputs": X[:2].tolist()}, seconds=3, concurrency=2)
            assert after.failures == 0
            resumed = jaeger.query.wait_spans(  # ordinary calls: the guard's attributes on the server span
                SERVICE, lambda s: mine(s) and tags_of(s).get("guard.batch_size") == 2, timeout=60)
            assert resumed, f"no guard span reached Jaeger after it came back:\n{server.log_tail()}"
            health = requests.get(server.url + "/guard/health", timeout=10)
            assert health.status_code == 200 and health.json()["ready"] is True


def test_otlp_endpoint_closed_from_start(artifacts, tmp_path):
    """With the OTLP endpoint on a closed port from the start, the service serves normally:
    predictions succeed, failures are still 500s, health and stats answer."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    closed = free_port()  # nothing listens here
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{closed}/v1/traces",
           "OTEL_BSP_SCHEDULE_DELAY": "100", "GUARDED_STATE_DIR": str(tmp_path)}
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
        load = drive(server.url + "/predict", {"inputs": X[:3].tolist()}, seconds=4, concurrency=4)
        assert load.failures == 0 and load.ok > 50
        assert post(server, "predict_chaos", {"inputs": X[:1].tolist(), "fail": True}).status_code == 500
        slow = post(server, "predict_chaos", {"inputs": X[:1].tolist(), "delay_ms": 150})
        assert slow.status_code == 200 and len(slow.json()["label"]) == 1
        stats = requests.get(server.url + "/guard/stats", timeout=10).json()
        assert stats["ok"] == load.ok + 1 and stats["errors"] == 1
        health = requests.get(server.url + "/guard/health", timeout=10)
        assert health.status_code == 200 and health.json()["ready"] is True
        assert server.proc.poll() is None


def _sampler_check(server) -> tuple[int, dict]:
    r = requests.get(server.url + "/guard/health", timeout=10)
    return r.status_code, r.json()["checks"].get("hardware.sampler", {"status": "ok", "reason": ""})


def _wait_sampler(server, predicate, timeout: float = 15.0) -> tuple[int, dict]:
    """Poll until ``predicate(check)`` holds for the hardware.sampler check; the last (status code, check)."""
    return wait_until(lambda: _sampler_check(server), timeout, 0.2, until=lambda got: predicate(got[1]))


def test_sampler_that_raises(artifacts, tmp_path):
    """A hardware provider that raises, then returns readings that make the verdicts raise, under load:
    health reports each (degraded, ready), every prediction succeeds, and the sampler recovers."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    trigger = tmp_path / "sampler-fault"
    env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_FAULT_TRIGGER": str(trigger)}
    with BentoServer("tests.fault_services:FaultySamplerClassifier", free_port(), env=env, cwd=ROOT) as server:
        url = server.url + "/predict"
        assert _sampler_check(server)[1]["status"] == "ok"
        for mode, expected in (("raise", "OSError: injected sensor failure"), ("garbage", "evaluate: ValueError")):
            trigger.write_text(mode)
            stop = threading.Event()
            results = []
            loader = threading.Thread(target=lambda: results.append(
                drive(url, {"inputs": X[:2].tolist()}, seconds=20, concurrency=2, stop=stop)))
            loader.start()
            try:
                code, check = _wait_sampler(server, lambda c: expected in c.get("reason", ""))
            finally:
                stop.set()
                loader.join(30)
            assert code == 200, "a broken sampler must not make the service unready"
            assert check["status"] == "degraded" and expected in check["reason"], check
            assert results[0].failures == 0 and results[0].ok > 0
        trigger.unlink()
        code, check = _wait_sampler(server, lambda c: c["status"] == "ok")
        assert code == 200 and check["status"] == "ok", check
        health = requests.get(server.url + "/guard/health", timeout=10).json()
        assert health["checks"]["hardware.memory"]["status"] in ("ok", "degraded", "unavailable")


# -- the state directory (drift store, SQLite) -------------------------------------------

STREAM = "breast_cancer:inputs"


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def fragile_state(tmp_path):
    """A real ext4 filesystem (loop device, ``errors=remount-ro``) mounted as the state directory.

    Yields ``(state_dir, make_read_only)``: ``make_read_only()`` raises a filesystem error through
    ext4's ``trigger_fs_error``, and the kernel turns the filesystem read-only at once, as it does on
    a real disk error; writes through files already open then fail with EROFS (a plain remount or
    chmod cannot do that while a database is open for writing).
    """
    image, state = tmp_path / "state.img", tmp_path / "state"
    state.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a loop-device filesystem")
    made = _run("truncate", "-s", "48M", str(image)).returncode == 0 \
        and _run("mkfs.ext4", "-q", "-F", str(image)).returncode == 0 \
        and _run("mount", "-o", "loop,errors=remount-ro", str(image), str(state)).returncode == 0
    if not made:
        pytest.skip("cannot make and mount an ext4 loop filesystem here (mkfs.ext4, loop devices)")
    dev = _run("findmnt", "-n", "-o", "SOURCE", str(state)).stdout.strip()
    trigger = Path("/sys/fs/ext4") / Path(dev).name / "trigger_fs_error"

    def make_read_only() -> None:
        trigger.write_text("injected by test_state_dir_becomes_read_only\n")

    try:
        if not trigger.exists():
            pytest.skip(f"{trigger} is missing: this kernel cannot inject an ext4 error")
        yield state, make_read_only
    finally:
        if _run("umount", str(state)).returncode != 0:
            _run("umount", "-l", str(state))
        if dev.startswith("/dev/loop"):
            _run("losetup", "-d", dev)


def _health(server) -> tuple[int, dict]:
    r = requests.get(server.url + "/guard/health", timeout=10)
    return r.status_code, r.json()


_wait = functools.partial(wait_until, interval=0.2)


def test_state_dir_becomes_read_only(artifacts, fragile_state):
    """The state directory's filesystem turns read-only under load: every prediction succeeds, and
    health says the drift store failed and why, while the service stays ready."""
    state, make_read_only = fragile_state
    X = np.load(artifacts / "reference.npz")["X_test"]
    env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_STATE_DIR": str(state),
           "GUARDED_DRIFT_INTERVAL_S": "0.2"}
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
        url = server.url + "/predict"
        first = drive(url, {"inputs": X[:4].tolist()}, seconds=2, concurrency=2)
        assert first.failures == 0
        stats = lambda: requests.get(server.url + "/guard/stats", timeout=10).json()["drift"]  # noqa: E731
        assert _wait(lambda: stats().get("pooled_rows", 0) > 0)
        assert _health(server)[1]["checks"]["drift.store"]["status"] == "ok"

        make_read_only()
        stop = threading.Event()
        results = []
        loader = threading.Thread(target=lambda: results.append(
            drive(url, {"inputs": X[:4].tolist()}, seconds=20, concurrency=2, stop=stop)))
        loader.start()
        try:
            failed = _wait(lambda: (lambda h: h[1]["checks"]["drift.store"]["status"] == "degraded" and h)(
                _health(server)))
        finally:
            stop.set()
            loader.join(30)
        assert failed, "health never reported the read-only state directory"
        code, report = failed
        store = report["checks"]["drift.store"]
        assert code == 200 and report["ready"] is True
        assert store["status"] == "degraded" and "Read-only file system" in store["reason"], store
        print("health while read-only:", store["reason"])
        assert str(state) in str(store["details"].get("store")), store
        assert results[0].failures == 0 and results[0].ok > 0
        more = drive(url, {"inputs": X[:1].tolist()}, seconds=1, concurrency=2)
        assert more.failures == 0 and more.ok > 0


def _committed(path) -> list[tuple[int, int, bytes]]:
    """(pos_end, n, data) of every committed input batch, read by a separate connection."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("PRAGMA busy_timeout=10000")
        return conn.execute("SELECT pos_end, n, data FROM batches WHERE stream=? ORDER BY pos_end",
                            (STREAM,)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the first worker is still creating the schema
            return []
        raise
    finally:
        conn.close()


def _workers(server) -> list[psutil.Process]:
    return [p for p in psutil.Process(server.proc.pid).children(recursive=True) if "worker" in " ".join(p.cmdline())]


def _check_store(db, before) -> int:
    """The store file is intact, keeps every batch in ``before``, positions have no gap; returns the total."""
    conn = sqlite3.connect(str(db))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        total = conn.execute("SELECT value FROM counters WHERE key=?", ("total:" + STREAM,)).fetchone()[0]
    finally:
        conn.close()
    after = _committed(db)
    assert set(before) <= set(after), "a batch committed before the kill is gone or changed"
    spans = [(pos - n, pos) for pos, n, _ in after]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])), "gap or overlap in stored positions"
    assert total == spans[-1][1]
    return int(total)


def test_sigkill_during_store_writes_loses_nothing_committed(artifacts, tmp_path):
    """Two workers flush to the store every 0.1 s under load. SIGKILL of one worker, then of the
    whole server, mid-write: no committed batch is lost or changed, the file stays intact with no
    gap in positions, and a restarted server pools on from the stored total."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    db = tmp_path / "state" / "drift-breast_cancer.sqlite"
    env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_STATE_DIR": str(db.parent),
           "GUARDED_DRIFT_INTERVAL_S": "0.1", "GUARDED_WORKERS": "2"}
    server = BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT)
    stop = threading.Event()
    try:
        server.start()
        workers = _workers(server)
        assert len(workers) == 2
        loader = threading.Thread(target=drive, args=(server.url + "/predict", {"inputs": X[:3].tolist()}),
                                  kwargs={"seconds": 40, "concurrency": 4, "stop": stop}, daemon=True)
        loader.start()
        assert _wait(lambda: db.exists() and len(_committed(db)) >= 20), "no writes reached the store"

        before = _committed(db)  # committed before the kill; writes go on until it
        time.sleep(0.2)
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)
        _check_store(db, before)
        n = len(_committed(db))
        assert _wait(lambda: len(_committed(db)) > n + 5), "writes stopped after one worker was killed"

        before = _committed(db)
        time.sleep(0.2)
        alive = _workers(server)
        server.kill(signal.SIGKILL)
        server.proc.wait(timeout=10)
        psutil.wait_procs(alive, timeout=10)
        assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        stop.set()
        server.stop()
    total = _check_store(db, before)

    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as again:
        assert drive(again.url + "/predict", {"inputs": X[:3].tolist()}, seconds=1, concurrency=2).failures == 0
        stats = lambda: requests.get(again.url + "/guard/stats", timeout=10).json()["drift"]  # noqa: E731
        assert _wait(lambda: stats().get("pooled_rows", 0) > total), "the restarted server did not pool on"
