r"""Anytime-valid sequential alarms: conformal test martingales.

Two classes:

- :class:`OnlineConformalMartingale` (the component's alarm when it has a
  reference): fed the rows themselves; each row is ranked against half of the
  reference plus every earlier row, so its p-values are exactly uniform and
  independent under exchangeability, whatever the reference size; direction-aware
  bets per feature and on joint columns; see its docstring.
- :class:`ConformalMartingale` (the fallback): fed p-values computed elsewhere
  (e.g. the edge-case detector's, against a *fixed* calibration set). The
  construction below is shared by both.

Input of :class:`ConformalMartingale`: a stream of conformal p-values :math:`p_1, p_2, \dots`, one per
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
larger the set, the closer: measured in ``benchmarks/bench_drift.py``, 23 of
100 clean runs of 20,000 rows alarmed at alpha 0.01 with 500 calibration rows.
Online ranks, :class:`OnlineConformalMartingale`, make it exact.)

The price of anytime validity is delay: a change at row ``s`` has to earn
about ``log(1/alpha) + log s`` nats of evidence, whatever happened before
(:class:`OnlineConformalMartingale` brings this to ``log(1/alpha) + log(s / b)``
plus lower-order terms, with blocks of ``b`` rows per bet). A
detector without a time-uniform bound (ADWIN tests each cut at a fixed
``delta``) can alarm on less evidence, so on a small shift after a few
thousand rows it can be faster; see ``docs/drift.md`` for measured figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import native

__all__ = ["ConformalMartingale", "OnlineConformalMartingale", "conformal_p_values"]


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

    def fit(self, X: Any = None, y: Any = None) -> ConformalMartingale:
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


def _log_g(t: np.ndarray, offset: float = math.e, exponent: float = 1.0) -> np.ndarray:
    """log g(t), g(t) = (ln(c) / ln(t - 1 + c))^q with c = ``offset`` > 1, q = ``exponent`` > 0:
    the prior mass of start times >= t (g(1) = 1, decreasing to 0)."""
    return exponent * (math.log(math.log(offset)) - np.log(np.log(t + (offset - 1.0))))  # type: ignore[no-any-return]


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return (np.log(np.mean(np.exp(a - m), axis=axis, keepdims=True)) + m).squeeze(axis)  # type: ignore[no-any-return]


# -- the conformal test martingale on online ranks (exact with a finite reference) ----------------
#: Rows per pass of :meth:`OnlineConformalMartingale.update`: the (rows, columns, bets) temporaries of a
#: pass stay in the L2 cache (128 x 30 x 15 float64 is 460 KB); the brackets carry over between passes.
_CHUNK = 128

def _sr_mixture(logf: np.ndarray, logR: np.ndarray | None, n_seen: int,
                blocks: np.ndarray | None = None, log_w: np.ndarray | None = None,
                offset: float = math.e, exponent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per column: betting functions mixed over start times (see the module docstring).

    ``logf`` holds ``log f(p_t)`` for every row, column and betting function,
    shape (n, c, k); ``logR`` the brackets after the previous batch, (c, k).
    ``blocks`` (shape (c, k), integers >= 1; default all 1) restricts each
    betting function's start times to the first row of every block of that
    many rows, the block ``j`` (1-based) getting prior mass ``g(j) - g(j + 1)``:
    a bet that earns slowly (a small shift) waits at most a block to start but
    pays ``log b`` nats less for its start time. Each betting function is then
    a mixture of test martingales over its own summable prior, and the
    average over betting functions is again a test martingale.
    Returns the natural-log capital of each column after each row, (n, c),
    and the brackets after the last row.
    """
    n, c, k = logf.shape
    if logR is None:
        logR = np.full((c, k), -np.inf)
    t = n_seen + np.arange(1, n + 1, dtype=np.float64)
    if blocks is None:
        log_g = _log_g(t)
        tail = _log_g(t + 1.0)
        log_pi = (log_g + np.log1p(-np.exp(tail - log_g)))[:, None, None]
        tail_k = tail[:, None, None]
    else:
        ub, inv = np.unique(blocks, return_inverse=True)       # the few distinct block sizes
        b = ub.astype(np.float64)[None]                         # (1, u)
        j = np.floor((t[:, None] - 1.0) / b)                    # 0-based block of row t
        start = (t[:, None] - 1.0) == j * b                     # row t opens a block
        lg = _log_g(j + 1.0, offset, exponent)
        tl = _log_g(j + 2.0, offset, exponent)                          # mass of the start times after row t
        with np.errstate(divide="ignore"):
            lp = np.where(start, lg + np.log1p(-np.exp(tl - lg)), -np.inf)
        inv = inv.reshape(-1)
        kernel = getattr(native.kernels, "sr_mixture", None)  # None: not built (or built before it existed)
        if kernel is not None and not (np.isnan(logR) | np.isposinf(logR)).any():
            return _sr_mixture_native(kernel, logf, logR, lp, tl, inv.reshape(c, k), log_w)
        log_pi = lp[:, inv].reshape(n, c, k)
        tail_k = tl[:, inv].reshape(n, c, k)
    csum = np.cumsum(logf, axis=0)
    prev = np.concatenate([np.zeros((1, c, k)), csum[:-1]], axis=0)
    terms = log_pi - prev
    terms[0] = np.logaddexp(terms[0], logR)
    logR_all = csum + _log_cumsum_exp(terms)
    if blocks is None:
        logC = np.logaddexp(_logmeanexp(logR_all, axis=2), tail_k[:, :, 0])
    elif log_w is None:
        logC = _logmeanexp(np.logaddexp(logR_all, tail_k), axis=2)
    else:
        a = np.logaddexp(logR_all, tail_k) + log_w
        m = a.max(axis=2, keepdims=True)
        logC = (np.log(np.exp(a - m).sum(axis=2, keepdims=True)) + m)[..., 0]
    return logC, logR_all[-1]


