"""The optional compiled request-path kernels (guarded_serving/_native.c) against the NumPy paths they replace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from guarded_serving import native
from guarded_serving.call import Call
from guarded_serving.edge_cases import CombinedDetector, build_profile
from guarded_serving.edge_cases.component import EdgeCaseComponent
from guarded_serving.keys import EDGE_P_VALUES

needs_kernels = pytest.mark.skipif(not native.AVAILABLE, reason="the compiled kernels are not built here")


def test_kernels_are_built_where_a_compiler_is():
    """pip install builds the extension when a C compiler exists; a silent build failure would cost every call."""
    if os.environ.get(native.ENV, "1") == "0":
        pytest.skip("GUARDED_NATIVE=0 in this environment")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler on this machine: the NumPy paths serve")
    assert native.AVAILABLE, "guarded_serving._native did not build or import: reinstall with pip install -e ."


def test_env_switch_turns_the_kernels_off():
    code = "from guarded_serving import native; print(native.AVAILABLE, native.kernels)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, native.ENV: "0"})
    assert out.stdout.split() == ["False", "None"]


@needs_kernels
def test_all_within_matches_numpy():
    """Every value within its column's limits (NaN and inf never are), for contiguous and strided matrices."""
    rng = np.random.default_rng(0)
    low, high = -np.ones(6) * 2, np.ones(6) * 2
    within = native.kernels.all_within
    for _ in range(500):
        x = rng.normal(size=(int(rng.integers(1, 5)), 6)) * rng.choice([0.5, 1.5])
        if rng.random() < 0.2:
            x[rng.integers(len(x)), rng.integers(6)] = rng.choice([np.nan, np.inf, -np.inf])
        views = [x, np.asfortranarray(x), np.hstack([x, x])[:, ::2]]
        for v in views:
            assert within(v, low, high) is bool(((v >= low) & (v <= high)).all())
    assert within(np.array([[2.0, -2.0, 0, 0, 0, 0]]), low, high) is True  # the limits themselves are inside
    with pytest.raises(TypeError, match="float64"):
        within(np.zeros((1, 6), dtype=np.float32), low, high)
    with pytest.raises(ValueError, match="length"):
        within(np.zeros((1, 5)), low, high)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(3)
    cov = np.full((12, 12), 0.6) + 0.4 * np.eye(12)
    X = rng.multivariate_normal(np.zeros(12), cov, size=4000) * np.arange(1, 13)
    return X, build_profile(X, seed=0)


def _rows(X, n, seed):
    """Ordinary rows, unusual combinations, values far out of range, at the range's ends, missing."""
    rng = np.random.default_rng(seed)
    R = X[rng.integers(0, len(X), n)] * rng.uniform(0.6, 1.4, size=(n, X.shape[1]))
    R[::5] = rng.normal(size=(len(R[::5]), X.shape[1])) * np.arange(1, 13)  # correlation broken
    R[1::9, 3] = 1e3
    R[2::11, 7] = X[:, 7].max()
    R[3::13, 0] = X[:, 0].min()
    R[4::17, 5] = np.nan
    return R


@needs_kernels
def test_edge_kernel_gives_the_numpy_p_values(fitted):
    """The one-row verdict: the same p-value as the NumPy path on every row it scores, -1.0 (the exact
    path) exactly where a value is out of the tail table's range or missing."""
    X, prof = fitted
    comp = EdgeCaseComponent(prof, fpr=0.01)
    comp.bind(None)
    assert comp._kernel is not None
    rows = _rows(X, 5000, 1)
    scored = 0
    for r in rows:
        x = r[None, :]
        p = comp._kernel(x)
        exact = (comp._cal_n - np.searchsorted(comp._cal, comp.detector_.outlyingness(x), side="left")[0] + 1.0) \
            / comp._cal_num
        out_of_table = np.isnan(comp.detector_.detectors_["tail"]._lookup(r)).any()
        if out_of_table:
            assert p == -1.0
        else:
            assert p == exact
            scored += 1
    assert 1000 < scored < len(rows)  # both kinds of row were seen
    assert comp._kernel(rows[0]) == comp._kernel(rows[:1])  # a 1-D row reads the same
    with pytest.raises(ValueError, match="one row"):
        comp._kernel(rows[:2])
    with pytest.raises(TypeError, match="float64"):
        comp._kernel(rows[:1].astype(np.float32))


