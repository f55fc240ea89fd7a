"""Span and metric attribute names, all in the ``guard.`` namespace.

========================== ======== ==================================================
attribute                  type     meaning
========================== ======== ==================================================
guard.model.name           str      model name from the guard's config
guard.model.version        str      model version from the guard's config
guard.latency_ms           float    wall time of the guarded call (monotonic clock): the model time
guard.request.latency_ms   float    from the request's arrival to the call's end (queueing included),
                                    when a serving integration marks arrivals
guard.slo.latency_ms       float    the latency budget the call was held to
guard.slo.violated         bool     the call took longer than the budget
guard.outcome              str      ok | error | invalid_input | rejected
guard.batch_size           int      rows in the call's input matrix
guard.anomalous            bool     errored, breached the SLO, or was flagged
guard.request_id           str      the call's request id (X-Request-Id): feedback joins it later,
                                    the span itself is never changed after the fact
guard.forced_export        bool     the call's trace was sampled out, and this span
                                    was exported anyway because the call was anomalous
guard.input.problem        str      why the input was refused (invalid_input only)
error.type                 str      exception class (OpenTelemetry semantic convention)
guard.artifact.digest      str      SHA-256 of the deployment manifest's canonical encoding
                                    (names the verified set of artifacts, pins, preprocessing)
guard.artifact.manifest_version
                           str      model version recorded in the manifest
guard.artifact.verified    bool     artifacts (and preprocessing) matched the manifest at
                                    the last check
guard.latency.cause        str      slow calls only (SLO breached): the cause with the largest
                                    share of the time over budget, or unknown: gc_pause |
                                    latency_trend | gpu_thermal_slowdown | gpu_hardware_slowdown |
                                    gpu_memory_pressure | gpu_saturation | cpu_saturation |
                                    memory_pressure (see guarded_serving.operational.causes)
guard.latency.causes       str[]    every cause that explains part of the breach, largest share first
guard.latency.cause_shares float[]  each cause's share of the time over budget (same order)
guard.latency.trend        float    the model's latency trend, ms per 100 calls (when latency_trend
                                    is a cause)
guard.gc.pause_ms          float    GC pause time inside the call (slow calls only)
guard.hardware.*           float    cached hardware snapshot: cpu_percent, load_per_cpu,
                                    memory_available_percent, rss_mb, open_fds,
                                    gpu<i>.{temperature_c,memory_used_mb,utilization_percent,power_w}
guard.hardware.gpu<i>.     str[]    active clock-event (throttle) reasons, when any
  clock_event_reasons
guard.health.operational   str      worst status of the operational checks (ok|degraded|failing)
guard.edge.policy          str      flag | reject | fallback (edge cases)
guard.edge.detector        str      combined | tail | mahalanobis | knn | copula | parts joined by +
guard.edge.fpr             float    target false-positive rate of the edge flag
guard.edge.profile_sha256  str      SHA-256 of the reference profile file
guard.edge.flagged         bool     some rows were unlike the training data (flagged)
guard.edge.flagged_rows    int      how many rows were flagged
guard.edge.rows            int[]    indices of the flagged rows (first 100)
guard.edge.min_p_value     float    smallest conformal p-value in the call
guard.edge.explanation     str      why, per flagged row (first 5 rows; built when the span is annotated)
guard.drift.status         str      ok | drift (latest pooled window or sequential alarm)
guard.drift.features       str[]    features drifting in the latest pooled window
guard.drift.skew.features  str[]    features with train-serving skew at startup
guard.drift.alarm          bool     the sequential alarm (conformal test martingale) fired
========================== ======== ==================================================

Which spans carry what (``span_detail``): with ``"compact"`` (the default) an ordinary call's span
carries only the facts the call alone has, ``guard.model.name``, ``.latency_ms``, ``.batch_size``
and ``.request_id`` (the guard's own span also ``.model.version``, set when it starts, and
``.request.latency_ms``); each attribute costs validation on the request path and OTLP encoding
on every request. Its ``.outcome`` is ``ok`` for every ordinary call (else it is anomalous) and on
the server span it annotates its ``.request.latency_ms`` is that span's duration, so those are on
anomalous spans only. An anomalous call's span carries every attribute above that applies
(``guard.anomalous=true``, the outcome, the version, the budget, the deployment's
``guard.artifact.*``, the hardware, edge and drift context). ``"full"`` puts everything on every span.

Span event ``guard.health.transition`` (attached to the next recorded guard
span after a check changed status) carries ``guard.health.check``,
``guard.health.from``, ``guard.health.to`` and ``guard.health.reason``.

The drift component's background span ``guard <model> drift`` carries one
event ``guard.drift.window`` per window test: ``guard.drift.pooled_rows``,
``guard.drift.window.rows``, ``guard.drift.features``, the ten largest effects
(``guard.drift.top.features`` / ``.effect`` / ``.q_value`` / ``.psi``),
``guard.drift.predictions``, ``guard.drift.sequential.log10_capital`` /
``.alarm`` and ``guard.drift.skew.features`` / ``.kinds``. Metrics:
``guard.drift.window_tests`` (counter), ``guard.drift.features_drifted`` and
``guard.drift.martingale_log10`` (gauges).

Later capabilities add, in the same namespace: ``guard.artifact.*`` (deployment
integrity), ``guard.hardware.*`` / ``guard.health.*`` (operational health),
``guard.edge.*`` (edge-case verdicts) and ``guard.drift.*`` (shift and skew).
"""

MODEL_NAME = "guard.model.name"
MODEL_VERSION = "guard.model.version"
LATENCY_MS = "guard.latency_ms"
REQUEST_LATENCY_MS = "guard.request.latency_ms"
SLO_LATENCY_MS = "guard.slo.latency_ms"
SLO_VIOLATED = "guard.slo.violated"
OUTCOME = "guard.outcome"
BATCH_SIZE = "guard.batch_size"
ANOMALOUS = "guard.anomalous"
REQUEST_ID = "guard.request_id"
FORCED_EXPORT = "guard.forced_export"
INPUT_PROBLEM = "guard.input.problem"
ERROR_TYPE = "error.type"

# Deployment integrity
ARTIFACT_DIGEST = "guard.artifact.digest"
ARTIFACT_MANIFEST_VERSION = "guard.artifact.manifest_version"
ARTIFACT_VERIFIED = "guard.artifact.verified"
# operational health
LATENCY_CAUSE = "guard.latency.cause"
LATENCY_CAUSES = "guard.latency.causes"
LATENCY_CAUSE_SHARES = "guard.latency.cause_shares"
LATENCY_TREND = "guard.latency.trend"
GC_PAUSE_MS = "guard.gc.pause_ms"
HEALTH_OPERATIONAL = "guard.health.operational"
HEALTH_TRANSITION_EVENT = "guard.health.transition"
HEALTH_CHECK = "guard.health.check"
HEALTH_FROM = "guard.health.from"
HEALTH_TO = "guard.health.to"
HEALTH_REASON = "guard.health.reason"

OUTCOME_OK = "ok"
OUTCOME_ERROR = "error"
OUTCOME_INVALID = "invalid_input"
OUTCOME_REJECTED = "rejected"
OUTCOMES = (OUTCOME_OK, OUTCOME_ERROR, OUTCOME_INVALID, OUTCOME_REJECTED)

# Metric instruments
METRIC_DURATION = "guard.call.duration"