def _sr_mixture_native(kernel: Any, logf: np.ndarray, logR: np.ndarray, log_pi: np.ndarray, log_tail: np.ndarray,
                       group: np.ndarray, log_w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_sr_mixture` with blocks, by the compiled kernel (``_native.sr_mixture``): the same brackets,
    row by row in linear space with a per-column scale (one multiply-add per row, column and bet instead
    of NumPy's passes in log space; equal to it up to rounding, as the tests check).

    ``log_pi``, ``log_tail``: (rows, block sizes) log prior mass of a start at each row (-inf where no
    block starts) and of the starts after it; ``group``: (columns, bets) the block size of each bet."""
    n, c, k = logf.shape
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        top = logf.max(axis=2)
        lift = np.where(top > 100.0, top, 0.0)               # a factor above e^100 leaves the row, into the scale
        f = np.exp(logf - lift[:, :, None])
        scale = logR.max(axis=1)                              # -inf (no bracket yet) or finite here
        scale = np.where(np.isfinite(scale), np.maximum(scale, 0.0), 0.0)  # the kernel keeps S >= 0
        R = np.exp(logR - scale[:, None])
    w = np.full((c, k), 1.0 / k) if log_w is None else np.ascontiguousarray(np.exp(log_w), dtype=np.float64)
    logC = np.empty((n, c))
    kernel(np.ascontiguousarray(f), np.ascontiguousarray(lift), np.ascontiguousarray(np.exp(log_pi)),
           np.ascontiguousarray(np.exp(log_tail)), np.ascontiguousarray(group, dtype=np.int64), w, R, scale, logC)
    with np.errstate(divide="ignore"):
        return logC, np.log(R) + scale[:, None]


def _log_cumsum_exp(a: np.ndarray) -> np.ndarray:
    """``log(cumsum(exp(a), axis=0))``: scaled by each column's maximum; columns that underflow are redone exactly."""
    g = a.max(axis=0)
    g = np.where(np.isfinite(g), g, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        S = np.cumsum(np.exp(a - g), axis=0)
        out = np.log(S) + g
    bad = ~(S[0] > 1e-280) & np.isfinite(a).any(axis=0)
    if bad.any():
        out[:, bad] = np.logaddexp.accumulate(a[:, bad], axis=0)
    return out  # type: ignore[no-any-return]


def _bet_logf(p: np.ndarray, deltas: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """log f(p) for the normal-score betting functions, shape p.shape + (k,).

    With ``z = Phi^{-1}(1 - p)`` (a standard normal under the null), the
    mean bets are ``f(p) = exp(d z - d^2 / 2)`` for each ``d`` in ``+-deltas``
    and the scale bets ``f(p) = exp(-z^2 (1 / s^2 - 1) / 2) / s`` for each
    ``s`` in ``scales``: likelihood ratios of N(d, 1) and N(0, s^2) against
    N(0, 1), so each integrates to 1 over [0, 1] whatever the data.
    """
    from scipy.special import ndtri

    # p = 1 can arise from rounding; clipping only lowers each bet's integral (on a set of measure ~1e-16)
    z = -ndtri(np.clip(p, 1e-300, 1.0 - 1e-16))[..., None]
    d = np.concatenate([deltas, -deltas])
    mean = d * z - 0.5 * d * d
    scale = -0.5 * z * z * (1.0 / (scales * scales) - 1.0) - np.log(scales)
    return np.concatenate([mean, scale], axis=-1)  # type: ignore[no-any-return]


class OnlineConformalMartingale:
    r"""Conformal test martingales on online ranks: a sequential drift alarm valid with a finite reference.

    Each new row is ranked, feature by feature, against the reference rows
    *plus every earlier stream row* (Vovk's conformal test martingale):
    the smoothed conformal p-value of row ``t`` in column ``j`` is

    .. math:: p_{tj} = \frac{\#\{i < t: a_{ij} > a_{tj}\} + U_{tj}\,(1 + \#\{i < t: a_{ij} = a_{tj}\})}{N_0 + t}

    over the ``N_0`` reference rows in the bag and the ``t - 1`` earlier
    stream rows, with ``U`` uniform on (0, 1). If the bag rows and the
    stream rows are exchangeable (e.g. independent draws of one
    distribution), each column's p-values are *exactly* independent and
    uniform, for any reference size (the validity of smoothed conformal
    transducers: Vovk, Gammerman, Shafer, *Algorithmic Learning in a Random
    World*; Vovk, Nouretdinov, Gammerman 2003), so nothing depends on the
    reference sample being representative.

    Scores ``a`` (fixed functions, so the theorem applies): the reference is
    split at random in two halves. The *score half* only defines the scores:
    a numeric feature's score is its bin among at most ``n_bins`` quantile
    bins of the score half (values in one bin tie; the smoothing makes ties
    exact; NaN is above every value), a categorical feature's is the rank of
    its category by rarity in the score half (unseen categories rarest).
    With ``joint=True`` and two numeric features or more, *joint columns*
    see a change of the dependence between features: the binned Mahalanobis
    distance of the row (mean and covariance of the score half; it rises when
    correlations weaken), the *mean of the standardised features* (a fixed
    projection: a shift that moves many features a little, the same way, moves
    it by about the square root of their number times as much, so its mean bets
    see it sooner than any one feature's), and, with at most ``joint_pairs`` numeric features,
    the product ``z_a z_b`` of every pair of standardised features (its mean is
    their correlation, so it moves both when a correlation appears and when
    it vanishes). The *bag half*
    starts the bag. Memory is bounded: the bag is one count per bin and
    column (``n_bins + 2`` per column), however long the stream, and a row
    costs O(columns) counts plus its comparisons with earlier rows of its batch.

    Betting, per numeric or joint column: on ``z = Phi^{-1}(1 - p)`` (standard
    normal under the null), mean bets ``exp(d z - d^2/2)`` for ``d`` in
    ``+-deltas`` (a shift up or down; slow drift) and scale bets (a variance
    change). Per categorical column: step bets ``a`` on ``p <= c``,
    ``(1 - a c) / (1 - c)`` above, with ``c`` at the score half's cumulative
    shares of the rarest categories and ``a`` in (0.5, 1.5, 2, 3) (rarer
    categories more or less frequent). Mixed over bets with the weights
    ``delta_weights`` (each mean bet, up and down alike) and ``scale_weights``,
    normalised (categorical columns: equal weights), and over start times as in
    :class:`ConformalMartingale`, but each bet's start times on *blocks* of
    about ``block_scale / r`` rows (``r`` the bet's expected log gain per row
    under the alternative it is the likelihood ratio of), block ``j`` having
    prior mass ``g(j) - g(j + 1)`` with ``g(j) = (ln c / ln(j - 1 + c))^q``,
    ``c = start_offset``, ``q = start_exponent`` (``g(1) = 1``, decreasing to 0,
    so any ``c > 1``, ``q > 0`` is a valid prior). A change at block ``j`` costs
    ``-ln(g(j) - g(j + 1)) ~ ln(j + c) + (1 + q) ln ln(j + c) - ln q - q ln ln c``
    nats of evidence: the defaults (``c = 30``, ``q = 2``) keep the prior nearly
    flat over the first ~30 blocks (~60 / r rows: a change that early is caught
    fast anyway; the skew check and the window tests watch the first rows) and
    save 1-1.5 nats on later changes against ``c = e``, ``q = 1``. The default
    bet weights favour small mean shifts, where a nat costs many rows (0.15
    and 0.3 sd get 17% each per direction, 1.3 sd 1%; the scale bets 8% in
    all): ``ln(1 / w)`` nats cost ``ln(1 / w) / r`` rows, so the same nat is
    ~75 times dearer for a 0.15 sd bet than for a 1.3 sd one. Each column's capital ``C_j`` is a test
    martingale in the filtration of that column's p-values. Column ``j`` has a
    weight ``w_j`` (features share ``1 - joint_weight`` equally, joint columns
    ``joint_weight``; features share 1 when there are no joint columns) and the
    alarm is raised when some ``w_j C_j`` reaches ``1 / alpha``: by Ville's
    inequality for each column and a union bound, **on an unbounded stream the
    alarm is ever raised with probability at most ``alpha``** under the null
    above. (Columns share rows, so an average of their capitals would not be a
    martingale in a common filtration; the union bound costs ``log(1 / w_j)`` nats.)

    Parameters
    ----------
    alpha : float, default=0.01
        Bound on the probability of ever raising the alarm under exchangeability.
    categorical : sequence of int, default=()
        Indices of categorical features (category codes).
    n_bins : int, default=1024
        Largest number of score bins per numeric column (the memory bound).
    joint : bool, default=True
        Add joint columns when there are two numeric features or more.
    joint_pairs : int, default=8
        Add the pair-product columns when there are at most this many numeric features.
    joint_weight : float, default=0.25
        Share of ``alpha`` spent on the joint columns.
    feature_names : sequence of str, optional
        Names for :attr:`column_labels_`; default ``x0, x1, ...``.
    deltas : sequence of float, default=(0.15, 0.3, 0.5, 0.8, 1.3)
        Mean bets (each used up and down).
    scales : sequence of float, default=(0.6, 0.8, 1.25, 1.6, 2.5)
        Scale bets (standard deviation ratios).
    delta_weights : sequence of float, default=(3, 3, 1.5, 0.5, 0.2)
        Prior weight of each mean bet (one per delta, used for both directions).
    scale_weights : sequence of float, default=(0.3,) * 5
        Prior weight of each scale bet; all weights are normalised together.
    block_scale : float, default=2.0
        Start-time blocks of ``block_scale / r`` rows per bet (clipped to 1-256; 0: every row).
    start_offset, start_exponent : float, default=30.0, 2.0
        ``c`` and ``q`` of the start-time prior above.
    random_state : int, default=0
        Seeds the reference split and the smoothing draws.

    Attributes
    ----------
    n_features_in_ : int
    n_columns_ : int
        Columns tested: features, then the joint columns.
    column_labels_ : tuple of str
        A label per column (``"(joint) Mahalanobis"``, ``"(joint) mean"``, ``"(joint) a*b"`` for joint columns).
    weights_ : ndarray of shape (n_columns_,)
    n_bag_ : int
        Reference rows in the bag (the other half defines the scores).
    n_seen_ : int
        Stream rows consumed.
    log10_capital_, log10_max_ : float
        log10 of the largest weighted capital ``w_j C_j`` now, and the largest ever
        (it starts at ``log10 max w_j``, at most 0).
    threshold_ : float
        log10(1 / alpha).
    alarm_at_ : int or None
        Stream row count at the first alarm; latched until :meth:`reset`.
    alarm_column_ : int or None
        Column that raised it (see :attr:`column_labels_`).
    """

    def __init__(self, *, alpha: float = 0.01, categorical: Sequence[int] = (), n_bins: int = 1024,
                 joint: bool = True, joint_pairs: int = 8, joint_weight: float = 0.25,
                 feature_names: Sequence[str] | None = None, deltas: Sequence[float] = (0.15, 0.3, 0.5, 0.8, 1.3),
                 scales: Sequence[float] = (0.6, 0.8, 1.25, 1.6, 2.5),
                 delta_weights: Sequence[float] = (3.0, 3.0, 1.5, 0.5, 0.2),
                 scale_weights: Sequence[float] = (0.3, 0.3, 0.3, 0.3, 0.3), block_scale: float = 2.0,
                 start_offset: float = 30.0, start_exponent: float = 2.0, random_state: int = 0) -> None:
        self.alpha = alpha
        self.categorical = categorical
        self.n_bins = n_bins
        self.joint = joint
        self.joint_pairs = joint_pairs
        self.joint_weight = joint_weight
        self.feature_names = feature_names
        self.deltas = deltas
        self.scales = scales
        self.delta_weights = delta_weights
        self.scale_weights = scale_weights
        self.block_scale = block_scale
        self.start_offset = start_offset
        self.start_exponent = start_exponent
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: Any = None) -> OnlineConformalMartingale:
        """Split the reference ``X`` (rows x features): score half and bag half."""
        if not (0 < float(self.alpha) < 1):
            raise ValueError(f"alpha={self.alpha!r} is invalid: expected a number in (0, 1)")
        if not (0 < float(self.joint_weight) < 1):
            raise ValueError(f"joint_weight={self.joint_weight!r} is invalid: expected a number in (0, 1)")
        if not isinstance(self.n_bins, int) or self.n_bins < 2:
            raise ValueError(f"n_bins={self.n_bins!r} is invalid: expected an integer >= 2")
        deltas = np.asarray(self.deltas, dtype=np.float64)
        scales = np.asarray(self.scales, dtype=np.float64)
        if deltas.ndim != 1 or np.any(~(deltas > 0)) or scales.ndim != 1 or np.any(~(scales > 0)) \
                or deltas.size + scales.size == 0:
            raise ValueError(f"deltas={self.deltas!r}, scales={self.scales!r} are invalid: expected positive numbers")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 4:
            raise ValueError(f"reference must be 2-D with at least 4 rows, got shape {X.shape}")
        d = X.shape[1]
        cat = sorted({int(i) for i in self.categorical})
        if any(i < 0 or i >= d for i in cat):
            raise ValueError(f"categorical={list(self.categorical)} is invalid: indices must be in [0, {d})")
        dw = np.asarray(self.delta_weights, dtype=np.float64)
        sw = np.asarray(self.scale_weights, dtype=np.float64)
        if dw.shape != deltas.shape or sw.shape != scales.shape or np.any(~(dw > 0)) or np.any(~(sw > 0)):
            raise ValueError(f"delta_weights={self.delta_weights!r}, scale_weights={self.scale_weights!r} are invalid: "
                             f"expected one positive number per delta ({deltas.size}) and per scale ({scales.size})")
        if not (float(self.start_offset) > 1) or not (float(self.start_exponent) > 0):
            raise ValueError(f"start_offset={self.start_offset!r}, start_exponent={self.start_exponent!r} are invalid: "
                             "expected an offset > 1 and an exponent > 0")
        self._deltas, self._scales = deltas, scales
        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(X.shape[0])
        S, B = X[perm[: X.shape[0] // 2]], X[perm[X.shape[0] // 2:]]
        self.n_features_in_ = d
        self._cat = cat
        self._num = [i for i in range(d) if i not in set(cat)]
        self._edges: list[np.ndarray | None] = []
        self._catmap: list[dict[float, int] | None] = []
        self._cat_steps: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        widths = []
        for i in range(d):
            col = S[:, i]
            if i in set(cat):
                v, c = np.unique(col[~np.isnan(col)], return_counts=True)
                order = np.argsort(-c, kind="stable")  # most common first: rarer = larger score
                self._catmap.append({float(v[o]): r for r, o in enumerate(order)})
                shares = np.cumsum(c[order][::-1]) / max(c.sum(), 1)  # the m rarest categories' share, m = 1, 2, ...
                self._cat_steps[i] = _step_bets(shares[:-1][:6])
                self._edges.append(None)
                widths.append(len(v) + 1)              # + unseen (and NaN)
            else:
                self._edges.append(_quantile_edges(col[~np.isnan(col)], self.n_bins))
                self._catmap.append(None)
                widths.append(len(self._edges[-1]) + 2)  # + above all, + NaN
        names = list(self.feature_names) if self.feature_names is not None else [f"x{i}" for i in range(d)]
        if len(names) != d:
            raise ValueError(f"feature_names has {len(names)} names for {d} features")
        labels = [str(n) for n in names]
        self._has_joint = bool(self.joint) and len(self._num) >= 2
        self._pairs: list[tuple[int, int]] = []
        self._jedges: list[np.ndarray] = []
        if self._has_joint:
            N = S[:, self._num]
            self._mu = np.nanmean(N, axis=0)
            sd = np.nanstd(N, axis=0)
            self._sd = np.where(sd > 0, sd, 1.0)
            N = np.where(np.isnan(N), self._mu, N)
            cov = np.cov(N, rowvar=False)
            cov += np.eye(len(self._num)) * (1e-6 * max(float(np.trace(cov)) / len(self._num), 1e-12))
            self._prec = np.linalg.pinv(cov)
            k = len(self._num)
            if k <= int(self.joint_pairs):
                self._pairs = [(a, b) for a in range(k) for b in range(a + 1, k)]
            labels += ["(joint) Mahalanobis", "(joint) mean"] + [
                f"(joint) {names[self._num[a]]}*{names[self._num[b]]}" for a, b in self._pairs]
            for col in self._joint_scores(S).T:
                self._jedges.append(_quantile_edges(col, self.n_bins))
                widths.append(len(self._jedges[-1]) + 2)
        self.n_columns_ = len(labels)
        self.column_labels_ = tuple(labels)
        n_joint = self.n_columns_ - d
        jw = float(self.joint_weight) if n_joint else 0.0
        self.weights_ = np.array([(1.0 - jw) / d] * d + [jw / max(n_joint, 1)] * n_joint)
        self._log10w = np.log10(self.weights_)
        self._width = max(widths)
        self._bag0 = np.zeros((self.n_columns_, self._width), dtype=np.int64)
        Bb = self._bins(B)
        for j in range(self.n_columns_):
            self._bag0[j] += np.bincount(Bb[:, j], minlength=self._width)
        self.n_bag_ = B.shape[0]
        self.threshold_ = math.log10(1.0 / float(self.alpha))
        k = 2 * deltas.size + scales.size  # every column mixes k bets: categorical step bets are cycled to k
        self._cat_steps = {j: tuple(a[np.arange(k) % len(a)] for a in v)  # type: ignore[misc]
                           for j, v in self._cat_steps.items()}
        if not (float(self.block_scale) >= 0):
            raise ValueError(f"block_scale={self.block_scale!r} is invalid: expected a number >= 0 (0: no blocks)")
        # each bet's start times: blocks of ~ block_scale / rate rows, the rate being the bet's expected log
        # gain per row under the alternative it is the likelihood ratio of (KL): d^2 / 2 for a mean bet,
        # (s^2 - 1) / 2 - ln s for a scale bet, KL(Bern(a c) || Bern(c)) for a step bet
        rate = np.concatenate([deltas ** 2 / 2, deltas ** 2 / 2, (scales ** 2 - 1) / 2 - np.log(scales)])
        rates = np.tile(rate, (self.n_columns_, 1))
        for j, (cut, lo, _) in self._cat_steps.items():
            q = np.clip(np.exp(lo) * cut, 1e-9, 1 - 1e-9)
            rates[j] = q * np.log(q / cut) + (1 - q) * np.log((1 - q) / (1 - cut))
        with np.errstate(divide="ignore"):
            self.blocks_ = np.clip(np.round(float(self.block_scale) / np.maximum(rates, 1e-12)), 1, 256).astype(np.int64)
        # the prior over bets: numeric and joint columns weigh each mean bet (both directions) and scale bet by
        # delta_weights / scale_weights, normalised; categorical columns weigh their (cycled) step bets equally
        w = np.concatenate([dw, dw, sw])
        self._log_w = np.tile(np.log(w / w.sum()), (self.n_columns_, 1))
        for j in self._cat_steps:
            self._log_w[j] = -math.log(k)
        self.reset()
        return self

    def reset(self) -> None:
        """Back to the reference bag and capital 1 (a new test)."""
        self._counts = self._bag0.copy()
        self._n_bag = int(self.n_bag_)
        self._rng = np.random.default_rng(self.random_state + 1)
        self._logR: np.ndarray | None = None
        self.n_seen_ = 0
        self.log10_capital_ = float(self._log10w.max())
        self.log10_max_ = self.log10_capital_
        self.alarm_at_: int | None = None
        self.alarm_column_: int | None = None

    @property
    def alarm(self) -> bool:
        return self.alarm_at_ is not None

    # -- scores -----------------------------------------------------------------------------
    def _joint_scores(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance, mean of the standardised features and pair products of the rows,
        shape (n, 2 + pairs)."""
        N = X[:, self._num]
        N = np.where(np.isnan(N), self._mu, N) - self._mu
        out = [np.einsum("ij,jk,ik->i", N, self._prec, N)]
        Z = N / self._sd
        out.append(Z.mean(axis=1))
        out += [Z[:, a] * Z[:, b] for a, b in self._pairs]
        return np.column_stack(out)

    def _bins(self, X: np.ndarray) -> np.ndarray:
        """Score bin of every row and column, shape (n, columns)."""
        n = X.shape[0]
        out = np.empty((n, self.n_columns_), dtype=np.int64)
        for i in range(self.n_features_in_):
            col = X[:, i]
            e = self._edges[i]
            if e is not None:
                b = np.searchsorted(e, col, side="right")
                b[np.isnan(col)] = len(e) + 1
            else:
                m = self._catmap[i]
                unseen = len(m)
                b = np.array([m.get(float(v), unseen) for v in col.tolist()], dtype=np.int64)
            out[:, i] = b
        if self._has_joint:
            d = self.n_features_in_
            for c, col in enumerate(self._joint_scores(X).T):
                out[:, d + c] = np.searchsorted(self._jedges[c], col, side="right")
        return out

    # -- p-values and capital -----------------------------------------------------------------
    def p_values(self, X: np.ndarray) -> np.ndarray:
        """Online conformal p-values of the rows of ``X`` in order (small = large score), adding them to the bag.

        Low-level: :meth:`update` calls it; calling it alone advances the bag but not the capital.
        """
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError("OnlineConformalMartingale is not fitted: call fit(reference) first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"rows must have shape (n, {self.n_features_in_}), got {X.shape}")
        bins = self._bins(X)
        n, k = bins.shape
        out = np.empty((n, k))
        # rows in blocks of s: earlier blocks are in the bag's counts, earlier rows of the block are compared
        # one by one (s x s x k); s ~ sqrt(bins) balances the cumulative sum per block against the comparisons
        s = int(np.clip(math.sqrt(self._width), 16, 128))
        flat = self._counts.reshape(-1)
        offset = (np.arange(k) * self._width)[None, :]
        tri = np.tri(s, s, -1, dtype=bool)[:, :, None]           # [i, l]: row l came before row i
        u_all = self._rng.uniform(size=(n, k))
        for a in range(0, n, s):
            C = bins[a:a + s]
            m = C.shape[0]
            idx = C + offset
            cum = np.cumsum(self._counts, axis=1).reshape(-1)
            gt = self._n_bag - cum[idx]                           # bag rows with a larger score
            eq = flat[idx]                                        # ... with the same score
            earlier = tri[:m, :m]
            gt = gt + (earlier & (C[None, :, :] > C[:, None, :])).sum(axis=1)
            eq = eq + (earlier & (C[None, :, :] == C[:, None, :])).sum(axis=1)
            tot = self._n_bag + np.arange(1, m + 1, dtype=np.float64)[:, None]
            out[a:a + m] = np.maximum(gt + u_all[a:a + m] * (eq + 1.0), 1e-300) / tot
            flat += np.bincount(idx.reshape(-1), minlength=flat.size)
            self._n_bag += m
        return out

    def update(self, X: np.ndarray) -> bool:
        """Consume stream rows in order; return whether the alarm is raised (latched)."""
        p = self.p_values(X)
        for a in range(0, p.shape[0], _CHUNK):
            pa = p[a:a + _CHUNK]
            logf = _bet_logf(pa, self._deltas, self._scales)
            for j, (cut, lo, hi) in self._cat_steps.items():
                logf[:, j, :] = np.where(pa[:, j, None] <= cut, lo, hi)
            logC, self._logR = _sr_mixture(logf, self._logR, self.n_seen_, self.blocks_, self._log_w,
                                           float(self.start_offset), float(self.start_exponent))
            log10C = logC / math.log(10.0) + self._log10w
            best = log10C.max(axis=1)
            if self.alarm_at_ is None:
                hit = np.nonzero(best >= self.threshold_)[0]
                if hit.size:
                    self.alarm_at_ = self.n_seen_ + int(hit[0]) + 1
                    self.alarm_column_ = int(np.argmax(log10C[hit[0]]))
            self.log10_max_ = max(self.log10_max_, float(best.max()))
            self.log10_capital_ = float(best[-1])
            self.n_seen_ += logC.shape[0]
        return self.alarm

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n_seen_, "log10_capital": round(self.log10_capital_, 3),
                "log10_max": round(self.log10_max_, 3), "threshold_log10": round(self.threshold_, 3),
                "alpha": float(self.alpha), "columns": self.n_columns_, "reference_in_bag": self.n_bag_,
                "alarm": self.alarm, "alarm_at": self.alarm_at_,
                "alarm_column": None if self.alarm_column_ is None else self.column_labels_[self.alarm_column_]}


def _step_bets(cuts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step betting functions at ``cuts``: ``a`` on ``p <= c`` and ``(1 - a c) / (1 - c)`` above, a in (0.5, 1.5, 2, 3).

    Returns (cut, log value below, log value above) per bet. Each integrates to
    1 over [0, 1]. (Cycling the list to a longer one repeats bets, which only
    reweights the mixture.)
    """
    c, a = [], []
    for cut in np.asarray(cuts, dtype=float):
        if not (0.0 < cut < 1.0):
            continue
        for mult in (0.5, 1.5, 2.0, 3.0):
            if mult * cut < 1.0:
                c.append(cut)
                a.append(mult)
    if not c:  # one category: nothing to bet on
        c, a = [0.5], [1.0]
    cut, av = np.array(c), np.array(a)
    return cut, np.log(av), np.log((1.0 - av * cut) / (1.0 - cut))


def _quantile_edges(v: np.ndarray, n_bins: int) -> np.ndarray:
    """At most ``n_bins - 1`` increasing cut points: the distinct values, or quantiles when there are more."""
    u = np.unique(v)
    if len(u) < n_bins:
        return u  # type: ignore[no-any-return]
    return np.unique(np.quantile(v, np.arange(1, n_bins) / n_bins))  # type: ignore[no-any-return]
