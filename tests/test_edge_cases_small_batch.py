"""The small-batch fast path (2 to 100 rows) and the per-worker BLAS setting."""

from __future__ import annotations

import numpy as np
import pytest

from guarded_serving.keys import EDGE_P_VALUES, EDGE_VERDICT
from guarded_serving.call import Call
from guarded_serving.edge_cases import CombinedDetector, MahalanobisDetector, TailDetector, build_profile
from guarded_serving.edge_cases.component import SMALL_BATCH, EdgeCaseComponent
from guarded_serving.operational.blas import blas_threads, limit_blas_threads


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 8))
    X[rng.random(3000) < 0.02, 2] = np.nan  # feature 2 is sometimes missing in training
    return X


def _odd_rows(train, n, seed=1):
    """Rows with values out of the training range (both sides), missing values, and ordinary ones."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, train.shape[1]))
    X[::3, 0] = 50.0  # far above the range
    X[1::4, 5] = -9.0  # below it
    X[2::5, 2] = np.nan  # missing where training had missing values
    X[::7, 4] = np.nanmax(train[:, 4])  # exactly at the top of the range
    return X


@pytest.mark.parametrize("make", [lambda: TailDetector(), lambda: TailDetector(threshold=np.log(100)),
                                  lambda: MahalanobisDetector(), lambda: CombinedDetector(),
                                  lambda: CombinedDetector(categorical=[7])])
@pytest.mark.parametrize("n", [1, 2, 10, 100])
def test_small_path_gives_the_batch_scores(train, make, n):
    """outlyingness_small equals outlyingness (and the contributions) on rows in, out of range and missing."""
    X = train.copy()
    X[:, 7] = np.round(np.abs(X[:, 7]))  # a categorical code column for the categorical variant
    d = make().fit(X[:2000])
    rows = _odd_rows(X, n)
    rows[:, 7] = np.round(np.abs(np.nan_to_num(rows[:, 7])))
    np.testing.assert_allclose(d.outlyingness_small(rows), d.outlyingness(rows), rtol=1e-12)
    if isinstance(d, TailDetector):
        np.testing.assert_allclose(d.outlyingness_small(rows), d.contributions(rows).sum(axis=1), rtol=1e-12)
        assert d.outlyingness_one(rows[:1]) == pytest.approx(float(d.contributions(rows[:1]).sum()), rel=1e-12)


def test_small_path_refuses_infinite_values(train):
    """An infinite value is an error on the small path as on the batch path."""
    d = TailDetector().fit(train)
    rows = _odd_rows(train, 3)
    rows[1, 3] = np.inf
    with pytest.raises(ValueError, match="inf"):
        d.outlyingness_small(rows)


class _Bindable:
    def __init__(self):
        from guarded_serving.config import GuardConfig

        self.config = GuardConfig(name="small")


@pytest.mark.parametrize("n", [2, 10, SMALL_BATCH, SMALL_BATCH + 1])
def test_component_small_batches_give_the_same_verdicts(train, n):
    """Batches up to SMALL_BATCH rows and beyond get the same p-values and flags as row-by-row calls."""
    comp = EdgeCaseComponent(build_profile(train), fpr=0.05)
    comp.bind(_Bindable())
    rows = _odd_rows(train, n, seed=n)
    batch = Call((rows,), {}, rows, "x", 0)
    comp.before_call(batch)
    one_by_one = []
    for r in rows:
        c = Call((r[None],), {}, r[None], "x", 0)
        comp.before_call(c)
        one_by_one.append(c.state[EDGE_P_VALUES][0])
    np.testing.assert_allclose(batch.state[EDGE_P_VALUES], one_by_one)
    assert batch.flagged and batch.state[EDGE_VERDICT]["flagged_rows"] == \
        [i for i, p in enumerate(one_by_one) if p <= 0.05]


class TestBlasThreads:
    def test_limit_blas_threads_sets_the_worker_pool_and_returns_the_old_sizes(self):
        """limit_blas_threads(1) leaves every BLAS library on one thread and reports the sizes before."""
        before = blas_threads()
        if not before:
            pytest.skip("no BLAS library found in this process")
        try:
            assert limit_blas_threads(1) == before
            assert set(blas_threads().values()) == {1}
        finally:
            for size in set(before.values()):
                limit_blas_threads(size)
        assert blas_threads() == before

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True])
    def test_bad_thread_counts_are_rejected(self, bad):
        """Thread counts that are not positive integers raise ValueError."""
        with pytest.raises(ValueError):
            limit_blas_threads(bad)


@pytest.mark.parametrize("n", [2, 10, 100])
def test_fused_default_detector_on_in_range_rows(n):
    """The default detector's fused small path (tail + Mahalanobis, standardisation folded in) gives the
    batch scores."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 12))
    d = CombinedDetector().fit(X)
    assert d._fused is not None
    rows = X[:n] * 0.9  # inside the training range
    np.testing.assert_allclose(d.outlyingness_small(rows), d.outlyingness(rows), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad_rows", [1, 4, 5, 30])
def test_fused_path_with_rows_out_of_range(bad_rows):
    """Rows out of the training range or missing inside a fused small batch get the batch scores."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 12))
    X[rng.random(3000) < 0.02, 3] = np.nan
    d = CombinedDetector().fit(X)
    rows = X[10:60] * 0.5
    rows[:bad_rows:2, 0] = 40.0
    rows[1:bad_rows:2, 3] = np.nan
    np.testing.assert_allclose(d.outlyingness_small(rows), d.outlyingness(rows), rtol=1e-9, atol=1e-12)
