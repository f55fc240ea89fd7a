"""The unguarded twin of services/cancer.py: the same model and output, no guard.

    bentoml serve services.cancer_unguarded:CancerClassifierUnguarded --host 127.0.0.1 --port 3001

Only for throughput comparisons (load_tests/compare_throughput.py): POST /predict
takes and returns exactly what the guarded example does, with BentoML tracing
configured from the same OTEL_* variables, but no guard around the model.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import bentoml
import numpy as np

from guarded_serving.serving.bentoml import tracing_config_from_env
from guarded_serving.serving.timeout import release_request_timers
from services.features import prepare
from services.train import load_model

ARTIFACT_DIR = Path(os.environ.get("GUARDED_ARTIFACT_DIR", Path(__file__).resolve().parent / "artifacts"))

if os.environ.get("GUARDED_RELEASE_TIMERS", "1") != "0":  # as the guarded service does: like for like
    release_request_timers()


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30})
class CancerClassifierUnguarded:
    def __init__(self) -> None:
        self.model = load_model(ARTIFACT_DIR)
        gc.collect()
        gc.freeze()  # as in the guarded service, so the comparison is like for like

    @bentoml.api
    def predict(self, inputs: np.ndarray) -> dict:
        """Classify rows of 30 features (malignant=0, benign=1)."""
        proba = self.model.predict_proba(prepare(inputs))[:, 1]
        return {"label": (proba >= 0.5).astype(int).tolist(), "probability": proba.round(6).tolist()}
