"""Tests for guarded_serving.edge_cases.knn."""

import numpy as np

from guarded_serving.edge_cases.knn import KNNDetector


def test_far_rows_score_higher_and_reference_is_bounded():
    """Rows far from the reference score higher; the reference is subsampled to max_reference."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    d = KNNDetector(max_reference=1000).fit(X)
    assert len(d.reference_) == 1000
    far = np.full((1, 4), 6.0)
    assert d.outlyingness(far)[0] > d.train_outlyingness().max()


def test_leave_one_out_excludes_self():
    """Training outlyingness drops each row's zero distance to itself."""
    X = np.random.default_rng(1).normal(size=(200, 3))
    d = KNNDetector(n_neighbors=3).fit(X)
    assert (d.train_outlyingness() > 0).all()
