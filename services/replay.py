"""Traffic replay for the demo: one scenario per failure the guard catches.

Each scenario sends real HTTP traffic to a served example and returns a
:class:`Verdict` saying whether the guard caught the failure, with evidence
read back from the guard (``/guard/stats``, ``/guard/health``) and from the
spans it exported. Capabilities add their failure here by appending to
``SCENARIOS``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import requests

from guarded_serving.testing import wait_until

__all__ = ["EXAMPLES", "RECOMMENDER_SCENARIO", "SCENARIOS", "Example", "ExampleReplay", "Replay", "Scenario",
           "Verdict", "recommender_loop"]


@dataclass
class Verdict:
    caught: bool
    evidence: str


@dataclass
class Replay:
    """What a scenario gets: the server's URL, an HTTP session, the reference data."""

    url: str
    artifacts: Path
    spans: Callable[[], list[dict[str, Any]]] = lambda: []
    session: requests.Session = field(default_factory=requests.Session)
    feedback_token: str = ""  # the server's GUARDED_FEEDBACK_TOKEN

    def __post_init__(self) -> None:
        ref = np.load(self.artifacts / "reference.npz")
        self.X_test = ref["X_test"]
        self.X_train = ref["X_train"]
        self.feature_names = [str(n) for n in ref["feature_names"]]

    def post(self, api: str, payload: dict[str, Any]) -> requests.Response:
        return self.session.post(f"{self.url}/{api}", json=payload, timeout=30)

    def predict(self, rows: np.ndarray | list, **extra: Any) -> requests.Response:
        rows = rows.tolist() if isinstance(rows, np.ndarray) else rows
        return self.post("predict", {"inputs": rows, **extra})

    def stats(self) -> dict[str, Any]:
        return self.session.get(f"{self.url}/guard/stats", timeout=10).json()

    def health(self) -> dict[str, Any]:
        return self.session.get(f"{self.url}/guard/health", timeout=10).json()

    def wait_spans(self, predicate: Callable[[dict[str, Any]], bool], count: int,
                   timeout: float = 5.0) -> list[dict[str, Any]]:
        """Spans matching ``predicate``, waiting up to ``timeout`` s for ``count`` (export is batched)."""
        return wait_until(lambda: [s for s in self.spans() if predicate(s)], timeout, 0.1,
                          until=lambda found: len(found) >= count)


@dataclass
class Scenario:
    name: str
    failure: str
    run: Callable[[Replay], Verdict]


# -- scenarios -------------------------------------------------------------------------

def normal_traffic(r: Replay) -> Verdict:
    before = r.stats()
    ok = sum(r.predict(r.X_test[i:i + 4]).status_code == 200 for i in range(0, 120, 4))
    after = r.stats()
    served = after["ok"] - before["ok"]
    return Verdict(ok == 30 and served == 30,
                   f"{ok}/30 batches answered 200; guard counted {served} ok calls, "
                   f"p50 {after['latency_ms']['p50']:.2f} ms")


def slow_calls(r: Replay) -> Verdict:
    before = r.stats()
    slo = before["latency_ms"]["slo"]
    for _ in range(3):
        r.post("predict_chaos", {"inputs": r.X_test[:1].tolist(), "delay_ms": slo * 2})
    after = r.stats()
    n = after["slo_violations"] - before["slo_violations"]
    slow = r.wait_spans(lambda s: s["attributes"].get("guard.slo.violated") is True, 3)
    causes = sorted({str(s["attributes"].get("guard.latency.cause")) for s in slow})
    return Verdict(n == 3, f"{n} calls over the {slo:g} ms budget counted as SLO violations; "
                   f"max latency {after['latency_ms']['max']:.0f} ms; {len(slow)} slow spans exported "
                   f"(guard.latency.cause: {', '.join(causes) or 'n/a'})")


