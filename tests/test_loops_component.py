"""The loop component on real guards: pooling through one SQLite store, the holdout comparison,
the alarm on a loop fed through the guard, outcome coupling, and configuration errors."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from guarded_serving import ConfigError, Guard
from guarded_serving.feedback_loops.component import LoopComponent, item_code


def _guard(store, **kw):
    settings = {"name": "songs", "loop_check": True, "loop_store": str(store), "loop_window": 50,
                "loop_interval_s": 3600.0, "loop_user_field": "user", "loop_exploration_field": "explore",
                "loop_min_holdout_clicks": 20}
    settings.update(kw)
    g = Guard(**settings)

    @g
    def recommend(user: int, explore: bool = False, items: list | None = None) -> dict:
        return {"request_id": uuid.uuid4().hex, "items": list(items or [])}

    return g, recommend


def _loop(g) -> LoopComponent:
    return g.component("feedback_loops")  # type: ignore[return-value]


class TestPooling:
    def test_two_guards_on_one_store_cut_the_same_windows(self, tmp_path):
        """Lists answered by two guards (two workers) pool in one order; both see every list and the same windows."""
        store = tmp_path / "loops.sqlite"
        (g1, rec1), (g2, rec2) = _guard(store), _guard(store)
        rng = np.random.default_rng(0)
        try:
            for i in range(240):
                rec = rec1 if i % 2 else rec2
                rec(user=int(rng.integers(50)), items=[int(x) for x in rng.choice(100, 10, replace=False)])
                if i % 40 == 39:  # flushes interleave
                    _loop(g1).flush()
                    _loop(g2).flush()
            for g in (g1, g2):
                _loop(g).run_once()
            s1, s2 = _loop(g1).stats(), _loop(g2).stats()
            assert s1["pooled_lists_read"] == s2["pooled_lists_read"] == 240
            assert s1["windows"] == s2["windows"] == 4  # 4 closed windows of 50, the fifth open
            assert [h["gini"] for h in s1["history"]] == [h["gini"] for h in s2["history"]]
            assert [h["n_lists"] for h in s1["history"]] == [50] * 4
            assert s1["latest"]["jaccard"] is not None  # users came back: successive lists compared
            health = g1.health()["checks"]
            assert health["loop.exposure"]["status"] == "ok" and "gini" in health["loop.exposure"]["reason"]
        finally:
            g1.stop()
            g2.stop()


def _serve_favourites(rec, rng, n, favourites, catalogue, explore_share=0.2):
    """Model lists always lead with ``favourites``; a share of requests get random lists (exploration)."""
    answers = []
    for _ in range(n):
        explore = bool(rng.random() < explore_share)
        if explore:
            items = [int(x) for x in rng.choice(catalogue, 10, replace=False)]
        else:
            rest = [int(x) for x in rng.choice(np.arange(len(favourites), catalogue), 10 - len(favourites), replace=False)]
            items = list(favourites) + rest
        answers.append((rec(user=int(rng.integers(1000)), explore=explore, items=items), explore, items))
    return answers


class TestHoldout:
    @pytest.mark.parametrize("liked", [False, True])
    def test_holdout_tells_earned_from_exposure_only(self, tmp_path, liked):
        """Favourites no better than the rest on the random holdout: 'users only see these items' (degraded);
        favourites clicked more on the holdout: 'users like these items' (ok)."""
        g, rec = _guard(tmp_path / "loops.sqlite", loop_window=100)
        comp = _loop(g)
        rng = np.random.default_rng(1)
        favourites = [0, 1, 2, 3, 4]
        appeal = np.full(100, 0.2)
        if liked:
            appeal[favourites] = 0.8
        try:  # enough holdout clicks that "liked less than twice the rest" is decided at 97.5%
            for resp, explore, items in _serve_favourites(rec, rng, 1500, favourites, 100, explore_share=0.4):
                clicked = [it for r, it in enumerate(items) if rng.random() < appeal[it] / np.log2(r + 2)]
                comp.observe_outcome(resp["request_id"], clicked=clicked, source="exploration" if explore else "model")
            comp.run_once()
            comp.run_once()  # outcomes flushed before their lists were read are joined on the next cycle
            check = g.health()["checks"]["loop.holdout"]
            d = check["details"]
            assert set(d["favourites"]) == {"0", "1", "2", "3", "4"}
            assert d["favourites_exposure_share"] > 0.5
            if liked:
                assert check["status"] == "ok" and check["reason"].startswith("users like these items")
                assert d["ratio_low"] > 1.0
            else:
                assert check["status"] == "degraded" and check["reason"].startswith("users may only see these items"), check
                assert d["ratio_low"] < 1.0 < d["ratio_high"]
            stats = comp.stats()
            assert stats["outcomes_joined"] > 0
            assert stats["ctr_by_rank"][0] > stats["ctr_by_rank"][9]  # position bias shows in click-through by rank
            outcomes = g.health()["checks"]["loop.outcomes"]
            assert outcomes["status"] == "ok" and "rank 1 took" in outcomes["reason"]  # its change over windows
            assert len(outcomes["details"]["top_rank_click_share"]) >= 10
        finally:
            g.stop()


class TestAlarm:
    def test_a_loop_fed_through_the_guard_is_caught_naming_the_measure(self, tmp_path):
        """Lists of the simulated popularity loop served through a guard: loop.alarm degraded, naming measure and trend."""
        g, rec = _guard(tmp_path / "loops.sqlite", loop_window=40, loop_user_field=None)
        comp = _loop(g)
        rng = np.random.default_rng(3)
        try:
            weights = np.ones(200)
            for w in range(45):
                p = weights / weights.sum()
                for _ in range(40):
                    rec(user=0, items=[int(x) for x in rng.choice(200, 10, replace=False, p=p)])
                if w >= 15:  # from window 15, exposure feeds on itself
                    weights[np.argsort(weights)[-10:]] *= 1.3
                comp.run_once()
            check = g.health()["checks"]["loop.alarm"]
            assert check["status"] == "degraded"
            assert "feedback loop:" in check["reason"] and "per window" in check["reason"]
            assert check["details"]["measure"] in {"gini", "top_share", "entropy", "coverage"}
            assert check["details"]["alarm_at"] > 15 - 3  # not during the quiet windows
        finally:
            g.stop()

    def test_stationary_traffic_does_not_alarm(self, tmp_path):
        """The same traffic without the reinforcement: loop.alarm stays ok."""
        g, rec = _guard(tmp_path / "loops.sqlite", loop_window=40, loop_user_field=None)
        comp = _loop(g)
        rng = np.random.default_rng(4)
        p = rng.dirichlet(np.ones(200))
        try:
            for _ in range(45):
                for _ in range(40):
                    rec(user=0, items=[int(x) for x in rng.choice(200, 10, replace=False, p=p)])
                comp.run_once()
            check = g.health()["checks"]["loop.alarm"]
            assert check["status"] == "ok" and check["details"]["windows"] == 44
        finally:
            g.stop()


class TestCoupling:
    def test_labels_only_where_the_model_said_yes(self, tmp_path):
        """A classifier whose labels arrive only for predicted class 1, all produced by its own decisions."""
        g = Guard(name="loans", loop_check=True, loop_store=str(tmp_path / "loops.sqlite"), loop_interval_s=3600.0,
                  loop_output="classes")

        @g
        def approve(x: list) -> dict:
            return {"request_id": uuid.uuid4().hex, "label": [int(v > 0) for v in x]}

        comp = _loop(g)
        rng = np.random.default_rng(5)
        try:
            for _ in range(200):
                out = approve(list(rng.normal(size=4)))
                for row, cls in enumerate(out["label"]):
                    if cls == 1:  # repayment is known only for granted loans
                        comp.observe_outcome(out["request_id"], row=row, label=int(rng.random() < 0.9), source="model")
            comp.run_once()
            comp.run_once()
            check = g.health()["checks"]["loop.outcomes"]
            assert check["status"] == "degraded"
            cov = check["details"]["label_coverage_by_class"]
            assert cov[1] == 1.0 and cov[0] == 0.0
            assert "class(es) [0] are almost never labelled" in check["reason"]
            assert "100% of the tagged labels were produced by the model's own outputs" in check["reason"]
        finally:
            g.stop()

    def test_labels_sent_through_record_feedback_are_counted(self, tmp_path):
        """With the performance capability on, labels sent with guard.record_feedback (the request id the guard
        put in the answer) reach the label coverage by predicted class."""
        g = Guard(name="loans", loop_check=True, loop_store=str(tmp_path / "loops.sqlite"), loop_interval_s=3600.0,
                  loop_output="classes", performance=True, performance_store=str(tmp_path / "outcomes.sqlite"),
                  performance_interval_s=3600.0)

        @g
        def approve(x: list) -> dict:
            return {"label": [int(v > 0) for v in x]}

        rng = np.random.default_rng(6)
        try:
            answers = [approve(list(rng.normal(size=4))) for _ in range(100)]
            g.component("performance").flush()
            for out in answers:
                assert "request_id" in out  # the guard's id, in the answer
                for row, cls in enumerate(out["label"]):
                    if cls == 1:
                        assert g.record_feedback(out["request_id"], 1, row=row).ok
            _loop(g).run_once()
            check = g.health()["checks"]["loop.outcomes"]
            assert check["status"] == "degraded"
            assert check["details"]["label_coverage_by_class"] == {0: 0.0, 1: 1.0}
            assert _loop(g).stats()["performance_labels"] > 100
        finally:
            g.stop()

    def test_bad_outcomes_are_refused_naming_the_field(self):
        comp = LoopComponent()
        with pytest.raises(ValueError, match="request_id"):
            comp.observe_outcome("", clicked=[1])
        with pytest.raises(ValueError, match="row=-1"):
            comp.observe_outcome("abc", row=-1)
        with pytest.raises(ValueError, match="label='yes'"):
            comp.observe_outcome("abc", label="yes")  # type: ignore[arg-type]


class TestConfig:
    @pytest.mark.parametrize("kw, text", [
        ({"loop_window": 1}, "loop_window=1 is invalid"),
        ({"loop_alpha": 1.5}, "loop_alpha=1.5 is invalid"),
        ({"loop_output": "lists"}, "loop_output='lists' is invalid"),
        ({"loop_position_weights": "log"}, "loop_position_weights='log' is invalid"),
        ({"loop_reference": 3}, "loop_reference=3 is invalid"),
    ])
    def test_bad_settings_name_the_value(self, kw, text):
        with pytest.raises(ConfigError, match=text.replace("(", r"\(").replace(")", r"\)")):
            Guard(name="songs", loop_check=True, **kw)

    def test_unreadable_reference_is_a_config_error(self, tmp_path):
        with pytest.raises(ConfigError, match="loop_reference"):
            Guard(name="songs", loop_check=True, loop_reference=str(tmp_path / "missing.npz"))

    def test_off_by_default(self):
        assert "feedback_loops" not in {c.name for c in Guard(name="songs").components}

    def test_item_codes_are_exact_for_integers_and_hashed_otherwise(self):
        assert item_code(42) == 42.0 and item_code(np.int64(7)) == 7.0
        assert item_code("song-1") < 0 and item_code("song-1") == item_code("song-1") != item_code("song-2")


class TestTelemetry:
    def test_each_closed_window_gets_a_span_with_its_measures(self, tmp_path):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        exporter, provider = InMemorySpanExporter(), TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        g, _ = _guard(tmp_path / "loops.sqlite", loop_window=10)
        g2 = Guard(g.config, tracer_provider=provider)
        rec2 = g2(lambda user, items: {"items": items})
        try:
            for i in range(35):
                rec2(i, [i % 5, (i + 1) % 5])
            _loop(g2).run_once()
            spans = [s for s in exporter.get_finished_spans() if s.name == "guard songs loop"]
            assert len(spans) == 3
            ev = spans[0].events[0]
            assert ev.name == "guard.loop.window" and 0 <= ev.attributes["guard.loop.gini"] <= 1
            assert ev.attributes["guard.loop.n_lists"] == 10 and ev.attributes["guard.loop.alarm"] is False
        finally:
            g.stop()
            g2.stop()
