r"""The loop alarm: a sequential test that concentration keeps rising, with a false-alarm bound.

Input: one value of a concentration measure per closed window (Gini of exposure, say),
:math:`m_1, m_2, \dots`. Null hypothesis: nothing changes, so the window values are
*exchangeable* (windows of equal size, drawn from one stationary process). Then the
**sequential rank** of each new value among all values so far,

.. math:: p_t = \frac{\#\{i < t: m_i > m_t\} + U_t\,(1 + \#\{i < t: m_i = m_t\})}{t},
          \qquad U_t \sim \mathrm{Uniform}(0, 1),

is uniform on [0, 1] and independent of :math:`p_1, \dots, p_{t-1}` (Vovk, Nouretdinov and
Gammerman, "Testing exchangeability on-line", ICML 2003). A concentration that keeps rising
sets new highs, so its :math:`p_t` are small (about :math:`U/t`); a measure that should fall
(entropy, coverage) is ranked from the other end.

We bet on small :math:`p_t` with power functions :math:`f_\epsilon(p) = \epsilon p^{\epsilon - 1}`
(each integrates to 1 over [0, 1]) and mix over *when* betting starts (a prior
:math:`\pi(s) = g(s) - g(s + 1)`, :math:`g(s) = 1/\ln(s + e - 1)`), so a loop that forms after a
long quiet stretch is not paid for by the quiet windows:

.. math:: C_t = \frac{1}{|E|}\sum_{\epsilon \in E} \sum_{s \le t} \pi(s) \prod_{u=s}^{t} f_\epsilon(p_u)
                + g(t + 1).

:math:`C_t` is a convex mixture of test martingales, hence a test martingale with
:math:`C_0 = 1`; by Ville's inequality :math:`P(\exists t: C_t \ge 1/\alpha) \le \alpha`. So the
alarm ``C_t >= 1/alpha`` fires **ever**, over an unbounded stream of windows, with probability at
most ``alpha`` while the windows stay exchangeable -- no threshold on the measure, no window
count to choose. Several measures share ``alpha`` (Bonferroni: :class:`ConcentrationAlarm`).

Caveat (the assumption behind the bound): windows must be exchangeable when nothing changes.
Windows of equal list counts help (the loop component closes a window every ``loop_window``
lists); traffic whose mix follows the time of day, or a model retrained on overlapping data,
correlates successive windows and weakens the bound. Choose windows longer than the retraining
period, or judge the means of blocks of k windows (``block``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ConcentrationAlarm", "TrendAlarm", "trend_slope"]

_E = math.e

def _g(s: float) -> float:
    return 1.0 / math.log(s + _E - 1.0)

def trend_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` per window (NaN with fewer than two values)."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) < 2:
        return float("nan")
    t = np.arange(len(v), dtype=np.float64)
    t -= t.mean()
    return float((t * (v - v.mean())).sum() / (t * t).sum())

class TrendAlarm:
    """Anytime-valid test that one measure keeps moving in one direction.

    Parameters
    ----------
    alpha : float, default=0.01
        Bound on the probability that the alarm is ever raised while the window values stay
        exchangeable.
    direction : {"up", "down"}, default="up"
        Which way a feedback loop moves the measure.
    epsilons : sequence of float, default=(0.9, 0.7, 0.5, 0.3, 0.1)
        Power betting functions ``eps * p**(eps - 1)``, mixed with equal weights.
    block : int, default=1
        Judge the mean of every ``block`` consecutive windows (for windows correlated with their
        neighbours: block means of a short-memory series are close to independent).
    seed : int or None, default=0
        Seed of the tie-breaking uniforms.

    Attributes
    ----------
    n_seen_ : int
        Window values judged.
    log10_capital_, log10_max_ : float
        log10 of the capital now and at its largest.
    alarm_at_ : int or None
        The window (1-based count of judged values) at which the alarm was first raised; latched.
    values_ : list of float
        Every judged value, oldest first.
    """

    def __init__(self, *, alpha: float = 0.01, direction: str = "up",
                 epsilons: Sequence[float] = (0.9, 0.7, 0.5, 0.3, 0.1), block: int = 1,
                 seed: int | None = 0) -> None:
        self.alpha = alpha
        self.direction = direction
        self.epsilons = epsilons
        self.block = block
        self.seed = seed
        self.fit()

    def fit(self) -> TrendAlarm:
        """Validate the parameters and reset the state."""
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise ValueError(f"alpha={self.alpha!r} is invalid: expected a level strictly between 0 and 1")
        if self.direction not in ("up", "down"):
            raise ValueError(f"direction={self.direction!r} is invalid: expected 'up' or 'down'")
        eps = np.asarray(self.epsilons, dtype=np.float64)
        if eps.size == 0 or np.any((eps <= 0) | (eps > 1)):
            raise ValueError(f"epsilons={self.epsilons!r} is invalid: expected numbers in (0, 1]")
        if not isinstance(self.block, int) or self.block < 1:
            raise ValueError(f"block={self.block!r} is invalid: expected an integer >= 1")
        self.eps_ = eps
        self._rng = np.random.default_rng(self.seed)
        self._sorted: list[float] = []
        self._r = np.zeros(len(eps))
        self._pending: list[float] = []
        self.n_seen_ = 0
        self.values_: list[float] = []
        self.p_values_: list[float] = []
        self.log10_capital_ = 0.0
        self.log10_max_ = 0.0
        self.alarm_at_: int | None = None
        return self

    @property
    def threshold_(self) -> float:
        """log10 of the alarm level ``1/alpha``."""
        return math.log10(1.0 / self.alpha)

    @property
    def alarm(self) -> bool:
        return self.alarm_at_ is not None

    def update(self, value: float) -> bool:
        """Judge one closed window's value; True when the alarm is (or already was) raised.
        NaN values (an empty window) are skipped."""
        if value is None or not math.isfinite(value):
            return self.alarm
        self._pending.append(float(value))
        if len(self._pending) < self.block:
            return self.alarm
        value = sum(self._pending) / len(self._pending)
        self._pending = []
        v = value if self.direction == "up" else -value

        lo = bisect.bisect_left(self._sorted, v)
        hi = bisect.bisect_right(self._sorted, v)
        t = len(self._sorted) + 1
        above, ties = len(self._sorted) - hi, hi - lo
        p = (above + self._rng.uniform() * (1 + ties)) / t
        p = max(p, 1e-300)
        bisect.insort(self._sorted, v)
        self.n_seen_ = t
        self.values_.append(float(value))
        self.p_values_.append(p)
        f = self.eps_ * p ** (self.eps_ - 1.0)
        self._r = (self._r + (_g(t) - _g(t + 1))) * f
        capital = float(self._r.mean()) + _g(t + 1)
        self.log10_capital_ = math.log10(max(capital, 1e-300))
        self.log10_max_ = max(self.log10_max_, self.log10_capital_)
        if self.alarm_at_ is None and self.log10_capital_ >= self.threshold_:
            self.alarm_at_ = t
        return self.alarm

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "direction": self.direction, "windows": self.n_seen_,
                "log10_capital": round(self.log10_capital_, 3), "log10_max": round(self.log10_max_, 3),
                "log10_threshold": round(self.threshold_, 3), "block": self.block, "alarm": self.alarm, "alarm_at": self.alarm_at_}

#: Measures the loop check judges and the direction a feedback loop moves them.
DEFAULT_MEASURES: Mapping[str, str] = {"gini": "up", "top_share": "up", "entropy": "down", "coverage": "down",
                                       "popularity_lift": "up"}

class ConcentrationAlarm:
    """One :class:`TrendAlarm` per measure, sharing ``alpha`` (Bonferroni: each at alpha / m),
    so the probability that *any* of them ever alarms on exchangeable windows is at most ``alpha``.

    Parameters
    ----------
    alpha : float, default=0.01
    measures : mapping of str to {"up", "down"}, default=:data:`DEFAULT_MEASURES`
        The measures judged and the direction a loop moves each; a measure whose value is
        missing (None, NaN) in every window is simply never judged (its share of alpha unused).
    block : int, default=1
        Windows averaged per judged value (see :class:`TrendAlarm`).
    seed : int, default=0
    """

    def __init__(self, *, alpha: float = 0.01, measures: Mapping[str, str] | None = None, block: int = 1,
                 seed: int = 0) -> None:
        self.alpha = alpha
        self.measures = dict(DEFAULT_MEASURES if measures is None else measures)
        self.block = block
        self.seed = seed
        if not self.measures:
            raise ValueError("measures is empty: name at least one measure and its direction")
        share = alpha / len(self.measures)
        self.alarms_ = {m: TrendAlarm(alpha=share, direction=d, block=block, seed=seed + i)
                        for i, (m, d) in enumerate(self.measures.items())}
        self.first_: str | None = None

    def update(self, values: Mapping[str, Any]) -> bool:
        """Judge one window's measures (a mapping measure -> value); True once any alarm is raised."""
        for m, a in self.alarms_.items():
            v = values.get(m)
            if v is not None and a.update(float(v)) and self.first_ is None:
                self.first_ = m
        return self.alarm

    @property
    def alarm(self) -> bool:
        return self.first_ is not None

    @property
    def n_seen_(self) -> int:
        return max((a.n_seen_ for a in self.alarms_.values()), default=0)

    def leading(self) -> tuple[str, TrendAlarm]:
        """The measure that alarmed first, else the one closest to its threshold."""
        if self.first_ is not None:
            return self.first_, self.alarms_[self.first_]
        m = max(self.alarms_, key=lambda k: self.alarms_[k].log10_capital_ - self.alarms_[k].threshold_)
        return m, self.alarms_[m]

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "first": self.first_, "measures": {m: a.to_dict() for m, a in self.alarms_.items()}}