def slowing_model(r: Replay, n: int = 200, top_ms: float = 80.0) -> Verdict:
    """The model itself gets slower call after call (0 -> ``top_ms`` ms of added delay over ``n`` calls), still
    within its budget: the trend test names it (``runtime.latency_trend``) before any call breaches the SLO."""
    slo = r.stats()["latency_ms"]["slo"]
    for i in range(n):
        r.post("predict_chaos", {"inputs": r.X_test[i % 50:i % 50 + 1].tolist(), "delay_ms": top_ms * i / n})

    def degraded() -> dict[str, Any] | None:
        c = r.health()["checks"].get("runtime.latency_trend")
        return c if c and c["status"] == "degraded" else None

    check = wait_until(degraded, 15.0, 0.5)  # tested on the hardware sampler's tick (5 s)
    if not check:
        c = r.health()["checks"].get("runtime.latency_trend") or {}
        return Verdict(False, f"runtime.latency_trend {c.get('status')}: {c.get('reason')}")
    return Verdict(True, f"{n} calls ramping 0 -> {top_ms:g} ms under the {slo:g} ms budget: "
                         f"runtime.latency_trend degraded: {check['reason']}")


def model_errors(r: Replay) -> Verdict:
    before = r.stats()
    codes = [r.post("predict_chaos", {"inputs": r.X_test[:1].tolist(), "fail": True}).status_code
             for _ in range(2)]
    after = r.stats()
    n = after["errors"] - before["errors"]
    errs = r.wait_spans(lambda s: s["attributes"].get("error.type") == "RuntimeError", 2)
    return Verdict(n == 2, f"model raised twice (HTTP {codes}); guard counted {n} errors; "
                   f"{len(errs)} spans with error.type=RuntimeError")


def bad_input(r: Replay) -> Verdict:
    row = r.X_test[0].tolist()
    cases = {
        "NaN": {"inputs": [row[:-1] + [float("nan")]]},
        "inf": {"inputs": [[1e999] + row[1:]]},
        "wrong shape": {"inputs": [row[:3]]},
        "wrong type": {"inputs": "not a matrix"},
        "empty batch": {"inputs": []},
    }
    before = r.stats()
    lines, codes = [], []
    for name, payload in cases.items():
        resp = r.session.post(f"{r.url}/predict", data=_json_allow_nan(payload),
                              headers={"content-type": "application/json"}, timeout=10)
        codes.append(resp.status_code)
        lines.append(f"{name} -> {resp.status_code} {resp.text[:90]}")
    after = r.stats()
    counted = after["invalid_inputs"] - before["invalid_inputs"]
    ok = all(400 <= c < 500 for c in codes)
    return Verdict(ok, f"all 4xx, {counted} counted as invalid input (apart from model errors):\n      "
                   + "\n      ".join(lines))


def _artifact_copy(r: Replay, dest: Path) -> Path:
    """Copy the served model's artifacts to ``dest`` and write their manifest there."""
    import shutil

    from services import train

    dest.mkdir(parents=True)
    for name in ("model.pkl", "reference.npz"):
        shutil.copy2(r.artifacts / name, dest / name)
    train.write_manifest(dest)
    return dest


def _second_server(artifacts: Path, **env: str) -> Any:
    from guarded_serving.serving.process import BentoServer
    from guarded_serving.testing import free_port

    root = Path(__file__).resolve().parent.parent
    return BentoServer("services.cancer:CancerClassifier", free_port(), cwd=root,
                       env={"GUARDED_ARTIFACT_DIR": str(artifacts), **env})


