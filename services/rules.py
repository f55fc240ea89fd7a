"""An extension written outside the package: a business-rule range check as a guard component.

Some values are not unusual but impossible: a tumour radius cannot be negative, a
probability cannot exceed 1. ``RangeRule`` checks each row against such rules on the
request path (O(rows x rules)), flags the call (so its span is always exported with
the broken rule), counts violations per rule, and reports a health check.

It uses only the public extension points: :class:`guarded_serving.Component`, the
``INPUT_SCHEMA`` a profile publishes (to turn feature names into columns), and
``Guard(..., components=[...])``::

    guard = Guard(name="breast_cancer", profile="artifacts/profile.npz",
                  components=[RangeRule({"mean_radius": (0, None), "mean_area": (0, None)})])
"""

from __future__ import annotations

import threading
from typing import Any, Iterable, Mapping

import numpy as np

from guarded_serving import Call, CheckResult, Component, ConfigError, GuardContext
from guarded_serving.keys import FEATURES, INPUT_SCHEMA

__all__ = ["RangeRule"]


class RangeRule(Component):
    """Flag rows whose value of a feature lies outside ``[low, high]`` (None: unbounded).

    Parameters
    ----------
    rules : mapping of feature (name or column index) to (low, high)
    degraded_rate : float, default=0.05
        Share of checked rows breaking a rule over the guard's life above which
        the ``rules.range`` check is degraded.
    """

    name = "rules"
    needs = (FEATURES, INPUT_SCHEMA)   # the feature matrix; names -> columns when a profile provides them
    span_scope = "anomalous"

    def __init__(self, rules: Mapping[str | int, tuple[float | None, float | None]], *,
                 degraded_rate: float = 0.05) -> None:
        self.rules = dict(rules)
        self.degraded_rate = degraded_rate
        self._lock = threading.Lock()
        self.rows_checked = 0
        self.violations: dict[str, int] = {}

    def bind(self, context: GuardContext) -> None:
        schema = context.get(INPUT_SCHEMA, None)
        names = list(schema.feature_names) if schema is not None else []
        cols, labels, lows, highs = [], [], [], []
        for feature, (low, high) in self.rules.items():
            if isinstance(feature, int):
                col = feature
            elif feature in names:
                col = names.index(feature)
            else:
                raise ConfigError(f"rules[{feature!r}] is invalid: expected a column index or one of the "
                                  f"profile's feature names {names[:8]}{'...' if len(names) > 8 else ''}")
            cols.append(col)
            labels.append(str(feature))
            lows.append(-np.inf if low is None else float(low))
            highs.append(np.inf if high is None else float(high))
        self.columns_ = np.array(cols, dtype=np.intp)
        self.labels_ = labels
        self.low_, self.high_ = np.array(lows), np.array(highs)
        self.violations = {lab: 0 for lab in labels}
        # the single-row path: (column, low, high) as Python numbers, no array temporaries
        self._one = [(int(c), lo, hi) for c, lo, hi in zip(cols, lows, highs)]

    # -- request path ---------------------------------------------------------------
    def before_call(self, call: Call) -> None:
        x = call.inputs
        if x is None:
            return
        if len(x) == 1:  # the common single-row request: a few float comparisons
            row = x[0]
            for c, lo, hi in self._one:
                v1 = row[c]
                if not lo <= v1 <= hi and not np.isnan(v1):  # NaN breaks no rule, as in the array path
                    break
            else:
                with self._lock:
                    self.rows_checked += 1
                return
        v = x[:, self.columns_]
        bad = (v < self.low_) | (v > self.high_)
        with self._lock:
            self.rows_checked += len(x)
        if not bad.any():
            return
        rows, rules = np.nonzero(bad)
        broken = sorted({self.labels_[j] for j in rules})
        with self._lock:
            for j in rules:
                self.violations[self.labels_[j]] += 1
        r, j = int(rows[0]), int(rules[0])
        call.flag(**{"rules.broken": broken, "rules.rows": sorted({int(i) for i in rows})[:100],
                     "rules.first": f"row {r}: {self.labels_[j]}={v[r, j]:g} outside "
                                    f"[{self.low_[j]:g}, {self.high_[j]:g}]"})

    # -- read side ------------------------------------------------------------------
    def checks(self) -> Iterable[CheckResult]:
        with self._lock:
            n, viol = self.rows_checked, dict(self.violations)
        total = sum(viol.values())
        rate = total / n if n else 0.0
        details = {"rows_checked": n, "violations": viol, "rate": rate}
        if n and rate > self.degraded_rate:
            return [CheckResult("rules.range", "degraded", f"{total} rule violations in {n} rows ({rate:.1%}): "
                                + ", ".join(f"{k} {c}" for k, c in viol.items() if c), details,
                                affects_readiness=False)]
        return [CheckResult("rules.range", "ok", f"{total} rule violations in {n} rows", details,
                            affects_readiness=False)]

    def stats(self) -> Mapping[str, Any]:
        with self._lock:
            return {"rows_checked": self.rows_checked, "violations": dict(self.violations)}