def test_component_verdicts_do_not_depend_on_the_kernel(fitted):
    """Served one row at a time, with and without the compiled kernel: identical p-values and flags."""
    X, prof = fitted
    with_k = EdgeCaseComponent(prof, fpr=0.05)
    with_k.bind(None)
    without = EdgeCaseComponent(prof, fpr=0.05)
    without.bind(None)
    without._kernel = None
    for r in _rows(X, 600, 2):
        a, b = Call((r[None],), {}, r[None], "x", 0), Call((r[None],), {}, r[None], "x", 0)
        with_k.before_call(a)
        without.before_call(b)
        assert a.state[EDGE_P_VALUES][0] == b.state[EDGE_P_VALUES][0]
        assert a.flagged == b.flagged
    assert with_k.rows_flagged == without.rows_flagged > 0
    # an input the kernel cannot read (not float64) takes the NumPy path instead of failing the component
    r32 = _rows(X, 1, 3).astype(np.float32)
    a, b = Call((r32,), {}, r32, "x", 0), Call((r32,), {}, r32, "x", 0)
    with_k.before_call(a)
    without.before_call(b)
    assert a.state[EDGE_P_VALUES][0] == b.state[EDGE_P_VALUES][0]


def test_kernel_only_for_the_default_numeric_pair(fitted):
    """Other combinations, categorical columns or no kernels: no kernel (the NumPy path serves)."""
    X, _ = fitted
    assert CombinedDetector(parts=("tail", "mahalanobis", "knn")).fit(X[:800]).one_row_kernel(np.zeros(3)) is None
    Xc = X.copy()
    Xc[:, 2] = np.round(np.abs(Xc[:, 2]) % 4)
    assert CombinedDetector(categorical=[2]).fit(Xc[:800]).one_row_kernel(np.zeros(3)) is None
    if native.AVAILABLE:
        assert CombinedDetector().fit(X[:800]).one_row_kernel(np.sort(np.arange(5.0))) is not None


def _martingale_runs(monkeypatch, X, S, chunk):
    """The same stream through the NumPy (log space) and the compiled (linear space) martingale paths."""
    from guarded_serving.drift.sequential import OnlineConformalMartingale

    out = {}
    for name, kernels in (("numpy", None), ("native", native.kernels)):
        monkeypatch.setattr(native, "kernels", kernels)
        m = OnlineConformalMartingale(alpha=0.01).fit(X)
        caps = []
        for a in range(0, len(S), chunk):
            m.update(S[a:a + chunk])
            caps.append(m.log10_capital_)
        out[name] = (np.array(caps), m.alarm_at_, m.alarm_column_, m.log10_max_, m._logR.copy())
    return out["numpy"], out["native"]


@needs_kernels
@pytest.mark.parametrize("shift", [0.0, 0.4, 60.0])
def test_martingale_kernel_gives_the_numpy_capital(monkeypatch, shift):
    """The drift alarm's capital after every batch, its maximum, the alarm's row and column: the same with the
    compiled brackets as in NumPy's log space, on a clean stream, a small shift and one so large that the
    capital passes 1e300 (the kernel rescales its brackets); a bracket the kernel lets underflow is below 1e-300
    of its column's largest, i.e. it only ever lowers the capital."""
    from sklearn.datasets import load_breast_cancer

    X = load_breast_cancer().data
    rng = np.random.default_rng(7)
    S = X[rng.integers(0, len(X), 2400)].copy()
    S[1200:, 5] += shift * X[:, 5].std()
    a, b = _martingale_runs(monkeypatch, X, S, 300)
    np.testing.assert_allclose(b[0], a[0], rtol=1e-12, atol=1e-9)
    assert (b[1], b[2]) == (a[1], a[2]) and b[3] == pytest.approx(a[3], rel=1e-12, abs=1e-9)
    if shift == 0.0:
        assert a[1] is None
    else:
        assert a[1] is not None and a[1] > 1200
    if shift == 60.0:
        assert a[3] > 300
    both = np.isfinite(a[4]) & np.isfinite(b[4])
    np.testing.assert_allclose(b[4][both], a[4][both], rtol=1e-10, atol=1e-8)
    gone = np.isfinite(a[4]) & ~np.isfinite(b[4])
    assert not (np.isfinite(b[4]) & ~np.isfinite(a[4])).any()
    if gone.any():
        top = a[4].max(axis=1, keepdims=True)
        assert (np.broadcast_to(top, a[4].shape)[gone] - a[4][gone] > 690).all()