def tampered_artifact(r: Replay) -> Verdict:
    """A second server on a copy of the artifacts with one byte of the model flipped must refuse to start."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gs-demo-integrity-") as tmp:
        d = _artifact_copy(r, Path(tmp) / "artifacts")
        with open(d / "model.pkl", "r+b") as fh:
            fh.seek(100)
            b = fh.read(1)
            fh.seek(100)
            fh.write(bytes([b[0] ^ 0xFF]))
        server = _second_server(d)
        try:
            server.start(timeout=90)
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if "model.pkl: modified" in ln]
            return Verdict(bool(lines), "a second bentoml serve on the tampered copy refused to start:\n      "
                           + (lines[0] if lines else str(exc)[-300:]).replace(", found", ",\n      found"))
        finally:
            server.stop()
        return Verdict(False, "a server started on a model file with a flipped byte")


def replaced_artifact(r: Replay) -> Verdict:
    """A second server on a good copy; an older model copied over its model file must make it not ready."""
    import shutil
    import tempfile

    from services import train

    with tempfile.TemporaryDirectory(prefix="gs-demo-integrity-") as tmp:
        d = _artifact_copy(r, Path(tmp) / "artifacts")
        old = train.train(Path(tmp) / "older", seed=1)
        with _second_server(d, GUARDED_INTEGRITY_INTERVAL_S="0.5") as server:
            s = requests.Session()
            ready_before = s.get(f"{server.url}/readyz", timeout=10).status_code
            shutil.copy(old / "model.pkl", d / "model.pkl")
            code = wait_until(lambda: s.get(f"{server.url}/readyz", timeout=10).status_code, 30, 0.2,
                              until=lambda got: got == 503)
            check = s.get(f"{server.url}/guard/health", timeout=10).json()["checks"]["integrity.artifacts"]
        return Verdict(ready_before == 200 and code == 503,
                       f"/readyz {ready_before} -> {code} after an older model was copied over model.pkl "
                       f"while serving:\n      integrity.artifacts {check['status']}: {check['reason'][:160]}")


def dependency_mismatch(r: Replay) -> Verdict:
    """A deployment whose environment differs from the pinned one: health names the package, /readyz 503."""
    import json

    pins = {"numpy": "1.0.0", "scikit-learn": None}  # numpy pinned to a version that is not installed
    server = _second_server(r.artifacts, GUARDED_DEPENDENCIES=json.dumps(pins))
    try:
        server.start(timeout=90, ready_status=503)  # it starts, but must not report ready
        s = requests.Session()
        ready = s.get(f"{server.url}/readyz", timeout=10).status_code
        check = s.get(f"{server.url}/guard/health", timeout=10).json()["checks"].get("dependency.numpy", {})
        served = s.post(f"{server.url}/predict", json={"inputs": r.X_test[:1].tolist()}, timeout=30).status_code
    finally:
        server.stop()
    return Verdict(ready == 503 and check.get("status") == "failing",
                   f"a second server pinned to numpy==1.0.0: /readyz {ready}; dependency.numpy "
                   f"{check.get('status')}: {check.get('reason')}; /predict still answered {served}")


def downstream_outage(r: Replay) -> Verdict:
    """Stop the feature store the model depends on; the guard must report it and turn not ready, then recover."""
    fs = getattr(r, "feature_store", None)
    if fs is None:
        return Verdict(False, "no feature store was started for this replay (see services/demo.py)")
    check = "downstream.feature_store"

    def wait_for(status: str, ready_code: int, timeout: float = 20.0) -> tuple[dict[str, Any], int]:
        def probe() -> tuple[dict[str, Any], int]:
            return r.health()["checks"].get(check, {}), r.session.get(f"{r.url}/readyz", timeout=10).status_code

        return wait_until(probe, timeout, 0.2, until=lambda got: got[0].get("status") == status
                          and got[1] == ready_code)

    before, _ = wait_for("ok", 200)
    fs.stop()
    t0 = time.monotonic()
    try:
        down, down_code = wait_for("failing", 503)
        caught_s = time.monotonic() - t0
        served = r.predict(r.X_test[:2]).status_code
    finally:
        fs.start()
    t1 = time.monotonic()
    back, back_code = wait_for("ok", 200)
    caught = before.get("status") == "ok" and down.get("status") == "failing" and down_code == 503 \
        and back.get("status") == "ok" and back_code == 200
    return Verdict(caught, f"feature store stopped: {check} {down.get('status')} after {caught_s:.1f} s "
                   f"({down.get('reason')}); /readyz {down_code}; /predict still answered {served}; "
                   f"restarted: {back.get('status')} after {time.monotonic() - t1:.1f} s, /readyz {back_code}")


def edge_case(r: Replay) -> Verdict:
    """A unit error (x1000) on one feature of one row: served, flagged, explained."""
    rows = r.X_test[:4].copy()
    j = r.feature_names.index("mean_area") if "mean_area" in r.feature_names else 3
    rows[1, j] *= 1000
    before = r.stats().get("edge_cases", {})
    resp = r.predict(rows)
    after = r.stats().get("edge_cases", {})
    verdict = resp.headers.get("X-Guard-Edge", "")
    reason = resp.headers.get("X-Guard-Edge-Reason", "")
    flagged = after.get("rows_flagged", 0) - before.get("rows_flagged", 0)
    spans = [s for s in r.spans() if s["attributes"].get("guard.edge.flagged")]
    caught = resp.status_code == 200 and verdict.startswith("flagged") and "rows=1" in verdict \
        and r.feature_names[j] in reason
    return Verdict(caught, f"HTTP {resp.status_code}, X-Guard-Edge: {verdict!r}; {flagged} row flagged; "
                   f"{len(spans)} edge spans exported\n      reason: {reason[:200]}")


def _json_allow_nan(payload: dict[str, Any]) -> str:
    import json

    return json.dumps(payload, allow_nan=True)


def shifted_stream(r: Replay) -> Verdict:
    """A feature offset by +2 training std: caught as drift (and skew) with the feature named in /guard/health."""
    j = r.feature_names.index("mean_radius")
    Z = r.X_train[:400].copy()
    Z[:, j] += 2 * r.X_train[:, j].std()
    codes = {r.predict(Z[i:i + 8]).status_code for i in range(0, len(Z), 8)}

    def named_in(feats: dict[str, Any]) -> bool:
        return "mean_radius" in feats.get("details", {}).get("drifted", [])

    feats = wait_until(lambda: r.health()["checks"].get("drift.features", {}), 20, 0.5, until=named_in)
    skew = r.health()["checks"].get("drift.skew", {})
    named = named_in(feats)
    return Verdict(codes == {200} and named,
                   f"drift.features {feats.get('status')}: {feats.get('reason', 'no drift check')}\n      "
                   f"drift.skew {skew.get('status')}: {skew.get('reason', '')}")


def accuracy_drop(r: Replay, n_good: int = 1500, n_bad: int = 3000, rows: int = 5, seed: int = 0) -> Verdict:
    """Accuracy drops from 0.97 to 0.90 while 30% of labels arrive an hour (simulated) late: the
    expectation check (accuracy >= 0.95, anytime-valid) turns degraded, naming the figures.

    Simulated time: one request of ``rows`` loans every 3 s; the world's outcome agrees with the
    model with probability 0.97, then 0.90 (the relation between inputs and labels changed, which the
    label-free estimate cannot see); 70% of outcomes are known a minute later, 30% an hour later.
    Events are replayed in simulated-time order; labels go to POST /guard/feedback in bulk.
    """
    rng = np.random.default_rng(seed)
    auth = {"Authorization": f"Bearer {r.feedback_token}"}
    n_req = (n_good + n_bad) // rows
    labels_due: list[tuple[float, int, dict[str, Any]]] = []  # (simulated time due, 1, feedback item)
    t_change = 3.0 * (n_good // rows)
    sent = answered = 0
    caught_at: float | None = None
    pending: list[dict[str, Any]] = []
    for k in range(n_req):
        now = 3.0 * k
        # labels whose (simulated) time has come, in bulk
        due = [x for x in labels_due if x[0] <= now]
        labels_due = [x for x in labels_due if x[0] > now]
        pending += [x[2] for x in due]
        if len(pending) >= 50:
            resp = r.session.post(f"{r.url}/guard/feedback", json={"items": pending}, headers=auth, timeout=30)
            sent += sum(len(x["label"]) for x in pending)
            answered += resp.json().get("kept", 0) if resp.status_code in (200, 422) else 0
            pending = []
            if caught_at is None and now > t_change:
                chk = r.health()["checks"].get("performance.accuracy", {})
                if chk.get("status") == "degraded":
                    caught_at = now
        i = int(rng.integers(len(r.X_test) - rows))
        out = r.predict(r.X_test[i:i + rows]).json()
        acc = 0.97 if now < t_change else 0.90
        truth = [int(p) if rng.random() < acc else 1 - int(p) for p in out["label"]]
        delay = 3600.0 if rng.random() < 0.3 else 60.0
        labels_due.append((now + delay, 1, {"request_id": out["request_id"], "label": truth}))
    rest = pending + [x[2] for x in sorted(labels_due, key=lambda x: x[0])]
    for i in range(0, len(rest), 500):
        resp = r.session.post(f"{r.url}/guard/feedback", json={"items": rest[i:i + 500]}, headers=auth, timeout=30)
        sent += sum(len(x["label"]) for x in rest[i:i + 500])
        answered += resp.json().get("kept", 0) if resp.status_code in (200, 422) else 0
    # every label judged and counted (coverage and counts are refreshed every few seconds)
    checks = wait_until(lambda: r.health()["checks"], 30, 0.2,
                        until=lambda c: f"on all {sent})" in c.get("performance.accuracy", {}).get("reason", "")
                        and c.get("performance.feedback", {}).get("details", {}).get("labels", 0) >= sent)
    chk = checks.get("performance.accuracy", {})
    est = checks.get("performance.estimate", {})
    when = (f"caught {(caught_at - t_change) / 60:.0f} simulated minutes after the drop" if caught_at is not None
            else "caught once the late labels arrived")
    return Verdict(chk.get("status") == "degraded" and answered == sent,
                   f"{answered}/{sent} labels kept; {when}\n      "
                   f"performance.accuracy {chk.get('status')}: {chk.get('reason', 'no check')}\n      "
                   f"performance.estimate {est.get('status')}: {est.get('reason', '')}")



def client_attacks(r: Replay) -> Verdict:
    """What a hostile or careless client sends must not take the service down: unknown routes,
    absurd values in a low-variance feature (sent as text/plain, as a web page could), an oversized
    body. All 4xx, none counted as a model error, /readyz stays 200."""
    import json as _json

    before = r.stats()
    unknown = [r.session.post(f"{r.url}/predict_{i % 7}x", json={"inputs": []}, timeout=10).status_code
               for i in range(50)]
    j = int(np.argmin(r.X_train.std(axis=0)))
    row = r.X_test[0].tolist()
    row[j] = 1e308
    absurd = [r.session.post(f"{r.url}/predict", data=_json.dumps({"inputs": [row]}),
                             headers={"Content-Type": "text/plain"}, timeout=10) for _ in range(40)]
    big = r.session.post(f"{r.url}/predict", data=b"[" + b"0," * 5_000_000 + b"0]",
                         headers={"Content-Type": "application/json"}, timeout=30)
    ready = r.session.get(f"{r.url}/readyz", timeout=10).status_code
    after = r.stats()
    errors = after["errors"] - before["errors"]
    ok = (all(c == 404 for c in unknown) and all(a.status_code == 400 for a in absurd)
          and big.status_code == 413 and ready == 200 and errors == 0)
    return Verdict(ok, f"50 unknown routes -> {sorted(set(unknown))}; 40 text/plain bodies with 1e308 in "
                   f"{r.feature_names[j]} -> {sorted({a.status_code for a in absurd})} "
                   f"({absurd[0].text[:80]}); a 10 MB body -> {big.status_code} ({big.text[:60]}); "
                   f"model errors counted {errors}; /readyz {ready}")

SCENARIOS: list[Scenario] = [
    Scenario("normal traffic", "baseline", normal_traffic),
    Scenario("slow model calls", "operational: latency SLO breach", slow_calls),
    Scenario("model slowing down", "operational: the model's own latency creeps up", slowing_model),
    Scenario("model raises", "software: model error", model_errors),
    Scenario("malformed input", "input: NaN, inf, shape, type, empty", bad_input),
    Scenario("hostile client", "operational: client errors must not flip readiness", client_attacks),
    Scenario("tampered model file", "deployment: artifact differs from manifest", tampered_artifact),
    Scenario("model swapped in place", "deployment: older model while serving", replaced_artifact),
    Scenario("dependency mismatch", "software: installed package differs from the pin", dependency_mismatch),
    Scenario("feature store down", "software: downstream component outage", downstream_outage),
    Scenario("edge case", "ML: input unlike the training data (unit error x1000)", edge_case),
    Scenario("shifted stream", "data: distribution shift / train-serving skew", shifted_stream),
    Scenario("accuracy drop", "ML: accuracy 0.97 -> 0.90, 30% of labels an hour late", accuracy_drop),
]


# -- the image and text examples -------------------------------------------------------------
# Each example is served by its own `bentoml serve`; its scenarios get an ExampleReplay.

@dataclass
class ExampleReplay:
    """What an example's scenario gets: the server's URL, its API, an HTTP session, its clean data."""

    url: str
    api: str
    field: str
    clean: Any  # held-out inputs like the training data (images, or texts)
    edge_cases: dict[str, Any]
    spans: Callable[[], list[dict[str, Any]]] = lambda: []
    session: requests.Session = field(default_factory=requests.Session)

    def send(self, inputs: Any) -> requests.Response:
        inputs = inputs.tolist() if isinstance(inputs, np.ndarray) else list(inputs)
        return self.session.post(f"{self.url}/{self.api}", json={self.field: inputs}, timeout=30)

    def stats(self) -> dict[str, Any]:
        return self.session.get(f"{self.url}/guard/stats", timeout=10).json()

    def health(self) -> dict[str, Any]:
        return self.session.get(f"{self.url}/guard/health", timeout=10).json()


def flagged_rows(resp: requests.Response) -> set[int]:
    """Rows named by ``X-Guard-Edge: flagged; rows=0,3; ...`` (empty for ``ok`` or no header)."""
    verdict = resp.headers.get("X-Guard-Edge", "")
    for part in verdict.split(";"):
        part = part.strip()
        if part.startswith("rows="):
            return {int(r) for r in part[5:].split(",") if r}
    return set()


def _concat(a: Any, b: Any) -> Any:
    return np.concatenate([a, b]) if isinstance(a, np.ndarray) else list(a) + list(b)


def example_clean(r: ExampleReplay, batches: int = 20, size: int = 8) -> Verdict:
    """Held-out inputs in batches: answered, and (almost) never flagged."""
    codes, flagged, n = [], 0, 0
    for i in range(batches):
        rows = r.clean[(i * size) % len(r.clean):(i * size) % len(r.clean) + size]
        resp = r.send(rows)
        codes.append(resp.status_code)
        flagged += len(flagged_rows(resp))
        n += len(rows)
    ok = codes.count(200)
    return Verdict(ok == batches and flagged <= max(2, 0.05 * n),
                   f"{ok}/{batches} batches answered 200; {flagged}/{n} held-out rows flagged "
                   f"(target false-positive rate {r.stats().get('edge_cases', {}).get('fpr', 0.01):g})")


def example_edge(kind: str, n_clean: int = 4, n_edge: int = 8) -> Callable[[ExampleReplay], Verdict]:
    """A batch of ``n_clean`` held-out rows then ``n_edge`` edge cases of ``kind``: the edge rows flagged."""

    def run(r: ExampleReplay) -> Verdict:
        edge = r.edge_cases[kind][:n_edge]
        batch = _concat(r.clean[-n_clean:], edge)
        resp = r.send(batch)
        rows = flagged_rows(resp)
        hit = len(rows & set(range(n_clean, n_clean + len(edge))))
        false = len(rows & set(range(n_clean)))
        reason = resp.headers.get("X-Guard-Edge-Reason", "")
        first = next((part.strip() for part in reason.split("|") if part.strip().startswith(f"row {n_clean}")),
                     reason.split("|")[0].strip())
        return Verdict(resp.status_code == 200 and hit >= 0.75 * len(edge) and false == 0,
                       f"HTTP {resp.status_code}: {hit}/{len(edge)} {kind} rows flagged, {false}/{n_clean} clean "
                       f"rows flagged; X-Guard-Edge: {resp.headers.get('X-Guard-Edge', '')[:80]!r}\n      "
                       f"reason: {first[:220]}")

    return run


def sentiment_content(r: ExampleReplay) -> Verdict:
    """Texts that make the model's reply repeat an insult: the built-in output content check flags the replies."""
    texts = ["What a stupid idea, the author is an idiot.", "This is a clear and useful explanation.",
             "Only a moron would write such damn nonsense."]
    before = r.stats().get("output_check", {})
    resp = r.send(texts)
    after = r.stats().get("output_check", {})
    body = resp.json() if resp.status_code == 200 else {}
    verdict = resp.headers.get("X-Guard-Output", "")
    n = after.get("failed", 0) - before.get("failed", 0)
    check = r.health()["checks"].get("output.content", {})
    return Verdict(resp.status_code == 200 and verdict.startswith("flagged; rows=0,2") and n == 2,
                   f"HTTP {resp.status_code}, X-Guard-Output: {verdict!r}; replies: {body.get('reply')}\n      "
                   f"output.content {check.get('status')}: {check.get('reason', '')[:160]} "
                   f"(last: {check.get('details', {}).get('last_reason')})")


