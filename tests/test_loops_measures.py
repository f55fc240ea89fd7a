"""The exposure measures on hand-made counts, the holdout comparison on hand-made counts, and the
sequential alarm's guarantee and power on synthetic window series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from guarded_serving.feedback_loops.alarm import (
    ConcentrationAlarm,
    TrendAlarm,
    trend_slope,
)
from guarded_serving.feedback_loops.coupling import OutcomeCoupling, source_code
from guarded_serving.feedback_loops.holdout import holdout_comparison
from guarded_serving.feedback_loops.measures import (
    average_popularity,
    coverage,
    exposure_counts,
    gini,
    jaccard,
    normalised_entropy,
    popularity_lift,
    position_weights,
    summarise,
    top_share,
)


class TestMeasures:
    def test_even_exposure(self):
        """Every item shown equally: Gini 0, entropy 1, full coverage, top 1% share = 1/n."""
        e = [5.0] * 200
        assert gini(e) == pytest.approx(0.0)
        assert normalised_entropy(e) == pytest.approx(1.0)
        assert coverage(e) == 1.0
        assert top_share(e) == pytest.approx(2 / 200)  # ceil(1% of 200) = 2 items

    def test_one_item_takes_all(self):
        """All exposure on one of four items: Gini (n-1)/n, entropy 0, coverage 1/4, top share 1."""
        e = [0, 0, 12, 0]
        assert gini(e) == pytest.approx(3 / 4)
        assert normalised_entropy(e) == pytest.approx(0.0)
        assert coverage(e) == 0.25
        assert top_share(e) == 1.0

    def test_hand_computed_gini_and_entropy(self):
        """Shares (1, 2, 3, 4)/10: Gini = 0.25 (by the mean-difference formula), entropy by hand."""
        e = [1, 2, 3, 4]
        diffs = sum(abs(a - b) for a in e for b in e)
        assert gini(e) == pytest.approx(diffs / (2 * 4 * 4 * np.mean(e)))
        assert gini(e) == pytest.approx(0.25)
        p = np.array(e) / 10
        assert normalised_entropy(e) == pytest.approx(-(p * np.log(p)).sum() / math.log(4))

    def test_catalogue_padding_counts_unseen_items(self):
        """Items never shown count when the catalogue size is given."""
        assert coverage([1, 1], n_items=10) == 0.2
        assert gini([1, 1], n_items=4) == pytest.approx(0.5)

    def test_position_weights_and_counts(self):
        w = position_weights(3)
        assert w.tolist() == pytest.approx([1.0, 1 / math.log2(3), 0.5])
        assert position_weights(3, "reciprocal").tolist() == pytest.approx([1, 0.5, 1 / 3])
        counts = exposure_counts([["a", "b"], ["b", "c"]], "uniform")
        assert counts == {"a": 1.0, "b": 2.0, "c": 1.0}
        with pytest.raises(ValueError, match="scheme='log'"):
            position_weights(2, "log")

    def test_popularity(self):
        """Shown as users chose in the reference: lift 1; only the head item: lift above 1."""
        pop = [60, 30, 10]
        assert popularity_lift(pop, pop) == pytest.approx(1.0)
        assert average_popularity([1, 0, 0], pop) == pytest.approx(0.6)
        assert popularity_lift([1, 0, 0], pop) == pytest.approx(0.6 / (0.36 + 0.09 + 0.01))
        assert popularity_lift([0, 0, 1], pop) < 1

    def test_jaccard(self):
        assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
        assert jaccard([], []) == 1.0

    def test_summary(self):
        s = summarise([4, 0, 0, 0], n_items=8, n_lists=2, popularity=[1, 1, 1, 1, 1, 1, 1, 1], jaccard_mean=0.3)
        d = s.to_dict()
        assert d["n_items"] == 8 and d["coverage"] == 0.125 and d["popularity_lift"] == pytest.approx(1.0)
        assert d["jaccard"] == 0.3

    def test_negative_exposure_is_refused(self):
        with pytest.raises(ValueError, match="non-negative"):
            gini([1, -1])


class TestHoldoutComparison:
    def test_favourites_no_better_on_the_holdout(self):
        """Two items take 90% of model exposure but are clicked like the rest on the holdout: exposure only."""
        model = {0: 450.0, 1: 450.0, **{i: 1.0 for i in range(2, 102)}}
        shows = {i: 100.0 for i in range(102)}
        clicks = {i: 5.0 for i in range(102)}
        c = holdout_comparison(model, shows, clicks, favourites=2)
        assert c.favourites == (0, 1)
        assert c.favourites_exposure_share == pytest.approx(0.9)
        assert c.ratio == pytest.approx(1.0)
        assert c.ratio_low < 1 < c.ratio_high
        assert c.verdict == "exposure only"

    def test_favourites_earn_their_exposure(self):
        model = {0: 450.0, 1: 450.0, **{i: 1.0 for i in range(2, 102)}}
        shows = {i: 100.0 for i in range(102)}
        clicks = {i: (30.0 if i < 2 else 5.0) for i in range(102)}
        c = holdout_comparison(model, shows, clicks, favourites=2)
        assert c.ratio == pytest.approx(6.0)
        assert c.verdict == "earned"

    def test_too_few_clicks_is_not_judged(self):
        c = holdout_comparison({0: 10.0, 1: 1.0}, {0: 5.0, 1: 5.0}, {0: 1.0, 1: 1.0}, favourites=1)
        assert not c.judged and c.verdict == "too few holdout clicks"


class TestCoupling:
    def test_click_through_by_rank_and_label_coverage(self):
        cp = OutcomeCoupling(max_rank=3)
        cp.add_window(0, 10, np.array([5, 2, 1]))
        cp.add_window(1, 10, np.array([9, 1, 0]))
        assert cp.ctr_by_rank(last=2).tolist() == pytest.approx([0.7, 0.15, 0.05])
        assert cp.top_rank_share() == pytest.approx([5 / 8, 0.9])
        cp.add_predictions(np.array([0, 0, 1, 1, 1, 1]))
        cp.add_labels(np.array([1, 1]), np.array([source_code("model"), source_code("audit")]))
        assert cp.coverage_by_class() == {0: 0.0, 1: 0.5}
        assert cp.source_shares() == {"model": 0.5, "exploration": 0.0, "independent": 0.5}


class TestAlarm:
    def test_false_alarms_within_the_bound_on_exchangeable_windows(self):
        """100 streams of 300 iid windows at alpha 0.1: the alarm fires on at most about 10 of them."""
        rng = np.random.default_rng(0)
        fired = 0
        for s in range(100):
            a = TrendAlarm(alpha=0.1, seed=s)
            for v in rng.normal(size=300):
                a.update(v)
            fired += a.alarm
        assert fired <= 16  # binomial(100, 0.1) exceeds 16 with probability < 0.03; the bound is usually loose

    def test_a_steady_rise_is_caught_soon_after_onset(self):
        rng = np.random.default_rng(1)
        a = TrendAlarm(alpha=0.01)
        for i in range(200):
            a.update(rng.normal() + (0.3 * (i - 60) if i >= 60 else 0.0))
            if a.alarm:
                break
        assert a.alarm and 60 < a.alarm_at_ <= 60 + 25

    def test_direction_down_and_nan(self):
        a = TrendAlarm(alpha=0.01, direction="down")
        for i in range(60):
            a.update(float("nan"))
            a.update(-0.5 * i)
        assert a.alarm and a.n_seen_ == 60 and a.alarm_at_ <= 15  # NaN windows skipped

    def test_blocks_average_windows(self):
        a = TrendAlarm(alpha=0.01, block=5)
        for i in range(50):
            a.update(float(i % 3))
        assert a.n_seen_ == 10 and a.values_[0] == pytest.approx((0 + 1 + 2 + 0 + 1) / 5)

    def test_concentration_alarm_splits_alpha_and_names_the_measure(self):
        ca = ConcentrationAlarm(alpha=0.01, measures={"gini": "up", "entropy": "down"})
        assert all(a.alpha == pytest.approx(0.005) for a in ca.alarms_.values())
        for i in range(80):
            ca.update({"gini": 0.1 + 0.01 * i, "entropy": 0.9})
        assert ca.alarm and ca.first_ == "gini"
        assert ca.leading()[0] == "gini"

    @pytest.mark.parametrize("kw, text", [({"alpha": 0}, "alpha=0"), ({"direction": "sideways"}, "direction"),
                                          ({"block": 0}, "block=0"), ({"epsilons": (2.0,)}, "epsilons")])
    def test_bad_parameters(self, kw, text):
        with pytest.raises(ValueError, match=text):
            TrendAlarm(**kw)

    def test_trend_slope(self):
        assert trend_slope([1, 2, 3, 4]) == pytest.approx(1.0)
        assert math.isnan(trend_slope([1.0]))
