"""The Prometheus rules and the Grafana dashboard, checked by Prometheus' own promtool."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT
from tests.prometheus import PROMTOOL

MONITORING = ROOT / "monitoring"
RULES = MONITORING / "prometheus" / "alerts.yml"
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (Debian: apt-get install prometheus)")

#: What the rules must cover (issue 13): every alert by name.
ALERTS = ("GuardSLOFastBurn", "GuardSLOSlowBurn", "GuardModelErrors", "GuardCheckFailing", "GuardIntegrityFailure",
          "GuardEdgeCaseRateHigh", "GuardFeatureDrift", "GuardSequentialDriftAlarm",
          "GuardPerformanceBelowExpectation")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120)


@needs_promtool
class TestPromtool:
    def test_rules_are_valid(self):
        """promtool check rules accepts alerts.yml."""
        res = promtool("check", "rules", RULES.name)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout

    @pytest.mark.parametrize("tests", sorted(p.name for p in (MONITORING / "prometheus").glob("*_test.yml")))
    def test_rule_unit_tests_pass(self, tests):
        """promtool test rules runs the rules' unit tests (alerts fire when, and only when, they should)."""
        res = promtool("test", "rules", tests)
        assert res.returncode == 0, res.stdout + res.stderr


class TestCoverage:
    def test_every_alert_is_defined_and_unit_tested(self):
        """Each alert the issue names exists in alerts.yml and appears in a promtool test."""
        rules = RULES.read_text()
        tests = "".join(p.read_text() for p in (MONITORING / "prometheus").glob("*_test.yml"))
        for name in ALERTS:
            assert f"alert: {name}\n" in rules
            assert re.search(rf"alertname: {name}\b", tests), name

    def test_dashboard_is_a_grafana_model_over_guard_metrics(self):
        """The dashboard parses, every panel target has a refId and reads a guard metric or recording rule."""
        dash = json.loads((MONITORING / "grafana" / "guarded-serving.json").read_text())
        assert dash["uid"] == "guarded-serving" and dash["schemaVersion"] >= 36
        targets = [t for p in dash["panels"] for t in p.get("targets", ())]
        assert targets and all(t["refId"] and re.search(r"\bguard(_|:)", t["expr"]) for t in targets)
        titles = " ".join(p["title"].lower() for p in dash["panels"])
        for topic in ("latency", "burn rate", "check status", "edge-case rate", "drift", "performance"):
            assert topic in titles, topic
