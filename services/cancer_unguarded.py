"""The unguarded twin of services/cancer.py: the same model and output, no guard.

    bentoml serve services.cancer_unguarded:CancerClassifierUnguarded --host 127.0.0.1 --port 3001

Only for throughput comparisons (load_tests/compare_throughput.py): POST /predict
takes and returns exactly what the guarded example does, with BentoML tracing
configured from the same OTEL_* variables, but no guard around the model.

GUARDED_TWIN_SERVING=1 gives it the guarded example's serving setup too, everything
but the guard: the ``RequestLimits`` middleware (body limit, one-line client-error
logs; no arrival mark, no guard), ``bound_metric_labels``, and a stored
``__signature__`` on the API function (BentoML 1.4 inspects it on every request; the
guard's wrapper carries one). Without it the twin is plain BentoML, and the guarded
example's main thread can do less per request than the twin's.
"""

from __future__ import annotations

import gc
import inspect
import os
from pathlib import Path

import bentoml
import numpy as np

from guarded_serving.serving.bentoml import tracing_config_from_env
from guarded_serving.serving.timeout import release_request_timers_from_env
from services.train import answer, load_model

ARTIFACT_DIR = Path(os.environ.get("GUARDED_ARTIFACT_DIR", Path(__file__).resolve().parent / "artifacts"))
SERVING = os.environ.get("GUARDED_TWIN_SERVING", "0") == "1"

release_request_timers_from_env()  # as the guarded service does: like for like


@bentoml.service(tracing=tracing_config_from_env(), traffic={"timeout": 30})
class CancerClassifierUnguarded:
    def __init__(self) -> None:
        self.model = load_model(ARTIFACT_DIR)
        gc.collect()
        gc.freeze()  # as in the guarded service, so the comparison is like for like

    def predict(self, inputs: np.ndarray) -> dict:
        """Classify rows of 30 features (malignant=0, benign=1)."""
        return answer(self.model, inputs)

    if SERVING:
        predict.__signature__ = inspect.signature(predict)  # type: ignore[attr-defined]
    predict = bentoml.api(predict)


if SERVING:
    from guarded_serving.serving.limits import RequestLimits, bound_metric_labels

    CancerClassifierUnguarded.add_asgi_middleware(RequestLimits,
                                                  max_body_bytes=int(os.environ.get("GUARDED_MAX_BODY_BYTES",
                                                                                    str(8 << 20))))
    bound_metric_labels(CancerClassifierUnguarded)
