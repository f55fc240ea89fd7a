"""guarded-serving report: one self-contained HTML file with plots, from samples of health/stats and the store."""

from __future__ import annotations

import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from guarded_serving._progress import Progress
from guarded_serving.cli import main as cli_main
from guarded_serving.report import Report, render_html
from guarded_serving.store.sqlite import SQLiteWindowStore
from tests.browser import CHROMIUM, artifact_dir, dump_dom, screenshot

NAMES = ["a", "b", "c"]


def sample(t, calls, *, status="ok", p99=20.0, drifted=False, performance=None):
    stats = {"model": "m", "version": "1", "calls": calls, "ok": calls, "errors": 0, "invalid_inputs": 0,
             "rejected": 0, "slo_violations": 0,
             "latency_ms": {"p50": 5.0, "p95": 10.0, "p99": p99, "max": p99, "slo": 100.0},
             "burn_rate": {"300s": 0.5, "3600s": 0.2},
             "edge_cases": {"fpr": 0.01, "flag_rate": 0.02},
             "drift": {"features": {"a": {"p_value": 1e-6 if drifted else 0.5, "effect": 0.9 if drifted else 0.01,
                                          "drifted": drifted},
                                    "b": {"p_value": 0.3, "effect": 0.05, "drifted": False}},
                       "sequential": {"n": 10, "log10_capital": 0.4, "threshold_log10": 2.0, "alarm": False}}}
    if performance is not None:
        stats["performance"] = performance
    health = {"status": status, "ready": status != "failing",
              "checks": {"latency_slo": {"status": status, "reason": "budget"},
                         "drift.features": {"status": "degraded" if drifted else "ok", "reason": "window"}}}
    return {"t": t, "health": health, "stats": stats}


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(0)
    st = SQLiteWindowStore(tmp_path / "drift-m.sqlite")
    for i in range(5):
        x = rng.normal(size=(40, 3))
        x[:, 0] += 2.0  # feature a moved
        st.append("m:inputs", x)
        st.append("m:p_values", rng.uniform(size=(40, 1)))
    yield st
    st.close()


@pytest.fixture
def samples():
    return [sample(1_800_000_000 + 5 * i, 10 * i, status="degraded" if i > 6 else "ok", p99=20.0 + 30 * (i > 6),
                   drifted=i > 5) for i in range(10)]


def reference():
    return np.random.default_rng(1).normal(size=(300, 3))


class TestReport:
    def test_html_is_self_contained_with_one_plot_per_section(self, samples, store):
        """Every plot is an embedded PNG; nothing is loaded from elsewhere (no scripts, links, remote images)."""
        doc = render_html(Report(samples, store=store, reference=reference(), feature_names=NAMES))
        imgs = re.findall(r'<img [^>]*src="([^"]+)"', doc)
        assert len(imgs) == 4 and all(s.startswith("data:image/png;base64,") for s in imgs)
        assert "<script" not in doc and "<link" not in doc and "http://" not in doc and "https://" not in doc
        for section in ("latency", "health", "drift", "edge", "performance"):
            assert f'<section id="{section}">' in doc
        assert "1 feature(s) drifted" in doc
        assert "no performance capability yet" in doc

    def test_drift_section_plots_the_drifted_features(self, samples, store):
        """The drift section draws reference vs current for the features that drifted."""
        r = Report(samples, store=store, reference=reference(), feature_names=NAMES)
        fig, text = r.drift()
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert len(titles) == 1 and titles[0].startswith("a\n")
        assert "200 current rows" in text and "300 reference rows" in text

    def test_edge_rate_comes_from_the_store(self, samples, store):
        """The edge-case rate counts the store's p-values at or below edge_fpr, against the expected level."""
        _, text = Report(samples, store=store, reference=reference(), feature_names=NAMES).edge_rate()
        assert re.search(r"\d+ of 200 rows in the store flagged", text) and "expected about 1.0%" in text

    def test_performance_is_plotted_when_stats_carry_it(self, store):
        """Stats with realised and estimated performance get a plot instead of the note."""
        perf = {"realised": {"accuracy": 0.9}, "estimated": {"accuracy": 0.92}}
        s = [sample(1_800_000_000 + i, i, performance=perf) for i in range(3)]
        fig, text = Report(s).performance()
        assert fig is not None and len(fig.axes[0].lines) == 2

    def test_without_store_the_report_still_renders(self, samples):
        """With samples only, drift says what is missing and the edge rate comes from the stats."""
        doc = render_html(Report(samples))
        assert "No store or reference given" in doc and "Flag rate from the sampled stats" in doc


