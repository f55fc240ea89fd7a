"""The alarm on both simulated loops (short runs, several seeds) and its silence on their controls."""

from __future__ import annotations

import pytest

from guarded_serving.feedback_loops import simulations as S


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

