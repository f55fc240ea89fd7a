"""The main job: serve the guarded examples on embedded defaults, replay traffic, show what they caught.

    python -m services.demo [--port 3000] [--keep-serving] [--report build/report.html]
                            [--no-examples | --examples-only]

Trains the example model if its artifacts are missing, starts
``bentoml serve services.cancer:CancerClassifier`` on 127.0.0.1 with fault
injection on and traces exported over OTLP (to a receiver this script runs,
or to ``OTEL_EXPORTER_OTLP_ENDPOINT`` such as a local Jaeger when set), replays
every scenario of :mod:`services.replay`, and prints a table of what the guard
caught, then its stats and health. With ``--report``, the guard's health and stats are
sampled every second during the replay and ``guarded-serving report`` writes an HTML report
(plots embedded) from them, the drift store and the reference. Then it serves the image and
text examples (``services.digits:DigitClassifier``, ``services.sentiment:SentimentAnalyzer``,
both started at once) and replays their failures (:data:`services.replay.EXAMPLES`): edge
cases of each kind beside held-out inputs, and the text model's content check. Last, it serves
the song recommender (``services.recommender:SongService``, two workers pooling through one store)
and replays a feedback loop forming: the loop check's alarm must fire once the model is retrained on
its own plays, and not before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--keep-serving", action="store_true", help="leave the server up until Ctrl-C")
    ap.add_argument("--no-examples", action="store_true", help="only the tabular example")
    ap.add_argument("--examples-only", action="store_true", help="only the image and text examples")
    ap.add_argument("--report", type=Path, help="write an HTML report of the run here")
    args = ap.parse_args(argv)

    from guarded_serving.serving.process import BentoServer
    from guarded_serving.testing import OTLPReceiver, free_port
    from services import replay, train

    artifacts = Path(os.environ.get("GUARDED_ARTIFACT_DIR", train.DEFAULT_DIR))
    if not (artifacts / "model.pkl").exists():
        train.train(artifacts)
    if not args.no_examples:
        from services import train_digits, train_sentiment

        for mod, sub in ((train_digits, "digits"), (train_sentiment, "sentiment")):
            if not (artifacts / sub / "profile.npz").exists():
                mod.train(artifacts / sub)
    port = args.port or free_port()
    receiver = OTLPReceiver().__enter__()
    import tempfile

    state_dir = tempfile.TemporaryDirectory(prefix="gs-demo-state-")  # a fresh drift store each run
    import secrets

    token = secrets.token_hex(16)  # for POST /guard/feedback (the accuracy-drop scenario sends labels)
    env = {"GUARDED_CHAOS": "1", "GUARDED_ARTIFACT_DIR": str(artifacts), "OTEL_BSP_SCHEDULE_DELAY": "200",
           "GUARDED_STATE_DIR": state_dir.name, "GUARDED_DRIFT_INTERVAL_S": "1", "GUARDED_FEEDBACK_TOKEN": token}
    # operational health: a stand-in feature store the model depends on, probed by the guard
    from services.feature_store import FeatureStore

    feature_store = FeatureStore(free_port()).start()
    env.update({"GUARDED_PROBES": json.dumps([{"name": "feature_store", "url": feature_store.url}]),
                "GUARDED_PROBE_INTERVAL_S": "0.5", "GUARDED_PROBE_BACKOFF_MAX_S": "1"})
    external = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not external:
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.endpoint
    if args.examples_only:
        rows = run_examples(artifacts, env, receiver)
        rows += run_recommender(env)
        missed = [sc.name for sc, v in rows if not v.caught]
        print(f"\n{len(rows) - len(missed)}/{len(rows)} scenarios caught" + (f"; missed: {missed}" if missed else ""))
        receiver.__exit__(None, None, None)
        feature_store.stop()
        state_dir.cleanup()
        return 1 if missed else 0
    print(f"serving services.cancer:CancerClassifier on 127.0.0.1:{port} "
          f"(traces -> {external or receiver.endpoint})", flush=True)
    t0 = time.monotonic()
    with BentoServer("services.cancer:CancerClassifier", port, env=env, cwd=ROOT) as server:
        print(f"ready in {time.monotonic() - t0:.1f} s\n", flush=True)
        r = replay.Replay(server.url, artifacts, spans=lambda: list(receiver.spans), feedback_token=token)
        r.feature_store = feature_store  # type: ignore[attr-defined]  # for the downstream scenario
        sampler = _Sampler(server.url) if args.report else None
        rows = []
        for sc in replay.SCENARIOS:
            try:
                v = sc.run(r)
            except Exception as exc:  # a broken scenario is reported, not fatal
                v = replay.Verdict(False, f"scenario raised {type(exc).__name__}: {exc}")
            time.sleep(0.3)  # let the batch span processor export
            rows.append((sc, v))
            mark = "CAUGHT" if v.caught else "MISSED"
            print(f"[{mark}] {sc.name:<24} ({sc.failure})\n      {v.evidence}", flush=True)
        stats, health = r.stats(), r.health()
        if sampler is not None:
            _write_report(sampler.finish(), args.report, Path(state_dir.name), artifacts)
        # guard spans of anomalous calls, and server spans the ordinary calls annotated (span_mode auto)
        spans = [s for s in receiver.spans if "guard.latency_ms" in s["attributes"]]
        print("\nguard stats:", json.dumps(stats, indent=2))
        print("\nguard health:", health["status"], "ready" if health["ready"] else "NOT READY")
        for name, c in health["checks"].items():
            print(f"  - {name:<28} {c['status']:<11} {c['reason']}")
        if not external:
            by_outcome: dict[str, int] = {}
            for s in spans:
                o = s["attributes"].get("guard.outcome", "ok")  # an ordinary call's (compact span) is ok
                by_outcome[o] = by_outcome.get(o, 0) + 1
            own = sum(1 for s in spans if s["name"].startswith("guard "))
            print(f"\ncalls traced over OTLP: {len(spans)} {by_outcome} ({own} guard spans for anomalies, "
                  f"{len(spans) - own} ordinary calls on BentoML's server spans)")
        if not args.no_examples:
            rows += run_examples(artifacts, env, receiver)
            rows += run_recommender(env)
        missed = [sc.name for sc, v in rows if not v.caught]
        print(f"\n{len(rows) - len(missed)}/{len(rows)} scenarios caught" + (f"; missed: {missed}" if missed else ""))
        if args.keep_serving:
            print(f"serving on {server.url} until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    receiver.__exit__(None, None, None)
    feature_store.stop()
    state_dir.cleanup()
    return 1 if missed else 0


def _serve(target: str, env: dict[str, str], attempts: int = 3) -> Any:
    """``bentoml serve target`` on a free port; a port taken between choosing and binding it
    (servers starting side by side) is retried on another one."""
    from guarded_serving.serving.process import BentoServer
    from guarded_serving.testing import free_port

    for attempt in range(attempts):
        server = BentoServer(target, free_port(), cwd=ROOT, env=env)
        try:
            return server.start(timeout=120)
        except RuntimeError as exc:
            server.stop()
            if "Address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def run_examples(artifacts: Path, env: dict[str, str], receiver: Any) -> list[tuple[Any, Any]]:
    """Serve the image and text examples (started together), replay their scenarios, print what was caught."""
    from concurrent.futures import ThreadPoolExecutor

    from guarded_serving.testing import wait_until
    from services import replay

    print(f"\nserving {', '.join(ex.target for ex in replay.EXAMPLES)} (started together)", flush=True)
    t0 = time.monotonic()
    rows: list[tuple[Any, Any]] = []
    with ThreadPoolExecutor(len(replay.EXAMPLES)) as pool:
        started = [pool.submit(_serve, ex.target, {**env, ex.dir_env: str(artifacts / ex.subdir)})
                   for ex in replay.EXAMPLES]
    try:
        print(f"ready in {time.monotonic() - t0:.1f} s", flush=True)
        for ex, fut in zip(replay.EXAMPLES, started):
            try:
                server = fut.result()
            except Exception as exc:  # reported as missed, the demo goes on
                print(f"\n-- {ex.name}: bentoml serve failed: {str(exc)[-1500:]}", flush=True)
                rows += [(sc, replay.Verdict(False, "the server did not start")) for sc in ex.scenarios]
                continue
            print(f"\n-- {ex.name} ({ex.target} on {server.url}, POST /{ex.api})", flush=True)
            r = ex.replay(server.url, artifacts / ex.subdir, spans=lambda: list(receiver.spans))
            for sc in ex.scenarios:
                try:
                    v = sc.run(r)
                except Exception as exc:  # a broken scenario is reported, not fatal
                    v = replay.Verdict(False, f"scenario raised {type(exc).__name__}: {exc}")
                rows.append((sc, v))
                print(f"[{'CAUGHT' if v.caught else 'MISSED'}] {sc.name:<28} ({sc.failure})\n      {v.evidence}",
                      flush=True)
            st = r.stats()
            edge = st.get("edge_cases", {})
            out = f", output_check {st['output_check']}" if "output_check" in st else ""
            print(f"   guard stats: {st.get('calls', st.get('ok'))} calls, edge_cases rows {edge.get('rows')} "
                  f"flagged {edge.get('rows_flagged')}{out}", flush=True)
            want = edge.get("calls_flagged", 0)
            spans = wait_until(lambda: [s for s in receiver.spans if s["name"] == f"guard {ex.name}"
                                        and s["attributes"].get("guard.edge.flagged")], 5, 0.1,
                               until=lambda found: len(found) >= want)
            if spans:
                print(f"   {len(spans)} flagged '{spans[0]['name']}' spans exported over OTLP", flush=True)
    finally:
        for fut in started:
            if fut.exception() is None:
                fut.result().stop()
    return rows


def run_recommender(env: dict[str, str]) -> list[tuple[Any, Any]]:
    """Serve the song recommender (two workers) and replay a feedback loop forming."""
    import secrets
    import tempfile
    from types import SimpleNamespace

    from services import replay

    sc = replay.RECOMMENDER_SCENARIO
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="gs-demo-loops-") as state:
        renv = {**env, "GUARDED_STATE_DIR": state, "GUARDED_WORKERS": "2", "GUARDED_FEEDBACK_TOKEN": token,
                "GUARDED_RETRAIN_ON_PLAYS": "1", "GUARDED_LOOP_WINDOW": "100", "GUARDED_LOOP_INTERVAL_S": "0.3"}
        print("\nserving services.recommender:SongService (2 workers)", flush=True)
        try:
            server = _serve("services.recommender:SongService", renv)
        except Exception as exc:  # reported as missed, the demo goes on
            print(f"-- recommender: bentoml serve failed: {str(exc)[-1500:]}", flush=True)
            return [(sc, replay.Verdict(False, "the server did not start"))]
        try:
            print(f"-- recommender ({server.url}, POST /recommend, POST /plays)", flush=True)
            try:
                v = sc.run(SimpleNamespace(url=server.url, token=token))  # type: ignore[arg-type]
            except Exception as exc:  # a broken scenario is reported, not fatal
                v = replay.Verdict(False, f"scenario raised {type(exc).__name__}: {exc}")
            print(f"[{'CAUGHT' if v.caught else 'MISSED'}] {sc.name:<28} ({sc.failure})\n      {v.evidence}",
                  flush=True)
        finally:
            server.stop()
    return [(sc, v)]


class _Sampler:
    """Health and stats of the served guard every second, in a thread, until ``finish()``."""

    def __init__(self, url: str) -> None:
        import threading

        from guarded_serving.report import collect_samples

        self.stop = threading.Event()
        self.samples: list = []
        self.thread = threading.Thread(target=lambda: self.samples.extend(collect_samples(
            url, duration_s=3600, interval_s=1.0, quiet=True, stop=self.stop)), daemon=True)
        self.thread.start()

    def finish(self) -> list:
        self.stop.set()
        self.thread.join(timeout=30)
        return self.samples


def _write_report(samples: list, out: Path, state_dir: Path, artifacts: Path) -> None:
    from guarded_serving.drift.component import load_reference_npz
    from guarded_serving.report import Report, render_html
    from guarded_serving.store.sqlite import SQLiteWindowStore

    store = SQLiteWindowStore(state_dir / "drift-breast_cancer.sqlite")
    ref = load_reference_npz(artifacts / "reference.npz")
    doc = render_html(Report(samples, store=store, reference=ref["reference"],
                             feature_names=ref.get("feature_names")))
    store.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    print(f"\nreport: {out} ({len(samples)} samples, {len(doc) / 1024:.0f} KiB)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
