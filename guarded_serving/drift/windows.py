"""Windowed two-sample tests of a window of serving rows against a reference.

Per feature:

- numeric: the two-sample Kolmogorov-Smirnov test (exact statistic, asymptotic
  p-value with Stephens' small-sample correction), with the Wasserstein-1
  distance divided by the reference standard deviation as effect size;
- categorical: the chi-squared test of homogeneity on the 2 x k table of
  reference and window counts. Categories never seen in the reference are
  pooled in one "unseen" column (a count of 0 on the reference side is fine
  for a homogeneity test; columns empty on both sides are dropped), so an
  unseen value is evidence, never a crash. Effect size: total variation distance;

and the population stability index (PSI, reference deciles for numeric
features) beside each p-value. The p-values are adjusted across features with
Benjamini-Hochberg (false discovery rate ``alpha``). A feature *drifts* only
when all three hold: BH-adjusted p-value <= ``alpha``, effect size >=
``min_effect``, and window size >= ``min_samples``. So a huge window does not
alarm on a negligible shift, and a tiny window never alarms. With ``joint=True``
one more row, ``"(joint)"``, tests all numeric features together (see :mod:`.joint`).

Missing values (NaN) are a signal of their own: each feature missing in the
reference or in the window gets a row ``"<feature> (missing rate)"`` (kind
``"missing"``): a two-proportion test of its missing share, window against
reference, inside the same Benjamini-Hochberg family, effect = the absolute
difference of the shares, gated by ``min_missing_effect`` (default 0.05: five
points more or fewer rows missing). The value tests use the non-missing values only. (A feature
never missing in either contributes no row, so the family is the features
plus the features with missing values.)

Cost: no sort of the window. Everything reference-side is computed once at
``fit`` (distinct sorted values, ECDF, gaps, PSI edges, a grid look-up table);
a test is a few passes over the window: a grid cell per value, a table
look-up, a short comparison for values that land in a cell holding reference
values, and two ``bincount`` calls, for all features at once. KS is exact,
PSI and Wasserstein-1 come from the same counts (see :meth:`WindowTest._numeric`).
About 26-32 ms (best of 20) for 100 features x 10,000 rows against 2,000 reference rows
per feature on a loaded 2-core box (``benchmarks/bench_drift.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import special, stats

from .joint import JointShiftTest

__all__ = ["FeatureResult", "WindowReport", "WindowTest", "benjamini_hochberg"]

_PSI_EPS = 1e-4
_GRID_PER_VALUE = 16  # grid cells per distinct reference value (fewer cells hold a value)
_MAX_TABLE = 1 << 22  # grid cells over all numeric columns (8 bytes each)


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN stays NaN."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return q
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 1.0)
    q[ok] = out
    return q


@dataclass(frozen=True)
class FeatureResult:
    """One feature's test in one window."""

    feature: str
    kind: str  # "numeric" | "categorical"
    n: int
    statistic: float
    p_value: float
    q_value: float
    psi: float
    effect: float  # numeric: Wasserstein-1 / reference std; categorical: total variation
    drifted: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "n": self.n, "statistic": _r(self.statistic),
                "p_value": _r(self.p_value), "q_value": _r(self.q_value), "psi": _r(self.psi),
                "effect": _r(self.effect), "drifted": self.drifted, **self.detail}


@dataclass(frozen=True)
class WindowReport:
    """The result of one window test."""

    n: int
    alpha: float
    min_effect: float
    min_samples: int
    features: tuple[FeatureResult, ...]

    @property
    def judged(self) -> bool:
        """Whether the window was large enough to alarm at all."""
        return self.n >= self.min_samples

    @property
    def drifted(self) -> tuple[FeatureResult, ...]:
        return tuple(f for f in self.features if f.drifted)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        ranked = sorted(self.features, key=lambda f: (not f.drifted, f.q_value if f.q_value == f.q_value else 2.0))
        return {"n": self.n, "judged": self.judged, "alpha": self.alpha, "min_effect": self.min_effect,
                "drifted": [f.feature for f in self.drifted],
                "features": [f.to_dict() for f in ranked[:top]]}


