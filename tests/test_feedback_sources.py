"""Label source tags through the performance feedback (issue 12, item 2): ``guard.record_feedback(...,
source=...)``, bulk items and the feedback endpoint validate the tag, the outcome stores keep it, and the
feedback-loop check reads "the share of labels the model's own outputs produced" from it, counting a label
sent through both paths once."""

from __future__ import annotations

import sqlite3
import time
import uuid

import numpy as np
import pytest

from guarded_serving import Guard
from guarded_serving.call import new_request_id
from guarded_serving.feedback_loops.component import LoopComponent
from guarded_serving.performance.feedback import parse_items
from guarded_serving.serving.bentoml import feedback_response
from guarded_serving.store.outcomes import PredictionRecord, SQLiteOutcomeStore


def _record(rid, row=0):
    return PredictionRecord(rid, row, time.time(), "1", "*", "classification", 1.0, None)


def _ok(kind, label):
    return None


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    """An outcome store of either kind (Redis: a private redis-server, skipped when not installed)."""
    if request.param == "sqlite":
        st = SQLiteOutcomeStore(tmp_path / "o.sqlite")
    else:
        from guarded_serving.store.outcomes_redis import RedisOutcomeStore

        st = RedisOutcomeStore(request.getfixturevalue("redis_url"), namespace=f"{uuid.uuid4().hex[:8]}:outcomes")
    yield st
    st.close()


class TestStores:
    def test_the_source_is_kept_with_the_label(self, store):
        """Tagged, untagged and pending-then-joined labels come back with their tag, request id and row."""
        a, b, c = new_request_id(), new_request_id(), new_request_id()
        store.add_predictions([_record(a), _record(b)])
        got = store.add_labels([(a, 0, 1.0, True, "model"), (b, 0, 0.0, True), (c, 0, 1.0, True, "organic")], _ok)
        assert [o.status for o in got] == ["recorded", "recorded", "pending"]
        store.add_predictions([_record(c)])
        rows = store.outcomes_after(0, 10)
        assert [(r[9], r[10], r[11]) for r in rows] == [("model", a, 0), (None, b, 0), ("organic", c, 0)]

    def test_the_first_label_keeps_its_tag(self, store):
        rid = new_request_id()
        store.add_predictions([_record(rid)])
        store.add_labels([(rid, 0, 1.0, True, "model")], _ok)
        assert store.add_labels([(rid, 0, 1.0, True, "organic")], _ok)[0].status == "unchanged"
        assert [r[9] for r in store.outcomes_after(0, 10)] == ["model"]


def test_an_outcome_file_from_before_tags_is_upgraded(tmp_path):
    """A labels table without the source column (written by an earlier version) gets it; old labels read None."""
    path = tmp_path / "old.sqlite"
    rid = new_request_id()
    st = SQLiteOutcomeStore(path)
    st.add_predictions([_record(rid)])
    st.close()
    conn = sqlite3.connect(path)  # make it look like an earlier file: rebuild labels without the column
    conn.executescript("DROP TABLE labels; CREATE TABLE labels (request_id TEXT NOT NULL, row INTEGER NOT NULL, "
                       "label REAL NOT NULL, ts REAL NOT NULL, seq INTEGER, PRIMARY KEY (request_id, row)) "
                       "WITHOUT ROWID;")
    conn.execute("INSERT INTO labels VALUES (?, 0, 1.0, ?, 1)", (rid, time.time()))
    conn.execute("INSERT INTO meta(key, value) VALUES('seq', 1)")
    conn.commit()
    conn.close()
    st = SQLiteOutcomeStore(path)
    try:
        assert [(r[5], r[9]) for r in st.outcomes_after(0, 10)] == [(1.0, None)]
        rid2 = new_request_id()
        st.add_predictions([_record(rid2)])
        st.add_labels([(rid2, 0, 0.0, True, "model")], _ok)
        assert [r[9] for r in st.outcomes_after(1, 10)] == ["model"]
    finally:
        st.close()