def _digits_data(artifact_dir: Path) -> tuple[Any, dict[str, Any]]:
    from services import train_digits

    x_test = np.load(artifact_dir / "reference.npz")["X_test"]
    return x_test[:200], train_digits.edge_cases(x_test[200:])


def _sentiment_data(artifact_dir: Path) -> tuple[Any, dict[str, Any]]:
    from services import train_sentiment

    test = train_sentiment.load_texts(artifact_dir)["test"]
    return test[:200], train_sentiment.edge_cases(test[200:])


@dataclass
class Example:
    """An example served beside the tabular one, with the scenarios the demo replays against it.

    ``subdir`` is its artifacts directory under the tabular one's, ``dir_env`` the
    variable that points its service there; ``data(artifact_dir)`` gives
    (held-out inputs, edge cases by kind).
    """

    name: str
    target: str
    api: str
    field: str
    subdir: str
    dir_env: str
    data: Callable[[Path], tuple[Any, dict[str, Any]]]
    scenarios: list[Scenario]

    def replay(self, url: str, artifact_dir: Path,
               spans: Callable[[], list[dict[str, Any]]] = lambda: []) -> ExampleReplay:
        clean, edge = self.data(artifact_dir)
        return ExampleReplay(url, self.api, self.field, clean, edge, spans)


