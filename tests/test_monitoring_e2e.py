"""The example with two BentoML workers, scraped by a real Prometheus: /metrics, alerts and the dashboard."""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from guarded_serving.serving.process import BentoServer
from guarded_serving.testing import free_port, wait_until
from tests.browser import CHROMIUM, artifact_dir, screenshot
from tests.conftest import ROOT
from tests.prometheus import PROMETHEUS, LocalPrometheus

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (apt-get install prometheus)")]

RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "guarded-serving.json"
#: Metrics the dashboard and rules read that a later capability will export (performance).
#: The dashboard test asserts they are NOT on /metrics yet; once they are, remove them here.
NOT_YET_EXPORTED = ("guard_performance_realised", "guard_performance_estimated", "guard_performance_expected")


def scrape(server) -> dict[str, list]:
    """``/metrics`` as {sample name: [(labels, value), ...]}."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(samples, name, **labels) -> float:
    return sum(v for lab, v in samples.get(name, ()) if all(lab.get(k) == x for k, x in labels.items()))


def post(server, api, payload):
    # a fresh connection per call (no session): the kernel may hand it to either worker
    return requests.post(f"{server.url}/{api}", json=payload, timeout=30)


@pytest.fixture(scope="module")
def stack(artifacts, tmp_path_factory):
    """(server, prometheus, X): the example with GUARDED_WORKERS=2, and Prometheus scraping it every second.

    Prometheus loads alerts.yml with every ``for:`` shortened to 0s (a copy), so that an alert
    fires within the test; ``promtool test rules`` tests the real durations.
    """
    tmp = tmp_path_factory.mktemp("monitoring")
    rules = tmp / "alerts.yml"
    rules.write_text(re.sub(r"(?m)^(\s*)for: \S+$", r"\1for: 0s", RULES.read_text()))
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts), "GUARDED_WORKERS": "2",
           "GUARDED_METRICS_INTERVAL_S": "0.5", "GUARDED_DRIFT_INTERVAL_S": "1",
           "GUARDED_LATENCY_SLO_MS": "100", "GUARDED_STATE_DIR": str(tmp / "state")}
    X = np.load(artifacts / "reference.npz")["X_test"]
    with BentoServer("services.cancer:CancerClassifier", free_port(), env=env, cwd=ROOT) as server:
        host_port = server.url.split("//", 1)[1]
        with LocalPrometheus([host_port], [rules]) as prom:
            yield server, prom, X


class TestMonitoring:
    def test_metrics_count_calls_of_both_workers(self, stack):
        """With two workers, /metrics merges both: calls_total equals every call sent, split over two live pids."""
        server, _, X = stack
        rng = np.random.default_rng(1)
        sent = 0

        def call(rows):
            return post(server, "predict", {"inputs": rows.tolist()}).status_code

        def both_served() -> bool:
            nonlocal sent
            with ThreadPoolExecutor(4) as pool:  # concurrent connections: both workers' accept loops wake
                codes = list(pool.map(call, [X[rng.choice(len(X), size=5, replace=False)] for _ in range(12)]))
            assert codes == [200] * 12
            sent += 12
            per_pid = [v for _, v in scrape(server).get("guard_worker_calls", ())]
            return len(per_pid) == 2 and all(v > 0 for v in per_pid)

        assert wait_until(both_served, 120, 0.0), f"one worker served all {sent} calls"
        ok = wait_until(lambda: (lambda s: total(s, "guard_calls_total", outcome="ok") == sent
                                 and total(s, "guard_worker_calls") == sent)(scrape(server)), 30, 0.25)
        s = scrape(server)
        assert ok, (sent, s.get("guard_calls_total"), s.get("guard_worker_calls"))
        pids = {lab["pid"] for lab, _ in s["guard_worker_calls"]}
        assert len(pids) == 2
        assert total(s, "guard_call_duration_seconds_count", outcome="ok") == sent
        assert total(s, "guard_edge_rows_total") == 5 * sent
        # one status series per check, no per-request labels anywhere
        checks = {lab["check"] for lab, _ in s["guard_check_status"]}
        assert {"latency_slo", "model_errors", "integrity.artifacts", "hardware.memory"} <= checks
        assert all(set(lab) <= {"model", "version", "outcome", "le", "window", "check", "feature", "pid"}
                   for name, samples in s.items() if name.startswith("guard_") for lab, _ in samples)

    def test_prometheus_fires_the_fast_burn_alert_when_the_slo_breaks(self, stack):
        """Slow calls (250 ms against a 100 ms SLO) make Prometheus fire GuardSLOFastBurn, read from its API."""
        server, prom, X = stack
        up = wait_until(lambda: [t for t in prom.api("targets")["activeTargets"] if t["health"] == "up"], 30, 0.5)
        assert up, prom.api("targets")
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda _: post(server, "predict_chaos", {"inputs": X[:2].tolist(),
                                                                          "delay_ms": 250}).status_code, range(40)))
        assert codes == [200] * 40

        def firing():
            return [a for a in prom.alerts() if a["labels"]["alertname"] == "GuardSLOFastBurn"
                    and a["state"] == "firing"]

        alerts = wait_until(firing, 60, 0.5, until=bool)
        assert alerts, prom.alerts()
        a = alerts[0]
        assert a["labels"]["model"] == "breast_cancer" and a["labels"]["severity"] == "page"
        assert float(a["value"]) > 14.4
        if CHROMIUM is not None:  # Prometheus' alerts page (Debian ships the classic UI), kept as a test artifact
            page = requests.get(f"{prom.url}/classic/alerts", timeout=10)
            assert page.status_code == 200 and "GuardSLOFastBurn" in page.text
            screenshot(f"{prom.url}/classic/alerts", artifact_dir() / "prometheus-alerts.png", size=(1400, 1000))

    def test_every_dashboard_expression_returns_data(self, stack):
        """Each PromQL expression of the Grafana dashboard (panels, variables, annotations) returns series."""
        server, prom, X = stack
        odd = X[:5].copy()
        odd[1, 3] *= 1000  # an edge case, flagged
        assert post(server, "predict", {"inputs": odd.tolist()}).status_code == 200
        dash = json.loads(DASHBOARD.read_text())
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", ())]
        exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
        assert len(exprs) >= 20
        exported = scrape(server)
        empty = []
        for expr in exprs:
            q = expr.replace("$model", ".+")
            future = [m for m in NOT_YET_EXPORTED if m in q]
            if future:
                assert not any(n.startswith(future[0]) for n in exported), (
                    f"{future[0]} is exported now: take it out of NOT_YET_EXPORTED")
                assert prom.query(q) == []
                continue
            if not wait_until(lambda: prom.query(q), 30, 0.5):
                empty.append(expr)
        assert not empty, f"no data for: {empty}"
        # the model variable: label_values(guard_calls_total, model)
        var = next(v for v in dash["templating"]["list"] if v["name"] == "model")
        assert var["definition"] == "label_values(guard_calls_total, model)"
        with urllib.request.urlopen(f"{prom.url}/api/v1/label/model/values?match[]=guard_calls_total") as r:
            assert json.loads(r.read())["data"] == ["breast_cancer"]
