"""Traffic replay for the demo: one scenario per failure the guard catches.

Each scenario sends real HTTP traffic to a served example and returns a
:class:`Verdict` saying whether the guard caught the failure, with evidence
read back from the guard (``/guard/stats``, ``/guard/health``) and from the
spans it exported. Capabilities add their failure here by appending to
``SCENARIOS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import requests

__all__ = ["Replay", "Scenario", "Verdict", "SCENARIOS"]


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
    forced = [s for s in r.spans() if s["attributes"].get("guard.slo.violated")]
    return Verdict(n == 3, f"{n} calls over the {slo:g} ms budget counted as SLO violations; "
                   f"max latency {after['latency_ms']['max']:.0f} ms; {len(forced)} slow spans exported")


def model_errors(r: Replay) -> Verdict:
    before = r.stats()
    codes = [r.post("predict_chaos", {"inputs": r.X_test[:1].tolist(), "fail": True}).status_code
             for _ in range(2)]
    after = r.stats()
    n = after["errors"] - before["errors"]
    errs = [s for s in r.spans() if s["attributes"].get("error.type") == "RuntimeError"]
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


def _json_allow_nan(payload: dict[str, Any]) -> str:
    import json

    return json.dumps(payload, allow_nan=True)


def shifted_stream(r: Replay) -> Verdict:
    """A feature offset by +2 training std: caught as drift (and skew) with the feature named in /guard/health."""
    import time

    j = r.feature_names.index("mean_radius")
    Z = r.X_train[:400].copy()
    Z[:, j] += 2 * r.X_train[:, j].std()
    codes = {r.predict(Z[i:i + 8]).status_code for i in range(0, len(Z), 8)}
    deadline = time.monotonic() + 20
    feats: dict[str, Any] = {}
    while time.monotonic() < deadline:
        h = r.health()["checks"]
        feats = h.get("drift.features", {})
        if "mean_radius" in feats.get("details", {}).get("drifted", []):
            break
        time.sleep(0.5)
    skew = r.health()["checks"].get("drift.skew", {})
    named = "mean_radius" in feats.get("details", {}).get("drifted", [])
    return Verdict(codes == {200} and named,
                   f"drift.features {feats.get('status')}: {feats.get('reason', 'no drift check')}\n      "
                   f"drift.skew {skew.get('status')}: {skew.get('reason', '')}")


SCENARIOS: list[Scenario] = [
    Scenario("normal traffic", "baseline", normal_traffic),
    Scenario("slow model calls", "operational: latency SLO breach", slow_calls),
    Scenario("model raises", "software: model error", model_errors),
    Scenario("malformed input", "input: NaN, inf, shape, type, empty", bad_input),
    Scenario("shifted stream", "data: distribution shift / train-serving skew", shifted_stream),
]