class StubGuard(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self):  # noqa: N802 - http.server API
        StubGuard.calls += 1
        s = sample(1_800_000_000, StubGuard.calls)
        body = json.dumps(s["health"] if self.path == "/guard/health" else s["stats"]).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class TestCommand:
    def test_report_samples_a_served_guard_and_records(self, tmp_path, store):
        """--url samples /guard/health and /guard/stats (duration // interval + 1 times) and --record keeps them."""
        srv = ThreadingHTTPServer(("127.0.0.1", 0), StubGuard)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            out, rec = tmp_path / "r.html", tmp_path / "s.jsonl"
            assert cli_main(["report", "--url", f"http://127.0.0.1:{srv.server_port}", "--duration", "1",
                             "--interval", "0.5", "--record", str(rec), "-o", str(out), "--quiet"]) == 0
        finally:
            srv.shutdown()
        assert len(rec.read_text().splitlines()) == 3
        assert out.read_text().startswith("<!doctype html>")

    def test_report_from_recorded_samples_store_and_reference(self, tmp_path, samples, store):
        """--samples, --store and --reference build the full report without a server."""
        rec = tmp_path / "s.jsonl"
        rec.write_text("".join(json.dumps(s) + "\n" for s in samples))
        ref = tmp_path / "ref.npz"
        np.savez(ref, reference=reference(), feature_names=np.array(NAMES))
        out = tmp_path / "r.html"
        assert cli_main(["report", "--samples", str(rec), "--store", str(store.path), "--reference", str(ref),
                         "-o", str(out), "--quiet"]) == 0
        assert out.read_text().count("data:image/png;base64,") == 4

    def test_missing_store_is_an_error_naming_it(self, tmp_path, samples):
        """A --store that does not exist is refused with its path."""
        rec = tmp_path / "s.jsonl"
        rec.write_text(json.dumps(samples[0]) + "\n")
        with pytest.raises(Exception, match="nope.sqlite"):
            cli_main(["report", "--samples", str(rec), "--store", str(tmp_path / "nope.sqlite"), "-o",
                      str(tmp_path / "r.html")])


class TestProgress:
    def test_bar_shows_fraction_and_detail(self):
        """With a total the bar fills and shows the percentage; close() ends the line."""
        buf = io.StringIO()
        bar = Progress(4, "job", stream=buf)
        bar.update(2, "2 of 4", force=True)
        bar.update(4, "done", force=True)
        bar.close()
        text = buf.getvalue()
        assert "[###############---------------]  50.0% 2 of 4" in text and "100.0% done" in text
        assert text.endswith("\n")

    def test_quiet_draws_nothing(self):
        buf = io.StringIO()
        bar = Progress(4, "job", quiet=True, stream=buf)
        bar.update(4, force=True)
        bar.close()
        assert buf.getvalue() == ""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_chromium(tmp_path, samples, store):
    """Headless Chromium renders the report: every section title and every image decodes (a screenshot is kept)."""
    out = tmp_path / "report.html"
    out.write_text(render_html(Report(samples, store=store, reference=reference(), feature_names=NAMES)))
    dom = dump_dom(out.as_uri(), budget_ms=3000)
    for title in ("Latency against the SLO", "Health checks over time", "Drift: reference vs current",
                  "Edge-case rate", "Performance: realised vs estimated"):
        assert title in dom
    shot = screenshot(out.as_uri(), artifact_dir() / "report.png", size=(1200, 3000), budget_ms=3000)
    assert shot.stat().st_size > 50_000  # the plots drew