class TestValidation:
    @pytest.mark.parametrize("bad, words", [
        (7, "is a int"), ("", "is invalid"), ("x" * 33, "is invalid"), ("mo del", "is invalid"),
        ("-model", "is invalid"), (["model"], "is a list"),
    ])
    def test_a_bad_tag_is_a_bad_request_naming_the_item(self, bad, words):
        rid = new_request_id()
        got = parse_items([{"request_id": rid, "label": 1}, {"request_id": rid, "label": 1, "row": 1, "source": bad}])
        assert got[0] == (rid, 0, 1.0, None)
        assert got[1].status == "bad_request" and got[1].http_status == 400
        assert got[1].message.startswith(f"item 1 (request {rid}): source") and words in got[1].message

    def test_good_tags(self):
        rid = new_request_id()
        got = parse_items([{"request_id": rid, "label": [1, 0], "source": "exploration"},
                           {"request_id": rid, "label": 1, "row": 2, "source": "audit:2026-11.v2"}])
        assert got == [(rid, 0, 1.0, "exploration"), (rid, 1, 0.0, "exploration"), (rid, 2, 1.0, "audit:2026-11.v2")]

    def test_the_endpoint_answers_400_naming_the_item_and_keeps_the_rest(self, tmp_path):
        g = Guard(name="m", operational=False, performance=True, performance_store=str(tmp_path / "o.sqlite"),
                  performance_interval_s=3600.0)

        @g
        def predict(x):
            return {"label": [1] * len(x)}

        try:
            rid = predict([[0.0], [1.0]])["request_id"]
            auth = {"authorization": "Bearer t"}
            code, out = feedback_response(g, {"request_id": rid, "label": 1, "source": "no spaces"}, auth, token="t")
            assert code == 400 and "source 'no spaces' is invalid" in out["message"] and "item 0" in out["message"]
            code, out = feedback_response(g, {"items": [{"request_id": rid, "label": 1, "source": "model"},
                                                        {"request_id": rid, "label": 1, "row": 1, "source": 3}]},
                                          auth, token="t")
            assert code == 400 and out["kept"] == 1 and "item 1" in out["results"][1]["message"]
            with pytest.raises(ValueError, match="source 'no spaces' is invalid"):  # the loop's own path too
                LoopComponent().observe_outcome(rid, label=1, source="no spaces")
        finally:
            g.stop()


def _classifier(tmp_path, name="loans"):
    g = Guard(name=name, loop_check=True, loop_store=str(tmp_path / "loops.sqlite"), loop_interval_s=3600.0,
              loop_output="classes", performance=True, performance_store=str(tmp_path / "outcomes.sqlite"),
              performance_interval_s=3600.0)

    @g
    def approve(x: list) -> dict:
        return {"label": [int(v > 0) for v in x]}

    return g, approve


class TestLoopShareThroughFeedback:
    def test_the_model_share_of_tagged_labels(self, tmp_path):
        """Labels tagged through guard.record_feedback / record_feedback_many reach the loop check's label sources:
        85% produced by the model's own outputs -> loop.outcomes degraded, naming the share."""
        g, approve = _classifier(tmp_path)
        rng = np.random.default_rng(3)
        try:
            answers = [approve(list(rng.normal(size=2))) for _ in range(100)]
            g.component("performance").flush()
            items = []
            for i, out in enumerate(answers):
                src = "model" if i < 85 else "organic"
                if i % 2:
                    assert g.record_feedback(out["request_id"], out["label"][0], row=0, source=src).ok
                else:
                    items.append({"request_id": out["request_id"], "label": out["label"][0], "row": 0, "source": src})
            assert all(r.ok for r in g.record_feedback_many(items))
            loop = g.component("feedback_loops")
            loop.run_once()
            stats = loop.stats()
            assert stats["performance_labels"] == 100
            assert stats["label_sources"] == pytest.approx({"model": 0.85, "exploration": 0.0, "independent": 0.15})
            check = g.health()["checks"]["loop.outcomes"]
            assert check["status"] == "degraded"
            assert "85% of the tagged labels were produced by the model's own outputs" in check["reason"]
        finally:
            g.stop()

    def test_a_label_sent_through_both_paths_counts_once(self, tmp_path):
        """observe_outcome and record_feedback for the same (request id, row): one label, the first tag wins."""
        g, approve = _classifier(tmp_path)
        rng = np.random.default_rng(4)
        loop = g.component("feedback_loops")
        try:
            answers = [approve(list(rng.normal(size=2))) for _ in range(40)]
            g.component("performance").flush()
            for out in answers:  # the loop's own path first, tagged "model"
                for row in (0, 1):
                    loop.observe_outcome(out["request_id"], row=row, label=out["label"][row], source="model")
            loop.run_once()
            loop.run_once()
            for out in answers:  # then the same labels through the performance feedback, tagged "organic"
                assert g.record_feedback(out["request_id"], out["label"], source="organic").ok
            loop.run_once()
            stats = loop.stats()
            assert stats["labels_counted_once"] == 80
            assert stats["label_sources"] == pytest.approx({"model": 1.0, "exploration": 0.0, "independent": 0.0})
            cov = stats["label_coverage_by_class"]  # each prediction labelled once: coverage 1.0, not 2.0
            assert cov and all(v == 1.0 for v in cov.values())
        finally:
            g.stop()