@needs_kernels
def test_martingale_kernel_refuses_bad_buffers():
    k = native.kernels
    f = np.ones((2, 3, 4))
    args = [f, np.zeros((2, 3)), np.zeros((2, 1)), np.ones((2, 1)), np.zeros((3, 4), np.int64), np.full((3, 4), 0.25),
            np.zeros((3, 4)), np.zeros(3), np.empty((2, 3))]
    k.sr_mixture(*args)
    np.testing.assert_allclose(args[8], np.log(1.0))  # no start, all tail mass: capital 1
    with pytest.raises(TypeError, match="f must be float64"):
        k.sr_mixture(f.astype(np.float32), *args[1:])
    with pytest.raises(ValueError, match="lift has a wrong shape"):
        k.sr_mixture(f, np.zeros((2, 4)), *args[2:])
    with pytest.raises(TypeError, match="group must be int64"):
        k.sr_mixture(*args[:4], args[4].astype(np.float64), *args[5:])
    with pytest.raises(ValueError, match="out has a wrong shape"):
        k.sr_mixture(*args[:8], np.empty((3, 3)))
    with pytest.raises(ValueError, match="group index is out of range"):
        k.sr_mixture(*args[:4], np.full((3, 4), 5, np.int64), *args[5:])
    with pytest.raises(ValueError, match="read-only"):  # R is updated in place: a read-only one is refused
        ro = np.zeros((3, 4))
        ro.setflags(write=False)
        k.sr_mixture(*args[:6], ro, *args[7:])
    with pytest.raises((BufferError, ValueError)):  # not C-contiguous
        k.sr_mixture(np.ones((2, 4, 3)).transpose(0, 2, 1), *args[1:])
    with pytest.raises(TypeError, match="9 arguments"):
        k.sr_mixture(*args[:8])


@needs_kernels
def test_martingale_kernel_capital_never_overflows():
    """Bets at a factor of e^684 row after row (a custom scale bet on a p-value at its floor): through the wrapper,
    the capital's log grows by 684 a row, finite and equal to the log-space path's, where plain floats overflow on
    the first row; and back down. A column whose brackets all vanish under a large scale starts again from 0."""
    from guarded_serving.drift import sequential as seq

    n = 12
    logf = np.full((n, 1, 2), 684.0)
    logf[8:] = -684.0
    lp = np.full((n, 1), -np.inf)
    lp[0] = 0.0
    tl = np.full((n, 1), -np.inf)
    group, log_w = np.zeros((1, 2), np.int64), np.log(np.full((1, 2), 0.5))
    got, brackets = seq._sr_mixture_native(native.kernels.sr_mixture, logf, np.full((1, 2), -np.inf), lp, tl, group,
                                           log_w)
    want = np.concatenate([np.arange(1, 9) * 684.0, 8 * 684.0 - np.arange(1, 5) * 684.0])
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-12)
    np.testing.assert_allclose(brackets, np.full((1, 2), 4 * 684.0), rtol=1e-12)
    # all brackets 0 (f = 0) while the scale is large: the next start counts again
    f = np.zeros((3, 1, 1))
    f[2] = 1.0
    pi = np.array([[0.0], [0.0], [1.0]])
    R, S, out = np.ones((1, 1)), np.array([800.0]), np.empty((3, 1))
    native.kernels.sr_mixture(f, np.zeros((3, 1)), pi, np.zeros((3, 1)), np.zeros((1, 1), np.int64), np.ones((1, 1)),
                              R, S, out)
    assert out[0, 0] == -np.inf and out[2, 0] == pytest.approx(0.0) and S[0] == 0.0


def test_martingale_wrapper_keeps_the_numpy_path_for_odd_brackets(monkeypatch):
    """Brackets with NaN or +inf (never made by either path, but a state from elsewhere) and a build without the
    kernel take the log-space path instead of failing."""
    from guarded_serving.drift import sequential as seq

    called = []
    monkeypatch.setattr(native, "kernels", type("K", (), {"sr_mixture": staticmethod(lambda *a: called.append(1))}))
    logf = np.zeros((3, 1, 2))
    blocks = np.ones((1, 2), np.int64)
    seq._sr_mixture(logf, np.array([[np.inf, 0.0]]), 0, blocks)
    assert not called
    seq._sr_mixture(logf, np.zeros((1, 2)), 0, blocks)
    assert called
    monkeypatch.setattr(native, "kernels", type("Old", (), {})())  # an extension built before sr_mixture
    out, _ = seq._sr_mixture(logf, np.zeros((1, 2)), 0, blocks)
    assert np.isfinite(out).all()