DIGITS_SCENARIOS = [
    Scenario("digits: held-out images", "baseline: clean images mostly not flagged", example_clean),
    Scenario("digits: blank images", "ML: an empty frame (camera off)", example_edge("blank")),
    Scenario("digits: negatives", "ML: inverted intensities", example_edge("negative")),
    Scenario("digits: off-centre", "ML: digit shifted 3 pixels towards a corner", example_edge("shifted")),
    Scenario("digits: letters", "ML: images from another data set (letters)", example_edge("letters")),
    Scenario("digits: noise", "ML: images from another data set (noise)", example_edge("noise")),
]
SENTIMENT_SCENARIOS = [
    Scenario("sentiment: held-out texts", "baseline: clean texts mostly not flagged", example_clean),
    Scenario("sentiment: empty texts", "ML: empty or blank text", example_edge("empty")),
    Scenario("sentiment: capitals only", "ML: text in capitals only", example_edge("capitals")),
    Scenario("sentiment: pasted HTML", "ML: text pasted with its HTML markup", example_edge("html")),
    Scenario("sentiment: blocked words", "output: the model's reply repeats an insult", sentiment_content),
]
EXAMPLES: list[Example] = [
    Example("digits", "services.digits:DigitClassifier", "classify", "images", subdir="digits",
            dir_env="GUARDED_DIGITS_DIR", data=_digits_data, scenarios=DIGITS_SCENARIOS),
    Example("sentiment", "services.sentiment:SentimentAnalyzer", "analyze", "texts", subdir="sentiment",
            dir_env="GUARDED_SENTIMENT_DIR", data=_sentiment_data, scenarios=SENTIMENT_SCENARIOS),
]


