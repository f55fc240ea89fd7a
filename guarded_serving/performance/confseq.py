"""An anytime-valid confidence sequence for the mean of values in [0, 1] (pure numpy).

The predictable plug-in empirical-Bernstein confidence sequence (PrPl-EB) of
Waudby-Smith and Ramdas, "Estimating means of bounded random variables by betting"
(JRSS-B 2023, Theorem 2). For values ``x_1, x_2, ...`` in [0, 1] with conditional mean ``mu``:

.. math::

    \\hat\\mu_t = \\frac{1/2 + \\sum_{i \\le t} x_i}{t + 1}, \\qquad
    \\hat\\sigma^2_t = \\frac{1/4 + \\sum_{i \\le t} (x_i - \\hat\\mu_i)^2}{t + 1},

    \\lambda_t = \\min\\Big(\\sqrt{\\tfrac{2 \\log(1/\\alpha)}{\\hat\\sigma^2_{t-1}\\, t \\log(1 + t)}}, c\\Big),
    \\qquad v_t = 4 (x_t - \\hat\\mu_{t-1})^2, \\qquad \\psi_E(\\lambda) = \\tfrac{-\\log(1-\\lambda) - \\lambda}{4},

    \\text{upper}_t = \\frac{\\sum \\lambda_i x_i}{\\sum \\lambda_i}
    + \\frac{\\log(1/\\alpha) + \\sum v_i \\psi_E(\\lambda_i)}{\\sum \\lambda_i}

and the lower bound with the minus sign. ``exp(sum lambda_i (x_i - m) - v_i psi_E(lambda_i))``
is a non-negative supermartingale at ``m = mu``, so by Ville's inequality the one-sided bound
holds *at every t at once* with probability at least ``1 - alpha``: checking after every
value is valid, and so is stopping whenever one likes. The running intersection (the
smallest upper bound and the largest lower bound seen so far) keeps that guarantee and
only ever tightens. ``side="both"`` spends ``alpha / 2`` per side.

Used for expectations such as ``accuracy >= 0.99``: the check is degraded once the upper
bound of the accuracy falls below 0.99; while the accuracy is at least 0.99 that happens
with probability at most ``alpha`` over the whole, unbounded stream.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EmpiricalBernsteinCS", "RestartingCS", "bounds_path"]

_SIDES = ("upper", "lower", "both")


class EmpiricalBernsteinCS:
    """Running anytime-valid bounds on the mean of a stream of values in [0, 1].

    Parameters
    ----------
    alpha : float, default=0.01
        Probability that a bound is ever wrong, over the whole stream.
    side : {"upper", "lower", "both"}, default="both"
        Which bounds must hold (``both``: each at ``alpha / 2``).
    c : float, default=0.5
        Cap of the bets ``lambda_t`` (the paper suggests 1/2 or 3/4).

    Attributes
    ----------
    n_ : int
        Values seen.
    mean_ : float
        Their plain mean (nan before the first).
    upper_, lower_ : float
        The running intersection of the bounds (1 and 0 before the first value).
    """

    def __init__(self, alpha: float = 0.01, *, side: str = "both", c: float = 0.5) -> None:
        if not 0 < alpha < 1:
            raise ValueError(f"alpha={alpha!r} is invalid: expected a level strictly between 0 and 1, e.g. 0.01")
        if side not in _SIDES:
            raise ValueError(f"side={side!r} is invalid: expected one of {_SIDES}")
        if not 0 < c < 1:
            raise ValueError(f"c={c!r} is invalid: expected a cap strictly between 0 and 1, e.g. 0.5")
        self.alpha = alpha
        self.side = side
        self.c = c
        self._log = math.log((2.0 if side == "both" else 1.0) / alpha)
        self.n_ = 0
        self._sum_x = 0.0       # sum of x_i
        self._sum_sq = 0.0      # sum of (x_i - mu_hat_i)^2
        self._sum_lam = 0.0     # sum of lambda_i
        self._sum_lam_x = 0.0   # sum of lambda_i x_i
        self._sum_vpsi = 0.0    # sum of v_i psi_E(lambda_i)
        self.upper_ = 1.0
        self.lower_ = 0.0

    @property
    def mean_(self) -> float:
        return self._sum_x / self.n_ if self.n_ else float("nan")

    def update(self, x: "np.ndarray | list[float] | float", *,
               path: bool = False) -> "tuple[np.ndarray, np.ndarray] | None":
        """Take values (in order) and tighten the bounds.

        With ``path=True`` returns ``(lower_t, upper_t)``, the running bounds after each value,
        arrays of shape (len(x),): what a check after every value sees.
        """
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        if a.size == 0:
            return (np.empty(0), np.empty(0)) if path else None
        if not np.all((a >= 0) & (a <= 1)):
            raise ValueError("values must lie in [0, 1] (clip or rescale them first)")
        n0 = self.n_
        t = np.arange(n0 + 1, n0 + a.size + 1, dtype=np.float64)       # 1-indexed step
        cs = self._sum_x + np.cumsum(a)                                 # sum x up to t
        mu = (0.5 + cs) / (t + 1)                                       # mu_hat_t
        mu_prev = np.concatenate(([(0.5 + self._sum_x) / (n0 + 1)], mu[:-1]))
        sq = self._sum_sq + np.cumsum((a - mu) ** 2)
        var_prev = np.concatenate(([(0.25 + self._sum_sq) / (n0 + 1)], ((0.25 + sq) / (t + 1))[:-1]))
        lam = np.minimum(np.sqrt(2.0 * self._log / (var_prev * t * np.log1p(t))), self.c)
        v = 4.0 * (a - mu_prev) ** 2
        psi = (-np.log1p(-lam) - lam) / 4.0
        s_lam = self._sum_lam + np.cumsum(lam)
        s_lam_x = self._sum_lam_x + np.cumsum(lam * a)
        s_vpsi = self._sum_vpsi + np.cumsum(v * psi)
        centre = s_lam_x / s_lam
        margin = (self._log + s_vpsi) / s_lam
        up = np.minimum.accumulate(np.minimum(centre + margin, self.upper_)) if self.side != "lower" \
            else np.ones_like(centre)
        lo = np.maximum.accumulate(np.maximum(centre - margin, self.lower_)) if self.side != "upper" \
            else np.zeros_like(centre)
        up = np.clip(up, 0.0, 1.0)
        lo = np.clip(lo, 0.0, 1.0)
        self.n_ = n0 + a.size
        self._sum_x = float(cs[-1])
        self._sum_sq = float(sq[-1])
        self._sum_lam, self._sum_lam_x, self._sum_vpsi = float(s_lam[-1]), float(s_lam_x[-1]), float(s_vpsi[-1])
        self.upper_, self.lower_ = float(up[-1]), float(lo[-1])
        return (lo, up) if path else None

    def to_dict(self) -> dict[str, float]:
        return {"n": self.n_, "mean": self.mean_, "lower": self.lower_, "upper": self.upper_, "alpha": self.alpha}


class RestartingCS:
    """One-sided bounds on the mean since the start *and* since each of the latest restarts.

    A mean judged since the first value reacts slowly to a change after a long good history
    (thousands of good labels hold the running mean up). This keeps, besides the sequence
    started at the first value (level ``alpha / 2``), one started every ``every`` values:
    the one started at value ``j * every`` has level ``alpha / (2 j (j + 1))``. The levels sum
    to ``alpha``, so by the union bound the probability that *any* of them is ever wrong,
    over an unbounded stream, is at most ``alpha``: the check stays anytime-valid while it
    sees a drop within a few hundred values of the first restart after it. Only the latest
    ``keep`` restarts are kept (dropping a sequence only removes chances to alarm).

    Parameters
    ----------
    alpha : float, default=0.01
    side : {"upper", "lower"}, default="upper"
        ``upper`` judges "the mean is at least a target" (alarm when the upper bound is below
        it), ``lower`` "at most".
    every : int, default=500
    keep : int, default=8

    Attributes
    ----------
    n_ : int
    bound_ : float
        The most telling bound: the smallest upper (or largest lower) bound among the sequences.
    since_ : int
        Values seen before the sequence that gives ``bound_`` started (0: since the first).
    overall : EmpiricalBernsteinCS
        The sequence since the first value.
    """

    def __init__(self, alpha: float = 0.01, *, side: str = "upper", every: int = 500, keep: int = 8) -> None:
        if side not in ("upper", "lower"):
            raise ValueError(f"side={side!r} is invalid: expected 'upper' or 'lower'")
        if not isinstance(every, int) or every < 1 or not isinstance(keep, int) or keep < 0:
            raise ValueError(f"every={every!r}, keep={keep!r} are invalid: expected integers >= 1 and >= 0")
        self.alpha, self.side, self.every, self.keep = alpha, side, every, keep
        self.overall = EmpiricalBernsteinCS(alpha / 2, side=side)
        self._restarts: list[tuple[int, EmpiricalBernsteinCS]] = []
        self.n_ = 0
        self.bound_ = 1.0 if side == "upper" else 0.0
        self.since_ = 0

    @property
    def mean_(self) -> float:
        return self.overall.mean_

    def _best(self, a: float, b: float) -> bool:
        return a < b if self.side == "upper" else a > b

    def update(self, x: "np.ndarray | list[float] | float", *, path: bool = False) -> "np.ndarray | None":
        """Take values in order; with ``path=True`` return the most telling bound after each."""
        a = np.asarray(x, dtype=np.float64).reshape(-1)
        out: list[np.ndarray] = []
        i = 0
        while i < a.size:
            pos = self.n_
            if pos > 0 and pos % self.every == 0 and (not self._restarts or self._restarts[-1][0] != pos):
                j = pos // self.every
                self._restarts.append((pos, EmpiricalBernsteinCS(self.alpha / (2 * j * (j + 1)), side=self.side)))
                if len(self._restarts) > self.keep:
                    self._restarts.pop(0)
            stop = min(a.size, i + self.every - pos % self.every)
            seg = a[i:stop]
            paths = [(0, self.overall.update(seg, path=True))]
            paths += [(start, cs.update(seg, path=True)) for start, cs in self._restarts]
            side = 1 if self.side == "upper" else 0
            stack = np.vstack([p[side] for _, p in paths])  # type: ignore[index]
            out.append(stack.min(0) if self.side == "upper" else stack.max(0))
            self.n_ += seg.size
            i = stop
        best, since, which = (self.overall.upper_ if self.side == "upper" else self.overall.lower_), 0, self.overall
        for start, cs in self._restarts:
            b = cs.upper_ if self.side == "upper" else cs.lower_
            if self._best(b, best):
                best, since, which = b, start, cs
        self.bound_, self.since_, self._which = best, since, which
        if path:
            return np.concatenate(out) if out else np.empty(0)
        return None

    @property
    def mean_since_(self) -> float:
        """The plain mean of the values ``bound_`` rests on."""
        return getattr(self, "_which", self.overall).mean_

    def labels_since(self) -> int:
        """Values the sequence behind ``bound_`` rests on."""
        return self.n_ - self.since_


def bounds_path(x: "np.ndarray | list[float]", alpha: float = 0.01, *, side: str = "both",
                c: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(lower_t, upper_t)`` after each value of ``x`` (a fresh sequence): for benchmarks and tests."""
    out = EmpiricalBernsteinCS(alpha, side=side, c=c).update(x, path=True)
    assert out is not None
    return out
