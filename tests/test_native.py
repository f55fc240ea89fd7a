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
