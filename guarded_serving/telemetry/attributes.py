"""Span and metric attribute names, all in the ``guard.`` namespace.

========================== ======== ==================================================
attribute                  type     meaning
========================== ======== ==================================================
guard.model.name           str      model name from the guard's config
guard.model.version        str      model version from the guard's config
guard.latency_ms           float    wall time of the guarded call (monotonic clock)
guard.slo.latency_ms       float    the latency budget the call was held to
guard.slo.violated         bool     the call took longer than the budget
guard.outcome              str      ok | error | invalid_input | rejected
guard.batch_size           int      rows in the call's input matrix
guard.anomalous            bool     errored, breached the SLO, or was flagged
guard.forced_export        bool     the call's trace was sampled out, and this span
                                    was exported anyway because the call was anomalous
guard.input.problem        str      why the input was refused (invalid_input only)
error.type                 str      exception class (OpenTelemetry semantic convention)
guard.edge.policy          str      flag | reject | fallback (edge cases; every span)
guard.edge.detector        str      combined | tail | mahalanobis | knn (every span)
guard.edge.fpr             float    target false-positive rate of the edge flag
guard.edge.profile_sha256  str      SHA-256 of the reference profile file
guard.edge.flagged         bool     some rows were unlike the training data (flagged)
guard.edge.flagged_rows    int      how many rows were flagged
guard.edge.rows            int[]    indices of the flagged rows (first 100)
guard.edge.min_p_value     float    smallest conformal p-value in the call
guard.edge.explanation     str      why, per flagged row (first 5 rows explained)
========================== ======== ==================================================

Later capabilities add, in the same namespace: ``guard.artifact.*`` (deployment
integrity), ``guard.hardware.*`` / ``guard.health.*`` (operational health),
``guard.edge.*`` (edge-case verdicts) and ``guard.drift.*`` (shift and skew).
"""

PREFIX = "guard."
MODEL_NAME = "guard.model.name"
MODEL_VERSION = "guard.model.version"
LATENCY_MS = "guard.latency_ms"
SLO_LATENCY_MS = "guard.slo.latency_ms"
SLO_VIOLATED = "guard.slo.violated"
OUTCOME = "guard.outcome"
BATCH_SIZE = "guard.batch_size"
ANOMALOUS = "guard.anomalous"
FORCED_EXPORT = "guard.forced_export"
INPUT_PROBLEM = "guard.input.problem"
ERROR_TYPE = "error.type"

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_INVALID = "invalid_input"
OUTCOME_REJECTED = "rejected"
OUTCOMES = (OUTCOME_OK, OUTCOME_ERROR, OUTCOME_INVALID, OUTCOME_REJECTED)

# Metric instruments
METRIC_DURATION = "guard.call.duration"
