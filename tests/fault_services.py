"""Served twins of the example for fault tests (run by `bentoml serve` from tests/test_faults.py).

``FaultySamplerClassifier``: the example's model behind a guard whose hardware
sampler reads the real psutil provider through :class:`TriggeredProvider`,
which misbehaves on demand: while the file named by ``GUARDED_FAULT_TRIGGER``
contains ``raise`` its ``readings()`` raises, while it contains ``garbage`` it
returns malformed readings (which make the verdicts raise). The sampler samples
every 0.2 s.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from guarded_serving import Guard
from guarded_serving.operational.component import OperationalHealth
from guarded_serving.operational.hardware import PsutilProvider
from guarded_serving.serving.bentoml import health_app, tracing_config_from_env
from services.train import answer

ARTIFACT_DIR = Path(os.environ.get("GUARDED_ARTIFACT_DIR", Path(__file__).resolve().parent.parent / "services"
                                   / "artifacts"))


class TriggeredProvider:
    """Real readings from ``inner``, or a fault chosen by the content of the ``trigger`` file."""

    def __init__(self, inner: Any, trigger: str) -> None:
        self.inner = inner
        self.trigger = trigger

    def readings(self) -> dict[str, Any]:
        try:
            mode = Path(self.trigger).read_text().strip()
        except OSError:
            mode = ""
        if mode == "raise":
            raise OSError("injected sensor failure")
        if mode == "garbage":
            return {"memory": {"available_percent": "garbage"}}
        return self.inner.readings()


guard = Guard(
    name="breast_cancer", version="1", n_features=30, latency_slo_ms=100, operational=False,
    components=[OperationalHealth(
        hardware_interval_s=0.2, gpu=False, gc_tracking=False,
        providers=[TriggeredProvider(PsutilProvider(disk_paths=(str(ARTIFACT_DIR),)),
                                     os.environ.get("GUARDED_FAULT_TRIGGER", "/nonexistent"))])],
)


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30})
@bentoml.asgi_app(health_app(guard), path="/guard")
class FaultySamplerClassifier:
    def __init__(self) -> None:
        with open(ARTIFACT_DIR / "model.pkl", "rb") as fh:
            self.model = pickle.load(fh)
        guard.start()

    def __is_ready__(self) -> bool:
        return guard.is_ready()

    @bentoml.api
    @guard
    def predict(self, inputs: np.ndarray) -> dict:
        return answer(self.model, inputs)
