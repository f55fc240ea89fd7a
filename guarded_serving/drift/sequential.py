r"""An anytime-valid sequential alarm: a conformal test martingale.

Input: a stream of conformal p-values :math:`p_1, p_2, \dots`, one per
request row (the edge-case detector's, or any conformal p-value: the rank of
the row's nonconformity score among calibration scores). While the data are
exchangeable (stationary), each :math:`p_t` is uniform on [0, 1] given the past
(or stochastically larger, for the conservative non-randomised p-value
:math:`(1 + \#\{cal \ge s\}) / (n + 1)`).

The capital
-----------
A *betting function* is a density :math:`f` on [0, 1] (:math:`\int_0^1 f = 1`).
For a uniform :math:`p`, :math:`E f(p) = 1`, so the running product
:math:`\prod_t f_t(p_t)` with :math:`f_t` chosen from the past is a nonnegative
martingale with initial value 1 (a *test martingale*). We mix two families,
both betting on small p-values (rows stranger than the reference):

- power functions :math:`f_\epsilon(p) = \epsilon p^{\epsilon - 1}`, :math:`0 < \epsilon \le 1`
  (good for smooth shifts: a mean or variance change of a numeric score);
- step functions :math:`f_{c,a}(p) = a` for :math:`p \le c`, :math:`b = (1 - a c) / (1 - c)`
  above, with :math:`a \ge 1` and :math:`a c < 1` (good when a block of
  p-values becomes more frequent: a category whose frequency rises has its
  p-values spread over one interval :math:`[0, c]`).

Both integrate to 1 and are non-increasing in :math:`p`, so a super-uniform
(conservative) p-value makes the product a test *super*-martingale, which is
all Ville's inequality needs.

A plain product started at the first request sinks on stationary data (its
log decreases linearly), so a change after a long stationary stretch would
take long to detect. We therefore mix over *when* betting starts, with a
prior :math:`\pi(s) = g(s) - g(s + 1)` over start times, :math:`g(s) = 1/\ln(s + e - 1)`
(so :math:`g(1) = 1`, :math:`\sum_{s \ge 1} \pi(s) = 1` and :math:`\sum_{s > t} \pi(s) = g(t + 1)`
exactly), and equal weights :math:`w_f` over the betting functions:

.. math:: C_t = \sum_f w_f \Big[\sum_{s \le t} \pi(s) \prod_{u=s}^{t} f(p_u)\Big] + g(t + 1),

a convex combination of test martingales that start betting at time
:math:`s` (holding capital 1 before), hence itself a test martingale. Per
column the bracket obeys :math:`R_t = (R_{t-1} + \pi(t)) f(p_t)` (a
Shiryaev-Roberts-type recursion with summable weights), computed here for a
whole batch at once with cumulative sums in log space. A change at time
:math:`s` must then earn :math:`\log(1/\alpha) + \log(1/\pi(s)) \approx \log(1/\alpha) + \log s + 2 \log\log s`
(the earlier prior :math:`1/(s(s+1))` cost :math:`2 \log s`: about 15 nats at
:math:`s = 2000` against about 12 now), instead of paying for the whole
stationary past; see Vovk, Nouretdinov, Gammerman, "Testing exchangeability
on-line" (ICML 2003), Vovk et al., "Retrain or not retrain: conformal test
martingales for change-point detection" (COPA 2021), and Shin, Ramdas,
Rinaldo, "E-detectors" (2022) for mixtures over start times. Any summable
prior is valid; a heavier tail only moves cost from early to late changes
(:math:`\log(1/\pi(s))` must grow at least like :math:`\log s`).

Several p-value columns (say, one per tail of a score) may be given at once:
the capital is then the average of the columns' capitals, again a test
martingale.

The guarantee
-------------
Ville's inequality: for a nonnegative supermartingale with :math:`C_0 = 1`,
:math:`P(\exists t: C_t \ge 1/\alpha) \le \alpha`. So on stationary data the
alarm ``C_t >= 1/alpha`` is raised *ever*, over an unbounded stream, with
probability at most ``alpha``, with no window to choose. (Caveat: with a fixed
calibration set the p-values are uniform marginally but share that set, so
the bound holds conditionally on a representative calibration set; the
larger the set, the closer. Full online conformal p-values make it exact.)

The price of anytime validity is delay: a change at row ``s`` has to earn
about ``log(1/alpha) + log s`` nats of evidence, whatever happened before. A
detector without a time-uniform bound (ADWIN tests each cut at a fixed
``delta``) can alarm on less evidence, so on a small shift after a few
thousand rows it can be faster; see ``docs/drift.md`` for measured figures.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["ConformalMartingale", "conformal_p_values"]


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray,
                       rng: np.random.Generator | None = None) -> np.ndarray:
    """Conformal p-values of ``scores`` against calibration scores.

    Higher nonconformity score = stranger row = smaller p-value. Without
    ``rng``: the conservative ``(1 + #{cal >= s}) / (n_cal + 1)``. With ``rng``:
    the smoothed ``(#{cal > s} + U (1 + #{cal == s})) / (n_cal + 1)``, exactly
    uniform under exchangeability even when scores tie (discrete features).
    """
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    s = np.asarray(scores, dtype=np.float64)
    ge = len(cal) - np.searchsorted(cal, s, "left")
    if rng is None:
        return (1.0 + ge) / (len(cal) + 1.0)
    gt = len(cal) - np.searchsorted(cal, s, "right")
    u = rng.uniform(size=s.shape)
    return np.maximum(gt + u * (1.0 + ge - gt), 1e-12) / (len(cal) + 1.0)


class ConformalMartingale:
    """Power and step betting mixed over start times, on conformal p-values; alarm at ``1/alpha``.

    Parameters
    ----------
    alpha : float, default=0.01
        Bound on the probability of ever raising a false alarm on stationary data.
    epsilons : sequence of float, default=(0.9, 0.7, 0.5, 0.3, 0.1)
        Power betting functions ``eps * p**(eps - 1)``.
    steps : sequence of (float, float), default=((0.05, 3.0), (0.2, 2.0), (0.5, 1.5))
        Step betting functions ``(c, a)``: ``a`` on ``p <= c``, ``(1 - a c) / (1 - c)``
        above; ``0 < c < 1``, ``1 <= a < 1 / c``. All betting functions are
        mixed with equal weights.

    Attributes
    ----------
    n_seen_ : int
        p-values (rows) consumed.
    log10_capital_ : float
        log10 of the current capital (0 at start).
    log10_max_ : float
        log10 of the largest capital so far.
    alarm_at_ : int or None
        Row count at which the alarm was first raised; latched until ``reset()``.
    """

    def __init__(self, *, alpha: float = 0.01, epsilons: Sequence[float] = (0.9, 0.7, 0.5, 0.3, 0.1),
                 steps: Sequence[tuple[float, float]] = ((0.05, 3.0), (0.2, 2.0), (0.5, 1.5))) -> None:
        self.alpha = alpha
        self.epsilons = epsilons
        self.steps = steps

    def fit(self, X: Any = None, y: Any = None) -> "ConformalMartingale":
        """Validate the parameters and start at capital 1."""
        if not (0 < float(self.alpha) < 1):
            raise ValueError(f"alpha={self.alpha!r} is invalid: expected a number in (0, 1)")
        eps = np.asarray(self.epsilons, dtype=np.float64)
        if eps.ndim != 1 or eps.size == 0 or np.any(eps <= 0) or np.any(eps > 1):
            raise ValueError(f"epsilons={self.epsilons!r} is invalid: expected numbers in (0, 1]")
        steps = np.asarray(self.steps, dtype=np.float64).reshape(-1, 2) if len(self.steps) else np.zeros((0, 2))
        c, a = steps[:, 0], steps[:, 1]
        if np.any(~(c > 0) | ~(c < 1) | ~(a >= 1) | ~(a * c < 1)):
            raise ValueError(f"steps={self.steps!r} is invalid: expected pairs (c, a) with 0 < c < 1 and 1 <= a < 1/c")
        self._eps = eps
        self._cut = c
        self._log_lo = np.log(a)
        self._log_hi = np.log((1.0 - a * c) / (1.0 - c))
        self.threshold_ = math.log10(1.0 / float(self.alpha))
        self.reset()
        return self

    def reset(self) -> None:
        """Back to capital 1 (a new test; the guarantee applies to each test separately)."""
        self._logR: np.ndarray | None = None  # (columns, k) natural-log brackets
        self.log10_capital_ = 0.0
        self.log10_max_ = 0.0
        self.n_seen_ = 0
        self.alarm_at_: int | None = None

    @property
    def alarm(self) -> bool:
        return self.alarm_at_ is not None

    def update(self, p_values: np.ndarray) -> bool:
        """Consume p-values in order (shape (n,) or (n, columns)); return whether the alarm is raised."""
        if not hasattr(self, "_eps"):
            self.fit()
        p = np.asarray(p_values, dtype=np.float64)
        if p.ndim == 1:
            p = p[:, None]
        if p.ndim != 2 or p.shape[0] == 0:
            return self.alarm
        if np.isnan(p).any() or (p <= 0).any() or (p > 1).any():
            raise ValueError("p-values must lie in (0, 1]")
        n, c = p.shape
        eps = self._eps
        lp = np.log(p)[:, :, None]
        # log f(p) for every betting function: (n, c, k)
        logf = np.concatenate([np.log(eps) + (eps - 1.0) * lp,
                               np.where(p[:, :, None] <= self._cut, self._log_lo, self._log_hi)], axis=2)
        k = logf.shape[2]
        if self._logR is None or self._logR.shape[0] != c:
            self._logR = np.full((c, k), -np.inf)
        t = self.n_seen_ + np.arange(1, n + 1, dtype=np.float64)  # 1-based times of this batch
        log_g = _log_g(t)                                          # log g(t) = log sum_{s >= t} pi(s)
        tail = _log_g(t + 1.0)                                     # log sum_{s > t} pi(s)
        log_pi = log_g + np.log1p(-np.exp(tail - log_g))           # pi(t) = g(t) - g(t + 1)
        csum = np.cumsum(logf, axis=0)
        prev = np.concatenate([np.zeros((1, c, k)), csum[:-1]], axis=0)  # c_{t-1}
        # R_t = exp(c_t) * (R_0 + sum_{s<=t} pi(s) exp(-c_{s-1}))
        terms = log_pi[:, None, None] - prev
        terms[0] = np.logaddexp(terms[0], self._logR)
        logR = csum + np.logaddexp.accumulate(terms, axis=0)
        mix = _logmeanexp(logR.reshape(n, c * k), axis=1)
        logC = np.logaddexp(mix, tail)
        log10C = logC / math.log(10.0)
        self._logR = logR[-1]
        i_max = int(np.argmax(log10C))
        if self.alarm_at_ is None:
            hit = np.nonzero(log10C >= self.threshold_)[0]
            if hit.size:
                self.alarm_at_ = self.n_seen_ + int(hit[0]) + 1
        self.log10_max_ = max(self.log10_max_, float(log10C[i_max]))
        self.log10_capital_ = float(log10C[-1])
        self.n_seen_ += n
        return self.alarm

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n_seen_, "log10_capital": round(self.log10_capital_, 3),
                "log10_max": round(self.log10_max_, 3), "threshold_log10": round(self.threshold_, 3),
                "alpha": float(self.alpha), "alarm": self.alarm, "alarm_at": self.alarm_at_}


def _log_g(t: np.ndarray) -> np.ndarray:
    """log g(t), g(t) = 1 / ln(t + e - 1): the prior mass of start times >= t (g(1) = 1)."""
    return -np.log(np.log(t + (math.e - 1.0)))  # type: ignore[no-any-return]


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (np.log(np.mean(np.exp(a - m), axis=axis, keepdims=True)) + m).squeeze(axis)  # type: ignore[no-any-return]