# -- the recommender example: a feedback loop forming ------------------------------------------

def recommender_loop(url: str, token: str, *, window: int = 100, quiet_windows: int = 12, max_windows: int = 60,
                     batch: int = 50, explore: float = 0.1, seed: int = 0,
                     session: requests.Session | None = None) -> Verdict:
    """Listeners of :mod:`services.songs` ask for songs; for ``quiet_windows`` windows their plays are not
    reported (the model stays as trained), then every play is sent to ``POST /plays`` and the model retrains on
    them (``GUARDED_RETRAIN_ON_PLAYS=1``): it shows what was played, which is played because it was shown.
    Caught when ``loop.alarm`` turns degraded after the plays started, and not before."""
    from services.songs import N_USERS, catalogue

    cat = catalogue()
    rng = np.random.default_rng(seed)
    s = session or requests.Session()
    auth = {"authorization": f"Bearer {token}"}
    lists_per_window = window
    sent = 0
    onset = quiet_windows * lists_per_window
    early: dict[str, Any] = {}

    def loop_checks() -> dict[str, Any]:
        checks = s.get(f"{url}/guard/health", timeout=10).json()["checks"]
        return {k: v for k, v in checks.items() if k.startswith("loop.")}

    while sent < max_windows * lists_per_window:
        users = rng.integers(0, N_USERS, batch)
        flags = (rng.random(batch) < explore).tolist()
        resp = s.post(f"{url}/recommend", json={"user_ids": users.tolist(), "explore": flags, "k": 10}, timeout=30)
        resp.raise_for_status()
        body = resp.json()
        sent += batch
        if sent > onset:  # the play pipeline is live: report every play
            plays = []
            for row, (u, items) in enumerate(zip(users, body["items"])):
                idx = np.array([int(x[5:]) for x in items])
                hit = rng.random(len(idx)) < cat.play_probability(int(u), idx, np.arange(1, len(idx) + 1))
                if hit.any():
                    plays.append({"request_id": body["request_id"], "row": row, "explore": flags[row],
                                  "songs": [items[j] for j in np.flatnonzero(hit)]})
            if plays:
                s.post(f"{url}/plays", json={"plays": plays}, headers=auth, timeout=30).raise_for_status()
        if sent == onset:
            early = wait_until(loop_checks, 15, 0.25,
                               until=lambda c: c.get("loop.alarm", {}).get("details", {}).get("windows", 0)
                               >= quiet_windows - 1)
        if sent > onset and sent % (4 * lists_per_window) == 0:
            got = loop_checks().get("loop.alarm", {})
            if got.get("status") == "degraded":
                break
    checks = wait_until(loop_checks, 15, 0.25, until=lambda c: c.get("loop.alarm", {}).get("status") == "degraded")
    alarm = checks.get("loop.alarm", {})
    before = early.get("loop.alarm", {})
    fired_at = alarm.get("details", {}).get("alarm_at")
    quiet_ok = before.get("status") == "ok"
    caught = quiet_ok and alarm.get("status") == "degraded" and (fired_at or 0) > quiet_windows
    delay = (f"after {fired_at} judged windows, {fired_at - quiet_windows} of them with plays fed back"
             if caught and fired_at else "not caught")
    return Verdict(caught, f"{quiet_windows} quiet windows: loop.alarm {before.get('status')} "
                   f"({before.get('reason', '')[:120]})\n      plays fed back from list {onset}: loop.alarm "
                   f"{alarm.get('status')} {delay}:\n      {alarm.get('reason', '')}\n      "
                   f"loop.exposure: {checks.get('loop.exposure', {}).get('reason', '')}\n      "
                   f"loop.holdout {checks.get('loop.holdout', {}).get('status')}: "
                   f"{checks.get('loop.holdout', {}).get('reason', '')}")


#: The recommender's scenario (``services.recommender:SongService``, run by :func:`services.demo.run_recommender`).
RECOMMENDER_SCENARIO = Scenario("recommender: feedback loop", "ML: degenerate feedback loop (retrained on its own "
                                "plays)", lambda r: recommender_loop(r.url, r.token))  # type: ignore[attr-defined]
