"""Fault injection against the served example: tracing backends that vanish or never exist."""

from __future__ import annotations

import json
import threading
import time
import uuid

import numpy as np
import psutil
import pytest
import requests

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port
from load_tests.client import drive
from tests.conftest import ROOT
from tests.jaeger import PrivateJaeger, tags_of

pytestmark = pytest.mark.integration

SERVICE = "CancerClassifier"
GUARD_SPAN = "guard breast_cancer"


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def post(server, api, payload):
    return requests.post(f"{server.url}/{api}", data=json.dumps(payload, allow_nan=True),
                         headers={"content-type": "application/json"}, timeout=30)


def test_jaeger_stopped_mid_load(artifacts):
    """Jaeger stops during a load run: every prediction still succeeds, server RSS stays bounded,
    and guard spans arrive again once Jaeger is back."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    run_id = uuid.uuid4().hex[:12]
    mine = lambda s: s["processTags"].get("gs.test.run") == run_id  # noqa: E731
    with PrivateJaeger() as jaeger:
        env = {"GUARDED_ARTIFACT_DIR": str(artifacts), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": jaeger.traces_endpoint,
               "OTEL_RESOURCE_ATTRIBUTES": f"gs.test.run={run_id}", "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
            url = server.url + "/predict"
            before = drive(url, {"inputs": X[:1].tolist()}, seconds=4, concurrency=4)
            assert before.failures == 0 and before.ok > 0
            assert jaeger.query.wait_spans(SERVICE, lambda s: mine(s) and s["operationName"] == GUARD_SPAN)
            rss_before = tree_rss_mb(server.proc.pid)

            jaeger.stop()
            samples: list[float] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.5):
                    samples.append(tree_rss_mb(server.proc.pid))

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
            # The batch span processor's queue is bounded (2048 spans): spans are dropped, not hoarded.
            assert growth < 40, f"server RSS grew {growth:.1f} MB during the Jaeger outage ({outage.ok} calls)"

            jaeger.start()  # same ports, empty memory store: whatever arrives now was exported after the outage
            after = drive(url, {"inputs": X[:2].tolist()}, seconds=3, concurrency=2)
            assert after.failures == 0
            resumed = jaeger.query.wait_spans(
                SERVICE, lambda s: mine(s) and s["operationName"] == GUARD_SPAN
                and tags_of(s).get("guard.batch_size") == 2, timeout=60)
            assert resumed, f"no guard span reached Jaeger after it came back:\n{server.log_tail()}"
            health = requests.get(server.url + "/guard/health", timeout=10)
            assert health.status_code == 200 and health.json()["ready"] is True


def test_otlp_endpoint_closed_from_start(artifacts):
    """With the OTLP endpoint on a closed port from the start, the service serves normally:
    predictions succeed, failures are still 500s, health and stats answer."""
    X = np.load(artifacts / "reference.npz")["X_test"]
    closed = free_port()  # nothing listens here
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts),
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{closed}/v1/traces",
           "OTEL_BSP_SCHEDULE_DELAY": "100"}
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
    deadline = time.monotonic() + timeout
    while True:
        code, check = _sampler_check(server)
        if predicate(check) or time.monotonic() > deadline:
            return code, check
        time.sleep(0.2)


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
