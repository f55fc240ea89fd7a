"""The alarm on both simulated loops (short runs, several seeds) and its silence on their controls."""

from __future__ import annotations

import pytest

from guarded_serving.feedback_loops import simulations as S
from guarded_serving.feedback_loops.holdout import (
    lift_interval,
    windowed_holdout_comparison,
)


@pytest.mark.parametrize("simulate, kw", [
    (S.recommender, {"epochs": 70, "onset": 30, "users": 300, "n_items": 200}),
    (S.allocation, {"epochs": 80, "onset": 30}),
])
class TestSimulations:
    def test_the_loop_is_caught_after_onset(self, simulate, kw):
        """Every seed: the alarm fires after the loop's onset, within 25 epochs, never before it."""
        for seed in range(3):
            res = S.score(simulate(loop=True, seed=seed, **kw))
            assert not res["false_alarm"], (seed, res)
            assert res["delay"] is not None and 0 <= res["delay"] <= 25, (seed, res)

    def test_the_control_stays_silent(self, simulate, kw):
        """The same system with the loop broken (exploration-trained / inverse-allocation weights): no alarm."""
        for seed in range(3):
            res = S.score(simulate(loop=False, seed=seed, **kw))
            assert res["alarm_at"] is None, (seed, res)



@pytest.fixture(scope="module")
def runs():
    """The recommender at its default size, three seeds of each system."""
    return {loop: [S.recommender(loop=loop, seed=s) for s in range(3)] for loop in (True, False)}


class TestHoldoutSeparates:
    """The random-exposure holdout tells the loop from the control (issue 12, item 3): the loop's
    favourites take all its exposure but are liked less than twice the rest on the random slice
    ("users only see these items"); the control's favourites are liked more than the rest
    ("users like these items")."""

    def test_verdicts_separate_loop_from_control(self, runs):
        for run in runs[True]:
            c = S.holdout(run)
            assert c.judged and c.verdict == "exposure only", c
            assert c.favourites_exposure_share > 0.9 and c.ratio_high < 2.0
        for run in runs[False]:
            c = S.holdout(run)
            assert c.judged and c.verdict == "earned", c
            assert c.favourites_exposure_share < 0.5 and c.ratio_low > 1.0

    def test_pooled_lift_separates(self, runs):
        """Holdout counts pooled over the seeds: the intervals of the two lifts do not overlap."""
        def pooled(rs):
            keys = ("holdout_clicks_favourites", "holdout_shows_favourites", "holdout_clicks_rest",
                    "holdout_shows_rest")
            return lift_interval(*(sum(r.extra[k] for r in rs) for k in keys))
        loop, control = pooled(runs[True]), pooled(runs[False])
        assert loop[2] < control[1], (loop, control)
        assert loop[0] < 1.5 < control[0]

    def test_favourites_are_judged_out_of_sample(self):
        """Per-window favourites: a window's favourites are judged on that window's holdout only."""
        w1 = ({0: 9.0, 1: 1.0}, {0: 10.0, 1: 10.0}, {0: 1.0, 1: 1.0}, {})
        w2 = ({1: 9.0, 0: 1.0}, {0: 10.0, 1: 10.0}, {0: 0.0, 1: 5.0}, {})
        c = windowed_holdout_comparison([w1, w2], favourites=0.5, min_clicks=1)
        # favourites 0 (window 1: 1 click in 10) and 1 (window 2: 5 in 10); the rest: 1 in 10, then 0 in 10
        assert c.holdout_ctr_favourites == pytest.approx(6 / 20)
        assert c.holdout_ctr_rest == pytest.approx(1 / 20)
        assert c.favourites_exposure_share == pytest.approx(0.9)