class WindowTest:
    """Test windows of rows against a reference sample, feature by feature.

    Parameters
    ----------
    alpha : float, default=0.01
        False discovery rate across features (Benjamini-Hochberg).
    min_effect : float, default=0.15
        Smallest effect that may alarm: Wasserstein-1 in reference standard
        deviations (numeric) or total variation distance (categorical).
    min_samples : int, default=200
        Windows with fewer rows are reported but never alarm.
    categorical : sequence of int, default=()
        Indices of categorical features (values are category codes).
    feature_names : sequence of str, optional
        Names for reports; default ``x0, x1, ...``.
    max_reference : int, default=2000
        Reference rows kept (a fixed random subsample beyond this); bounds the cost.
    recent : sequence of int, default=()
        Also test the latest ``s`` rows of the window for each ``s`` here (those
        with ``min_samples <= s <`` window size), so a recent change is not
        diluted by older rows. A feature's p-value is then Bonferroni-combined:
        ``L * min p_s`` over the ``L`` sizes tested, the minimum taken over the
        sizes whose effect reaches ``min_effect`` (a subset, so the combined
        p-value is still valid and BH still controls the FDR of the test). Each
        size costs one more pass.
    joint : bool, default=False
        Add the joint MMD row (see :mod:`.joint`).
    joint_permutations : int, default=199
    min_missing_effect : float, default=0.05
        Smallest change of a feature's missing share that may alarm (0.05: five points).

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : tuple of str
    n_reference_ : int
    """

    def __init__(self, *, alpha: float = 0.01, min_effect: float = 0.15, min_samples: int = 200,
                 categorical: Sequence[int] = (), feature_names: Sequence[str] | None = None,
                 max_reference: int = 2000, recent: Sequence[int] = (), joint: bool = False,
                 joint_permutations: int = 199, min_missing_effect: float = 0.05) -> None:
        self.alpha = alpha
        self.min_effect = min_effect
        self.min_samples = min_samples
        self.categorical = categorical
        self.feature_names = feature_names
        self.max_reference = max_reference
        self.recent = recent
        self.joint = joint
        self.joint_permutations = joint_permutations
        self.min_missing_effect = min_missing_effect

    # -- fit ------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: Any = None) -> "WindowTest":
        """Learn the reference distribution of each column of ``X``."""
        if not (0 < float(self.alpha) < 1):
            raise ValueError(f"alpha={self.alpha!r} is invalid: expected a number in (0, 1)")
        if not (float(self.min_missing_effect) >= 0):
            raise ValueError(f"min_missing_effect={self.min_missing_effect!r} is invalid: expected a number >= 0")
        if not (float(self.min_effect) >= 0):
            raise ValueError(f"min_effect={self.min_effect!r} is invalid: expected a number >= 0")
        if not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise ValueError(f"min_samples={self.min_samples!r} is invalid: expected an integer >= 1")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ValueError(f"reference must be 2-D with at least 2 rows, got shape {X.shape}")
        if np.isinf(X).any():
            raise ValueError("reference contains inf: expected finite values (NaN marks a missing value)")
        d = X.shape[1]
        cat = sorted({int(i) for i in self.categorical})
        if any(i < 0 or i >= d for i in cat):
            raise ValueError(f"categorical={list(self.categorical)} is invalid: indices must be in [0, {d})")
        names = list(self.feature_names) if self.feature_names is not None else [f"x{i}" for i in range(d)]
        if len(names) != d:
            raise ValueError(f"feature_names has {len(names)} names for {d} features")
        self.n_features_in_ = d
        self.feature_names_in_ = tuple(str(n) for n in names)
        self.n_reference_ = X.shape[0]
        self.categorical_ = np.array(cat, dtype=int)
        self._ref_missing = np.isnan(X).sum(axis=0)  # missing counts per feature (NaN = missing)
        self._ref_rows = X.shape[0]
        self.numeric_ = np.array([i for i in range(d) if i not in set(cat)], dtype=int)

        # numeric: per column, the distinct sorted non-missing reference values (NaN = missing)
        Xn = X[:, self.numeric_]
        k = len(self.numeric_)
        if k and X.shape[0] > self.max_reference:
            keep = np.random.default_rng(0).choice(X.shape[0], self.max_reference, replace=False)
            Xn = Xn[np.sort(keep)]
        ref_n = (~np.isnan(Xn)).sum(axis=0) if k else np.zeros(0, int)
        if k and (ref_n == 0).any():
            bad = [names[self.numeric_[j]] for j in np.nonzero(ref_n == 0)[0]]
            raise ValueError(f"reference has no values (all NaN) for features {bad}")
        self._fit_numeric(Xn)

        # categorical: reference counts per seen category
        self._cats: list[np.ndarray] = []
        self._cat_counts: list[np.ndarray] = []
        for i in cat:
            col = X[:, i]
            col = col[~np.isnan(col)]
            vals, counts = np.unique(col, return_counts=True)
            self._cats.append(vals)
            self._cat_counts.append(counts.astype(float))
        self.joint_: JointShiftTest | None = None
        if self.joint and len(self.numeric_) >= 2:
            self.joint_ = JointShiftTest(columns=self.numeric_, n_permutations=self.joint_permutations,
                                         max_reference=self.max_reference,
                                         feature_names=self.feature_names_in_).fit(X)
        return self

    # -- test -----------------------------------------------------------------------
    def test(self, W: np.ndarray) -> WindowReport:
        """Test the window ``W`` (rows x features) against the reference."""
        if not hasattr(self, "n_features_in_"):
            raise RuntimeError("WindowTest is not fitted: call fit(reference) first")
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2 or W.shape[1] != self.n_features_in_:
            raise ValueError(f"window must have shape (n, {self.n_features_in_}), got {W.shape}")
        n = W.shape[0]
        names = self.feature_names_in_
        sizes = sorted({int(s) for s in self.recent if self.min_samples <= int(s) < n})
        rows = self._rows(W)
        if sizes:  # nested recent windows, Bonferroni across the L sizes
            L = len(sizes) + 1
            alts = [self._rows(W[n - s:]) for s in sizes]
            for i, full in rows.items():
                cands = [(full, n)] + [(alt[i], s) for s, alt in zip(sizes, alts)]
                ok = [(r, s) for r, s in cands if r[5] == r[5] and r[5] >= self.min_effect and r[3] == r[3]]
                if ok:  # the smallest p-value among the sizes whose effect may alarm
                    r, s = min(ok, key=lambda c: c[0][3])
                    p_min = r[3]
                    detail = r[6] if s == n else {**r[6], "rows": s}
                else:   # nothing may alarm: report the full window, p combined over all sizes
                    r, detail = full, full[6]
                    ps = [c[0][3] for c in cands if c[0][3] == c[0][3]]
                    p_min = min(ps) if ps else np.nan
                rows[i] = (*r[:3], min(1.0, L * p_min) if p_min == p_min else p_min, *r[4:6], detail)
        d = self.n_features_in_
        rows.update({d + i: r for i, r in self._missing_rows(W).items()})  # missing rates: the same BH family
        order = sorted(rows)
        pvals = np.array([rows[i][3] for i in order], dtype=float)
        qvals = benjamini_hochberg(pvals)
        judged = n >= self.min_samples
        out = []
        for k, i in enumerate(order):
            kind, nn_i, stat, p_i, psi_i, eff, detail = rows[i]
            q = qvals[k]
            gate = self.min_missing_effect if kind == "missing" else self.min_effect
            drifted = bool(judged and q == q and q <= self.alpha and eff == eff and eff >= gate)
            name = names[i] if i < d else f"{names[i - d]} (missing rate)"
            out.append(FeatureResult(name, kind, int(nn_i), float(stat), float(p_i), float(q),
                                     float(psi_i), float(eff), drifted, detail))
        if self.joint_ is not None:
            j = self.joint_.test(W)
            drifted = bool(judged and j.p_value <= self.alpha and j.effect >= self.min_effect)
            out.append(FeatureResult("(joint)", "joint", j.n, j.statistic, j.p_value, j.p_value, float("nan"),
                                     j.effect, drifted, j.detail))
        return WindowReport(n, float(self.alpha), float(self.min_effect), int(self.min_samples), tuple(out))

    def _missing_rows(self, W: np.ndarray) -> dict[int, tuple]:
        """Per feature missing in the reference or the window: the two-proportion test of its missing rate.

        (kind, n, statistic, p-value, PSI, effect, detail) as in :meth:`_rows`; the statistic is the
        pooled two-proportion z (Fisher's exact test instead when an expected count is below 5), the
        effect the absolute difference of the missing shares (the total variation distance between
        the missing/present splits, as for a categorical feature), the PSI that of the split.
        """
        n = W.shape[0]
        if n == 0:
            return {}
        miss_w = np.isnan(W).sum(axis=0)
        out: dict[int, tuple] = {}
        for i in np.nonzero((miss_w > 0) | (self._ref_missing > 0))[0]:
            a, m = int(self._ref_missing[i]), int(self._ref_rows)
            b = int(miss_w[i])
            pr, pw = a / m, b / n
            pool = (a + b) / (m + n)
            exp_min = min(pool * m, pool * n, (1 - pool) * m, (1 - pool) * n)
            if exp_min >= 5:
                z = (pw - pr) / np.sqrt(pool * (1 - pool) * (1 / m + 1 / n))
                p = float(2 * special.ndtr(-abs(z)))
            else:
                z = float("nan")
                p = float(stats.fisher_exact([[a, m - a], [b, n - b]])[1])
            psi = _psi(np.array([pr, 1 - pr]), np.array([pw, 1 - pw]))
            out[int(i)] = ("missing", n, float(z), min(p, 1.0), psi, abs(pw - pr),
                           {"reference_missing": round(pr, 4), "window_missing": round(pw, 4)})
        return out

    def _rows(self, W: np.ndarray) -> dict[int, tuple]:
        """Per feature: (kind, n, statistic, p-value, PSI, effect, detail) for the window ``W``."""
        n = W.shape[0]
        rows: dict[int, tuple] = {}
        if n >= 1 and len(self.numeric_):
            D, p, w1, psi, nn = self._numeric(np.ascontiguousarray(W.T[self.numeric_]))
            for j, i in enumerate(self.numeric_):
                rows[i] = ("numeric", int(nn[j]), D[j], p[j], psi[j], w1[j], {})
        elif len(self.numeric_):
            for i in self.numeric_:
                rows[i] = ("numeric", n, np.nan, np.nan, np.nan, np.nan, {})
        for j, i in enumerate(self.categorical_):
            rows[i] = ("categorical", *self._categorical(W[:, i], j))
        return rows

    # -- numeric machinery ----------------------------------------------------------
    def _fit_numeric(self, Xn: np.ndarray) -> None:
        """Precompute every reference-side quantity the window test needs (see :meth:`_numeric`).

        Per numeric column ``j``: the distinct sorted values
        ``v_0 < ... < v_{U_j - 1}``, the reference ECDF just below and at each
        (``G(v-)``, ``G(v)``), the gaps between neighbours, the PSI decile
        edges, and a table mapping each cell of a uniform grid over the
        column's reference range to the *slot* of values in that cell (the
        number of distinct reference values below them). Columns are padded
        to the same ``U = max U_j`` so the window side works on 2-D arrays:
        column ``j`` owns slots ``j (U + 2) + [0, U + 2)``: ``U`` value slots
        (those past ``U_j`` never fill), then "above all" at ``U_j``, and NaN at ``U + 1``.
        """
        k = Xn.shape[1]
        self._num_std = np.nanstd(Xn, axis=0) if k else np.zeros(0)
        vals, cnts, nref = [], [], []
        for j in range(k):
            col = Xn[:, j]
            v, c = np.unique(col[~np.isnan(col)], return_counts=True)
            vals.append(v)
            cnts.append(c)
            nref.append(int(c.sum()))
        Uj = np.array([len(v) for v in vals], dtype=np.intp)
        U = int(Uj.max()) if k else 0
        self._U = U
        self._ref_n = np.array(nref, dtype=float)
        width_s = U + 2
        self._n_slots = k * width_s
        self._nan_slot = np.arange(k) * width_s + U + 1
        # value-side arrays, (k, U); padding: G = 1 on both sides, zero gaps (contributes nothing)
        vext = np.full((k, width_s), np.inf)
        gprev = np.ones((k, U))
        gnext = np.ones((k, U))
        dv = np.zeros((k, U))
        vnext = np.zeros((k, U))
        self._psi_idx = np.zeros((k, 9), dtype=np.intp)
        self._psi_ref = np.zeros((k, 10))
        for j in range(k):
            v, c, m, u = vals[j], cnts[j], nref[j], len(vals[j])
            vext[j, :u] = v
            before = np.cumsum(c) - c
            gprev[j, :u] = before / m
            gnext[j, :u] = (before + c) / m
            dv[j, :u - 1] = np.diff(v)
            vnext[j, :u - 1] = v[1:]
            vnext[j, u - 1] = v[-1]
            # PSI bins: edges at the reference's decile order statistics
            e = np.searchsorted(np.cumsum(c), (np.linspace(0.1, 0.9, 9) * m).astype(int), "right")
            self._psi_idx[j] = e
            self._psi_ref[j] = np.diff(np.concatenate([[0], before[e], [m]])) / m
        self._vext = vext.ravel()
        self._gprev, self._gnext, self._dv, self._vnext = gprev, gnext, dv, vnext
        # the grid: B uniform cells over [v_0, v_{U_j-1}] per column, one below, one NaN cell last
        B = int(np.clip(_GRID_PER_VALUE * max(U, 1), 64, max(64, _MAX_TABLE // max(k, 1))))
        self._B = B
        width = B + 3
        lo = np.array([v[0] for v in vals]) if k else np.zeros(0)
        span = np.array([v[-1] - v[0] for v in vals]) if k else np.zeros(0)
        span = np.where(span > 0, span, 1.0)
        self._inv = B / span
        self._origin = lo - span / B
        self._coff = np.arange(k, dtype=np.float64) * width
        self._cell_dtype = np.int32 if max(2 * self._n_slots + 2, k * width) < 2 ** 31 else np.intp
        table = np.empty(k * width, dtype=self._cell_dtype)
        per_cell_all = np.zeros(k * width, dtype=np.intp)
        for j in range(k):
            cells = self._cells(vals[j][None, :], j) - j * width
            per_cell = np.bincount(cells, minlength=width)
            below = j * width_s + np.cumsum(per_cell) - per_cell
            # clean cell: its slot; cell holding one value: -(first slot) - 1; several: also - n_slots
            t = np.where(per_cell == 0, below, -below - 1 - np.where(per_cell > 1, self._n_slots, 0))
            t[B + 2] = self._nan_slot[j]
            table[j * width:(j + 1) * width] = t
            per_cell_all[j * width:(j + 1) * width] = per_cell
        self._table = table
        self._per_cell = per_cell_all

    def _cells(self, A: np.ndarray, j: int | None = None) -> np.ndarray:
        """Global grid cell of each value of ``A`` (columns x values); NaN is not handled here.

        The same arithmetic for the reference (one column, ``j``) and the
        window (all columns), so the map is one monotone (non-decreasing)
        function of the value for both, which is all exactness needs.
        """
        sl = slice(None) if j is None else slice(j, j + 1)
        Z = A - self._origin[sl, None]
        Z *= self._inv[sl, None]
        np.clip(Z, 0.0, self._B + 1.0, out=Z)
        Z += self._coff[sl, None]
        return Z.astype(self._cell_dtype).ravel()

    def _numeric(self, Wt: np.ndarray) -> tuple[np.ndarray, ...]:
        """KS, Wasserstein-1 and PSI for all numeric columns at once (``Wt``: columns x rows).

        No sort of the window. Each value ``w`` needs its *slot*: the number
        of distinct reference values below it. The grid cell of ``w`` (one
        subtraction, one multiplication) indexes a table that holds the slot
        of every cell containing no reference value; this is exact because
        the cell map is monotone, so reference values in other cells are all
        below or all above ``w``. Values in the cells that do hold reference
        values are resolved by comparing with those values. Counts per slot
        (one ``bincount``) then give the window ECDF ``F`` at every reference
        value, so the exact KS statistic is the largest of ``G(v) - F(v)`` and
        ``F(v-) - G(v-)`` over the distinct reference values ``v``. Sums per
        slot (a weighted ``bincount``) give the integral of ``F - G`` between
        neighbouring reference values exactly, so Wasserstein-1 (the integral
        of ``|F - G|``) is exact except between neighbouring reference values
        where ``F - G`` changes sign; there ``F`` is interpolated linearly (never
        below the exact ``|integral of F - G|``). PSI uses the same counts at the
        reference's decile order statistics.
        """
        k, n = Wt.shape
        U = self._U
        with np.errstate(invalid="ignore"):  # NaN cells are replaced just below
            cells = self._cells(Wt)
        flat = Wt.ravel()
        if np.isnan(flat.sum()):
            nan = np.isnan(flat)
            cells[nan] = np.repeat((self._coff + self._B + 2).astype(cells.dtype), n)[nan]
        slot = self._table[cells]
        dirty = np.flatnonzero(slot < 0)
        slot = slot.astype(np.intp)
        tied = np.zeros(0, np.intp)
        if dirty.size:
            ns = self._n_slots
            start = -slot[dirty] - 1
            multi = np.flatnonzero(start >= ns)
            start[multi] -= ns
            wv = flat[dirty]
            vs = self._vext[start]
            pos = start + (vs < wv)
            tie = vs == wv  # exact for a cell with one value: the next value lies in a later cell, above w
            if multi.size:  # cells holding several reference values: compare with each in turn
                p2, w2 = pos[multi], wv[multi]
                in_cell = self._per_cell[cells[dirty[multi]]]
                act = np.flatnonzero(p2 > start[multi])
                step = 1
                while act.size:
                    act = act[in_cell[act] > step]
                    act = act[self._vext[p2[act]] < w2[act]]
                    p2[act] += 1
                    step += 1
                pos[multi] = p2
                tie[multi] = self._vext[p2] == w2
            slot[dirty] = pos
            tied = pos[tie]
        cnt = np.bincount(slot, minlength=self._n_slots).astype(np.float64).reshape(k, U + 2)
        tot = np.bincount(slot, weights=flat, minlength=self._n_slots).reshape(k, U + 2)
        m = n - cnt[:, U + 1]
        im = 1.0 / np.maximum(m, 1.0)[:, None]
        cum = np.cumsum(cnt[:, :U], axis=1)
        Fr = cum * im                        # window share <= v
        if tied.size:  # window share < v: a value equal to v moves up one slot
            cnt_lt = cnt.ravel() + np.bincount(tied + 1, minlength=self._n_slots) \
                - np.bincount(tied, minlength=self._n_slots)
            Fl = np.cumsum(cnt_lt.reshape(k, U + 2)[:, :U], axis=1) * im
        else:
            Fl = Fr                          # no window value equals a reference value
        D = np.maximum(self._gnext - Fr, Fl - self._gprev).max(axis=1) if U else np.zeros(k)
        D = np.where(m >= 1, D, np.nan)
        en = m * self._ref_n / np.maximum(m + self._ref_n, 1)
        sq = np.sqrt(np.maximum(en, 1e-12))
        p = np.where(m >= 1, np.clip(special.kolmogorov((sq + 0.12 + 0.11 / sq) * D), 0.0, 1.0), np.nan)
        # Wasserstein-1: integral of F - G between neighbouring reference values, from counts and sums
        a = Fr - self._gnext                 # F - G just after v_k ...
        inner = np.abs(a * self._dv + (cnt[:, 1:U + 1] * self._vnext - tot[:, 1:U + 1]) * im)
        b = np.concatenate([Fl[:, 1:], np.ones((k, 1))], axis=1) - self._gnext  # ... and just before v_{k+1}
        cross = np.flatnonzero(a * b < 0)    # F - G changes sign inside: interpolate F linearly there
        if cross.size:
            ac, bc = np.abs(a.ravel()[cross]), np.abs(b.ravel()[cross])
            est = self._dv.ravel()[cross] * (ac * ac + bc * bc) / (2.0 * (ac + bc))
            inner.ravel()[cross] = np.maximum(inner.ravel()[cross], est)
        below = (cnt[:, 0] * self._vext[::U + 2] - tot[:, 0]) * im[:, 0]
        w1 = inner.sum(axis=1) + below
        w1 = np.where(m >= 1, w1 / np.where(self._num_std > 0, self._num_std, 1.0), np.nan)
        # PSI on the reference's deciles
        under = np.take_along_axis(Fl, self._psi_idx, axis=1)
        props = np.diff(np.concatenate([np.zeros((k, 1)), under, np.ones((k, 1))], axis=1), axis=1)
        psi = np.where(m >= 1, _psi_rows(self._psi_ref, props), np.nan)
        return D, p, w1, psi, m

    def _categorical(self, col: np.ndarray, j: int) -> tuple:
        col = col[~np.isnan(col)]
        cats, ref_counts = self._cats[j], self._cat_counts[j]
        vals, counts = np.unique(col, return_counts=True)
        pos = np.searchsorted(cats, vals)
        pos_c = np.minimum(pos, len(cats) - 1)
        seen = (pos < len(cats)) & (cats[pos_c] == vals) if len(cats) else np.zeros(len(vals), bool)
        win = np.zeros(len(cats) + 1)
        np.add.at(win, pos_c[seen], counts[seen])
        unseen = float(counts[~seen].sum())
        win[-1] = unseen
        ref = np.append(ref_counts, 0.0)
        n = int(win.sum())
        detail: dict[str, Any] = {"unseen": int(unseen)} if unseen else {}
        if n == 0:
            return 0, np.nan, np.nan, np.nan, np.nan, detail
        table = np.stack([ref, win])
        table = table[:, table.sum(axis=0) > 0]
        if table.shape[1] < 2:
            return n, 0.0, 1.0, 0.0, 0.0, detail
        tot = table.sum()
        exp = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / tot
        chi2 = float(((table - exp) ** 2 / exp).sum())
        p = float(stats.chi2.sf(chi2, table.shape[1] - 1))
        pr, pw = ref / ref.sum(), win / n
        tv = 0.5 * float(np.abs(pr - pw).sum())
        return n, chi2, p, _psi(pr, pw), tv, detail


def _psi_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, _PSI_EPS, None)
    q = np.clip(q, _PSI_EPS, None)
    return ((q - p) * np.log(q / p)).sum(axis=1)  # type: ignore[no-any-return]


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.clip(p, _PSI_EPS, None)
    q = np.clip(q, _PSI_EPS, None)
    return float(((q - p) * np.log(q / p)).sum())


def _r(x: float) -> float | None:
    if x != x:
        return None
    return float(f"{x:.4g}")
