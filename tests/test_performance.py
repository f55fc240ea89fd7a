"""ML performance: confidence sequence, label-free estimates, outcome store, feedback, expectations."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from guarded_serving import ConfigError, Guard, GuardConfig
from guarded_serving.call import new_request_id, request_id_time
from guarded_serving.performance.confseq import EmpiricalBernsteinCS, RestartingCS, bounds_path
from guarded_serving.performance.estimate import ATC, CBPE, isotonic_fit
from guarded_serving.serving.bentoml import feedback_response
from guarded_serving.store.outcomes import PredictionRecord, SQLiteOutcomeStore

ROOT = Path(__file__).resolve().parent.parent


class TestConfidenceSequence:
    def test_covers_the_mean_at_every_step_on_most_streams(self):
        """On 200 Bernoulli streams the running bounds hold at every one of 2,000 steps on >= 1 - alpha of them."""
        rng = np.random.default_rng(1)
        misses = 0
        for _ in range(200):
            p = rng.uniform(0.05, 0.95)
            lo, up = bounds_path((rng.random(2000) < p).astype(float), 0.05)
            misses += bool(np.any(lo > p) or np.any(up < p))
        assert misses <= 200 * 0.05

    def test_bound_tightens_and_is_monotone(self):
        """The running upper bound never rises and approaches the mean as labels accumulate."""
        x = (np.random.default_rng(2).random(20_000) < 0.9).astype(float)
        lo, up = bounds_path(x, 0.01, side="upper")
        assert np.all(np.diff(up) <= 1e-15)
        assert up[99] - 0.9 > up[19_999] - 0.9 > 0 and up[19_999] < 0.91

    def test_never_alarms_on_a_handful_of_labels(self):
        """Ten wrong answers in a row still leave the upper bound of the accuracy above 0.5 at level 0.01."""
        cs = EmpiricalBernsteinCS(0.01, side="upper")
        cs.update(np.zeros(10))
        assert cs.upper_ > 0.5

    def test_incremental_updates_equal_one_batch(self):
        """Feeding values in chunks gives the same bounds as one batch (state carries over)."""
        x = (np.random.default_rng(3).random(5000) < 0.8).astype(float)
        a = EmpiricalBernsteinCS(0.01)
        for i in range(0, 5000, 333):
            a.update(x[i:i + 333])
        b = EmpiricalBernsteinCS(0.01)
        b.update(x)
        assert a.upper_ == pytest.approx(b.upper_) and a.lower_ == pytest.approx(b.lower_) and a.n_ == 5000

    def test_detects_a_drop_below_the_expectation(self):
        """Accuracy 0.90 against an expectation of 0.97: the upper bound crosses it within a few hundred labels."""
        x = (np.random.default_rng(4).random(5000) < 0.90).astype(float)
        _, up = bounds_path(x, 0.01, side="upper")
        assert 30 < int(np.argmax(up < 0.97)) < 1500

    def test_restarts_see_a_late_drop_sooner_and_stay_valid(self):
        """After 5,000 good labels a drop to 0.90 is caught sooner by the restarted sequences than by the one
        since the first label; on clean streams at the expectation neither alarms more often than alpha allows."""
        rng = np.random.default_rng(8)
        x = np.concatenate([rng.random(5000) < 0.97, rng.random(5000) < 0.90]).astype(float)
        up = RestartingCS(0.01, side="upper").update(x, path=True)
        _, plain = bounds_path(x, 0.01, side="upper")
        first, first_plain = int(np.argmax(up < 0.97)), int(np.argmax(plain < 0.97))
        assert 5000 < first < first_plain
        alarms = sum(bool(np.any(RestartingCS(0.05, side="upper").update(
            (rng.random(20_000) < 0.97).astype(float), path=True) < 0.97)) for _ in range(40))
        assert alarms <= 40 * 0.05

    def test_restarting_path_matches_its_state(self):
        """The path's last value is the reported bound, and it names how many labels it rests on."""
        cs = RestartingCS(0.01, every=100, keep=3)
        path = cs.update((np.random.default_rng(9).random(1050) < 0.8).astype(float), path=True)
        assert path[-1] == pytest.approx(cs.bound_) and cs.labels_since() == 1050 - cs.since_
        assert len(cs._restarts) == 3

    def test_rejects_values_outside_the_unit_interval(self):
        """Values must be rescaled to [0, 1]: the error says so."""
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            EmpiricalBernsteinCS().update([0.5, 2.0])


class TestLabelFreeEstimates:
    def _calibrated(self, n, rng, shift=0.0):
        p = np.clip(rng.beta(2, 2, n) + shift, 0, 1)
        y = (rng.random(n) < p).astype(int)  # scores are calibrated: P(y=1) = p
        return p, y

    def test_isotonic_fit_is_monotone(self):
        """The pool-adjacent-violators fit never decreases."""
        kx, ky = isotonic_fit(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 0.0, 1.0, 1.0]))
        assert np.all(np.diff(ky) >= 0) and ky[0] == pytest.approx(0.5)

    def test_cbpe_and_atc_estimate_accuracy_under_covariate_shift(self):
        """Calibrated scores, shifted score distribution: CBPE lands on the realised accuracy, ATC moves toward it."""
        rng = np.random.default_rng(5)
        ref_p, ref_y = self._calibrated(20_000, rng)
        cbpe, atc = CBPE().fit(ref_p, ref_y), ATC().fit(ref_p, ref_y)
        # covariate shift: more confident rows, same P(y | score)
        p = np.clip(rng.beta(5, 1, 5000), 0, 1)
        y = (rng.random(5000) < p).astype(int)
        realised = float(((p >= 0.5).astype(int) == y).mean())
        est = cbpe.estimate(p)
        assert est["lower"] <= realised <= est["upper"]
        assert abs(est["accuracy"] - realised) < 0.03
        # ATC (a heuristic) follows the shift in the right direction, more coarsely
        assert atc.reference_accuracy_ < atc.estimate(p) and abs(atc.estimate(p) - realised) < 0.1

    def test_band_misses_a_concept_shift(self):
        """When labels flip (the concept changed), realised accuracy falls outside CBPE's band."""
        rng = np.random.default_rng(6)
        ref_p, ref_y = self._calibrated(20_000, rng)
        cbpe = CBPE().fit(ref_p, ref_y)
        p, y = self._calibrated(3000, rng)
        y = np.where(rng.random(3000) < 0.2, 1 - y, y)
        est = cbpe.estimate(p)
        assert float(((p >= 0.5).astype(int) == y).mean()) < est["lower"]

    def test_unfitted_estimator_says_so(self):
        with pytest.raises(RuntimeError, match="not fitted"):
            CBPE().estimate(np.array([0.5]))


def _record(rid, row=0, ts=None, predicted=1.0, kind="classification", version="1"):
    return PredictionRecord(rid, row, time.time() if ts is None else ts, version, "*", kind, predicted,
                            np.array([0.2, 0.8]).tobytes())


def _ok(kind, label):
    return None


@pytest.fixture(params=["sqlite", "redis"])
def store_factory(request, tmp_path):
    """Builds an outcome store of either kind (Redis: a private redis-server, skipped when not installed)."""
    if request.param == "sqlite":
        return lambda **kw: SQLiteOutcomeStore(tmp_path / "o.sqlite", **kw)
    from guarded_serving.store.outcomes_redis import RedisOutcomeStore

    url = request.getfixturevalue("redis_url")
    return lambda **kw: RedisOutcomeStore(url, namespace="m:outcomes", **kw)


class TestOutcomeStore:
    def test_label_before_its_prediction_is_kept_and_joined_later(self, store_factory):
        """A label whose prediction is not stored yet is pending, then joined (with a sequence number) on flush."""
        st = store_factory()
        rid = new_request_id()
        assert st.add_labels([(rid, 0, 1.0, True)], _ok)[0].status == "pending"
        assert st.outcomes_after(0, 10) == [] and st.counts()["pending"] == 1
        assert st.add_predictions([_record(rid)]) == 1
        got = st.outcomes_after(0, 10)
        assert len(got) == 1 and got[0][4] == 1.0 and got[0][5] == 1.0 and st.counts()["pending"] == 0

    def test_idempotent_and_conflicting_labels(self, store_factory):
        """The same label twice is unchanged; a different one is a conflict and the first stands."""
        st = store_factory()
        rid = new_request_id()
        st.add_predictions([_record(rid)])
        got = st.add_labels([(rid, 0, 1.0, True), (rid, 0, 1.0, True), (rid, 0, 0.0, True)], _ok)
        assert [o.status for o in got] == ["recorded", "unchanged", "conflict"] and got[2].existing == 1.0
        assert len(st.outcomes_after(0, 10)) == 1

    def test_retention_drops_old_predictions_and_stale_pending_labels(self, store_factory):
        """expire() removes predictions (with their labels) past retention and pending labels past their wait."""
        st = store_factory(retention_s=100, pending_s=10)
        now = time.time()
        old, new = new_request_id(), new_request_id()
        st.add_predictions([_record(old, ts=now - 200), _record(new, ts=now)])
        st.add_labels([(old, 0, 1.0, True)], _ok, now=now - 150)
        st.add_labels([(new_request_id(), 0, 1.0, True)], _ok, now=now - 20)
        assert st.expire(now) == {"predictions": 1, "labels": 1, "pending_dropped": 1}
        assert st.counts() == {"predictions": 1, "labels": 0, "pending": 0, "pending_dropped": 1}
        assert [c[3:] for c in st.coverage()] == [(1, 0)]

    def test_rows_coverage_and_latest(self, store_factory):
        """A row the request never had is invalid; coverage counts predictions and labelled ones per class; latest
        returns the newest predictions of a version with their labels."""
        st = store_factory()
        now = time.time()
        rid = new_request_id()
        st.add_predictions([_record(rid, 0, ts=now), _record(rid, 1, ts=now + 1, predicted=0.0),
                            _record(new_request_id(), 0, ts=now + 2, version="2")])
        got = st.add_labels([(rid, 5, 1.0, True), (rid, 1, 0.0, True)], _ok)
        assert got[0].status == "invalid" and "2 row(s)" in got[0].problem and got[1].status == "recorded"
        cov = sorted(st.coverage())
        assert cov == [("1", "*", 0.0, 1, 1), ("1", "*", 1.0, 1, 0), ("2", "*", 1.0, 1, 0)]
        latest = st.latest("1", 10)
        assert [r[2] for r in latest] == [1.0, 0.0] and [r[4] for r in latest] == [None, 0.0]
        assert np.frombuffer(latest[0][3]).tolist() == [0.2, 0.8]

    def test_coverage_counts_follow_every_write_and_expiry(self, store_factory):
        """Coverage and counts (kept incrementally) equal a recount of the stored rows after a random mix of
        predictions (regressor rows and unanswered rows too), retried flushes, labels before and after their
        prediction, conflicts and retention."""
        st = store_factory(retention_s=100.0, pending_s=50.0)
        rng = np.random.default_rng(11)
        now = 1_000_000.0
        kept: dict[tuple[str, int], tuple] = {}  # (rid, row) -> (version, class or None, ts)
        labelled: set[tuple[str, int]] = set()
        for step in range(12):
            t = now + step * 20.0
            recs = []
            for _ in range(40):
                rid, kind = new_request_id(), ("classification" if rng.random() < 0.8 else "regression")
                pred = None if rng.random() < 0.1 else float(rng.integers(0, 3))
                recs.append(PredictionRecord(rid, 0, t, str(rng.integers(1, 3)), "*", kind, pred))
                kept[(rid, 0)] = (recs[-1].version, pred if kind == "classification" else None, t)
            early = [r for r in recs if rng.random() < 0.3]  # labels sent before their prediction is stored
            st.add_labels([(r.request_id, 0, 1.0, True) for r in early], _ok, now=t)
            st.add_predictions(recs)
            st.add_predictions(recs[:10])  # a retried flush: stored once
            labelled |= {(r.request_id, 0) for r in early}
            late = [r for r in recs if (r.request_id, 0) not in labelled and rng.random() < 0.4]
            st.add_labels([(r.request_id, 0, 0.0, True) for r in late] + [(r.request_id, 0, 2.0, True)
                                                                            for r in late[:3]], _ok, now=t)
            labelled |= {(r.request_id, 0) for r in late}
            st.expire(t)
            kept = {k: v for k, v in kept.items() if v[2] >= t - 100.0}
            labelled &= set(kept)
            want: dict[tuple, list[int]] = {}
            for k, (ver, cls, _) in kept.items():
                c = want.setdefault((ver, "*", cls), [0, 0])
                c[0] += 1
                c[1] += k in labelled
            assert sorted(st.coverage(), key=repr) == sorted(((*k, n, m) for k, (n, m) in want.items()), key=repr)
            counts = st.counts()
            assert (counts["predictions"], counts["labels"]) == (len(kept), len(labelled))

    def test_coverage_of_a_file_from_before_is_counted_once(self, tmp_path):
        """A store file written before coverage was kept incrementally gets its counts from its rows on first
        open, then follows new writes."""
        import sqlite3

        db = tmp_path / "o.sqlite"
        st = SQLiteOutcomeStore(db)
        rid = new_request_id()
        st.add_predictions([_record(rid, 0), _record(rid, 1, predicted=0.0)])
        st.add_labels([(rid, 0, 1.0, True)], _ok)
        st.close()
        conn = sqlite3.connect(db)  # as an older version left it: no coverage table, no triggers
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE coverage")
        conn.execute("DELETE FROM meta WHERE key='coverage'")
        conn.commit()
        conn.close()
        st = SQLiteOutcomeStore(db)
        assert sorted(st.coverage()) == [("1", "*", 0.0, 1, 0), ("1", "*", 1.0, 1, 1)]
        st.add_predictions([_record(new_request_id())])
        assert sorted(st.coverage()) == [("1", "*", 0.0, 1, 0), ("1", "*", 1.0, 2, 1)]
        assert SQLiteOutcomeStore(db).counts()["predictions"] == 3

    def test_retention_per_version_and_the_layout_of_old_files(self, tmp_path):
        """Predictions are a rowid table with a unique (request_id, row) index, and no index on ts alone; expire()
        removes old rows of every version. A file from before (a WITHOUT ROWID table keyed by the request id, a ts
        index) loses the ts index, keeps its rows and is served by the same statements."""
        import sqlite3

        def layout(db):
            conn = sqlite3.connect(db)
            try:
                table = conn.execute("SELECT sql FROM sqlite_master WHERE name='predictions'").fetchone()[0]
                indexes = {r[1] for r in conn.execute("PRAGMA index_list(predictions)")}
            finally:
                conn.close()
            return table, indexes

        for name, old in (("new.sqlite", False), ("old.sqlite", True)):
            db = tmp_path / name
            if old:  # the layout an earlier version created
                conn = sqlite3.connect(db)
                conn.executescript(
                    "CREATE TABLE predictions (request_id TEXT NOT NULL, row INTEGER NOT NULL, ts REAL NOT NULL, "
                    "version TEXT NOT NULL, segment TEXT NOT NULL, kind TEXT NOT NULL, predicted REAL, view BLOB, "
                    "inputs BLOB, PRIMARY KEY (request_id, row)) WITHOUT ROWID;"
                    "CREATE INDEX predictions_ts ON predictions(ts);")
                # a row stored by that version, before the coverage counts existed (built when the store opens)
                conn.execute("INSERT INTO predictions VALUES (?, 0, ?, '0', '*', 'classification', 1.0, NULL, NULL)",
                             (new_request_id(), time.time() - 500))
                conn.commit()
                conn.close()
            st = SQLiteOutcomeStore(db, retention_s=100)
            now = time.time()
            rids = [new_request_id() for _ in range(4)]
            st.add_predictions([_record(rids[0], ts=now - 200), _record(rids[1], ts=now - 200, version="2"),
                                _record(rids[2], ts=now, version="2"), _record(rids[3], ts=now)])
            st.add_predictions([_record(rids[3], ts=now)])  # again: stored once
            assert st.counts()["predictions"] == 4 + old
            st.add_labels([(rids[0], 0, 1.0, True), (rids[1], 0, 0.0, True)], _ok)
            assert st.expire(now) == {"predictions": 2 + old, "labels": 2, "pending_dropped": 0}
            assert st.counts()["predictions"] == 2
            assert [c for c in sorted(st.coverage()) if c[3]] == [("1", "*", 1.0, 1, 0), ("2", "*", 1.0, 1, 0)]
            st.close()
            table, indexes = layout(db)
            assert "predictions_ts" not in indexes and "predictions_version_ts" in indexes
            assert ("WITHOUT ROWID" in table) is old and ("UNIQUE" in table) is not old

    def test_labels_survive_kill_9(self, tmp_path):
        """A process that recorded labels and is killed with SIGKILL loses none of them."""
        db = tmp_path / "o.sqlite"
        script = textwrap.dedent(f"""
            import sys, time
            sys.path.insert(0, {str(ROOT)!r})
            from guarded_serving.store.outcomes import SQLiteOutcomeStore, PredictionRecord
            st = SQLiteOutcomeStore({str(db)!r})
            recs = [PredictionRecord("%032x-%016x" % (1, i), 0, time.time(), "1", "*", "classification", 1.0)
                    for i in range(500)]
            st.add_predictions(recs)
            st.add_labels([(r.request_id, 0, 1.0, True) for r in recs], lambda k, v: None)
            print("done", flush=True)
            time.sleep(60)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "done"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        st = SQLiteOutcomeStore(db)
        assert st.counts()["labels"] == 500 and len(st.outcomes_after(0, 1000)) == 500


@pytest.fixture
def guard(tmp_path):
    g = Guard(name="m", operational=False, expectations={"accuracy": 0.9}, expectation_min_labels=20,
              performance_store=str(tmp_path / "o.sqlite"), performance_interval_s=60)
    yield g
    g.stop()


def _serve(g):
    @g
    def predict(x):
        p = np.full(len(x), 0.8)
        return {"label": (p >= 0.5).astype(int).tolist(), "probability": p.tolist()}

    return predict


class TestFeedback:
    def test_request_id_is_returned_and_carries_its_time(self, guard):
        """A dict result gets the call's request id; the id tells when it was issued."""
        r = _serve(guard)(np.zeros((2, 3)))
        assert abs(request_id_time(r["request_id"]) - time.time()) < 5

    def test_request_ids_sort_in_issue_order_and_the_earlier_form_still_reads(self):
        """Time leads the id, so a store's index on ids grows at its right edge whatever the trace id;
        an id of the earlier form (trace id first), issued before an upgrade, still tells its time."""
        ids = [new_request_id(t) for t in (2 ** 127 + 5, 1, 2 ** 64 + 3, 0, 7)]
        assert ids == sorted(ids)
        assert ids[0].endswith(f"-{2 ** 127 + 5:032x}") and ids[1].endswith(f"-{1:032x}")
        assert [len(i.split("-")[0]) for i in ids] == [16] * 5
        earlier = f"{2 ** 100:032x}-{int(time.time() * 1000) - 60_000:011x}00042"
        assert abs(request_id_time(earlier) - (time.time() - 60)) < 5
        assert abs(request_id_time(ids[0]) - time.time()) < 5
        assert request_id_time("nope") is None and request_id_time(42) is None

    def test_each_problem_is_named_and_the_rest_of_the_batch_is_kept(self, guard):
        """Bulk feedback: wrong type, unknown row, bad id, expired id, conflict each get a 4xx; good items stay."""
        rid = _serve(guard)(np.zeros((2, 3)))["request_id"]
        expired = "0000000000000001" + rid[16:]
        res = guard.record_feedback_many([
            {"request_id": rid, "label": 1, "row": 0},
            {"request_id": rid, "label": "yes", "row": 1},
            {"request_id": rid, "label": 0.5, "row": 1},
            {"request_id": rid, "label": 1, "row": 7},
            {"request_id": "nope", "label": 1},
            {"request_id": expired, "label": 1},
            {"request_id": rid, "label": 0, "row": 0},
            {"label": 1},
        ])
        codes = [r.http_status for r in res]
        assert codes == [200, 422, 422, 422, 400, 410, 409, 400]
        assert all(rid in r.message for r in res[:4]) and "str" in res[1].message and "row 7" in res[3].message
        assert "expired" in res[5].message and "contradicts" in res[6].message
        assert guard.record_feedback(rid, 1).status == "unchanged"

    def test_feedback_needs_the_capability(self):
        g = Guard(name="m", operational=False)
        with pytest.raises(ConfigError, match="performance"):
            g.record_feedback(new_request_id(), 1)

    def test_endpoint_refuses_without_the_token(self, guard):
        """No token, a wrong one, or none configured on the server: 401; the right one records."""
        rid = _serve(guard)(np.zeros((1, 3)))["request_id"]
        body = {"request_id": rid, "label": 1}
        assert feedback_response(guard, body, {}, token="s3cret")[0] == 401
        assert feedback_response(guard, body, {"authorization": "Bearer wrong"}, token="s3cret")[0] == 401
        assert feedback_response(guard, body, {"authorization": "Bearer s3cret"}, token="")[0] == 401
        code, out = feedback_response(guard, body, {"authorization": "Bearer s3cret"}, token="s3cret")
        assert code == 200 and out["status"] == "recorded"
        code, out = feedback_response(guard, {"items": [body, {"request_id": rid, "label": 0}]},
                                      {"x-feedback-token": "s3cret"}, token="s3cret")
        assert code == 409 and out["kept"] == 1 and out["rejected"] == 1


class TestExpectations:
    def _run(self, tmp_path, accuracy, n, seed=0, **kw):
        g = Guard(name="m", operational=False, expectations={"accuracy": 0.95}, expectation_min_labels=30,
                  performance_store=str(tmp_path / f"o{seed}.sqlite"), performance_interval_s=60, **kw)
        predict = _serve(g)
        rng = np.random.default_rng(seed)
        items = []
        for _ in range(n):
            rid = predict(np.zeros((1, 3)))["request_id"]
            items.append({"request_id": rid, "label": int(rng.random() < accuracy)})
        assert all(r.ok for r in g.record_feedback_many(items))
        g.component("performance").evaluate()
        return g

    def test_degraded_once_the_upper_bound_falls_below(self, tmp_path):
        """Accuracy 0.80 against 0.95: performance.accuracy is degraded with the figures in the reason."""
        g = self._run(tmp_path, 0.80, 400)
        chk = g.health()["checks"]["performance.accuracy"]
        assert chk["status"] == "degraded" and "upper bound" in chk["reason"] and "0.95" in chk["reason"]
        assert chk["affects_readiness"] is False

    def test_ok_when_the_model_keeps_its_promise(self, tmp_path):
        """Accuracy 0.99 against 0.95: ok, with the realised figure and the bound."""
        g = self._run(tmp_path, 0.99, 300, seed=1)
        chk = g.health()["checks"]["performance.accuracy"]
        assert chk["status"] == "ok" and "upper bound" in chk["reason"]

    def test_outcome_dependent_coverage_is_said(self, tmp_path):
        """Declared outcome-dependent labels: the reason says the bound covers the labelled part only."""
        g = self._run(tmp_path, 0.80, 200, seed=2, labels_missing_at_random=False)
        assert "labelled part only" in g.health()["checks"]["performance.accuracy"]["reason"]

    def test_config_names_bad_expectations(self):
        with pytest.raises(ConfigError, match="expectations"):
            GuardConfig(name="m", expectations={"precision": 0.9})
        with pytest.raises(ConfigError, match="expectation_error_scale"):
            GuardConfig(name="m", expectations={"mae": 2.0})

    def test_label_free_estimate_and_concept_shift_hint(self, tmp_path):
        """With reference scores the estimate is reported; labels that disagree with it raise the concept-shift hint."""
        rng = np.random.default_rng(7)
        p_ref = rng.uniform(0.5, 1.0, 5000)
        y_ref = (rng.random(5000) < p_ref).astype(int)
        g = Guard(name="m", operational=False, expectations={"accuracy": 0.6}, expectation_min_labels=30,
                  performance_store=str(tmp_path / "o.sqlite"), performance_interval_s=60,
                  performance_reference=lambda: (p_ref, y_ref))

        @g
        def predict(x):
            return {"probability": [0.95] * len(x)}

        items = [{"request_id": predict(np.zeros((1, 3)))["request_id"], "label": int(rng.random() < 0.6)}
                 for _ in range(300)]
        g.record_feedback_many(items)
        g.component("performance").evaluate()
        chk = g.health()["checks"]["performance.estimate"]
        assert "CBPE" in chk["reason"] and "ATC" in chk["reason"]
        assert chk["status"] == "degraded" and "concept shift" in chk["reason"]
        g.stop()


class TestSpans:
    def test_span_carries_the_request_id_and_the_verdict_gets_its_own_span(self, tmp_path):
        """The guard span's guard.request_id (issue time first, trace id last) is the id the caller got; an evaluation that consumed
        labels emits a `guard <model> performance` span with the bound and the realised accuracy."""
        from guarded_serving.testing import in_memory_tracer_provider

        provider, exporter = in_memory_tracer_provider()
        g = Guard(name="m", operational=False, tracer_provider=provider, expectations={"accuracy": 0.9},
                  performance_store=str(tmp_path / "o.sqlite"), performance_interval_s=60)
        rid = _serve(g)(np.zeros((1, 3)))["request_id"]
        span = next(s for s in exporter.get_finished_spans() if s.name == "guard m")
        assert span.attributes["guard.request_id"] == rid
        assert rid.endswith(f"-{span.context.trace_id:032x}")
        g.record_feedback(rid, 1)
        g.component("performance").evaluate()
        perf = next(s for s in exporter.get_finished_spans() if s.name == "guard m performance")
        assert perf.attributes["guard.performance.accuracy"] == 1.0
        assert "guard.performance.accuracy.bound" in perf.attributes
        # the prediction's span was not touched after the fact
        assert "guard.performance.accuracy" not in span.attributes
        g.stop()


class TestManyHosts:
    def test_two_guards_share_outcomes_in_redis(self, redis_url, tmp_path):
        """A label sent to host B for a prediction still in host A's buffer is pending, joined when A flushes,
        and both hosts judge the same labels."""
        a, b = (Guard(name="m", operational=False, expectations={"accuracy": 0.9}, expectation_min_labels=5,
                      performance_store=redis_url, performance_interval_s=60) for _ in range(2))
        rids = [_serve(a)(np.zeros((1, 3)))["request_id"] for _ in range(10)]
        res = b.record_feedback_many([{"request_id": r, "label": 1} for r in rids])
        assert {r.status for r in res} == {"pending"} and all(r.http_status == 202 for r in res)
        a.component("performance").flush()
        for g in (a, b):
            g.component("performance").evaluate()
            assert g.stats()["performance"]["realised"]["0/*"]["labels"] == 10
        assert b.record_feedback(rids[0], 0).status == "conflict"
        for g in (a, b):
            g.stop()


class TestSegmentsAndRegression:
    def test_a_failing_segment_is_named(self, tmp_path):
        """performance_segment splits the labels: the segment that misses its promise is named, the pooled one shown."""
        g = Guard(name="m", operational=False, expectations={"accuracy": 0.95}, expectation_min_labels=30,
                  performance_store=str(tmp_path / "o.sqlite"), performance_interval_s=60,
                  performance_segment=lambda x, result: "new" if x[0][0] > 0 else "returning")
        predict = _serve(g)
        rng = np.random.default_rng(10)
        items = []
        for i in range(600):
            new = i % 2 == 0
            rid = predict(np.full((1, 3), 1.0 if new else -1.0))["request_id"]
            items.append({"request_id": rid, "label": int(rng.random() < (0.7 if new else 0.995))})
        g.record_feedback_many(items)
        g.component("performance").evaluate()
        chk = g.health()["checks"]["performance.accuracy"]
        assert chk["status"] == "degraded" and "segment 'new'" in chk["reason"]
        assert "segment 'returning'" not in chk["reason"]
        realised = g.stats()["performance"]["realised"]
        assert set(realised) == {"0/*", "0/new", "0/returning"} and realised["0/new"]["labels"] == 300
        g.stop()

    def test_regression_mae_expectation(self, tmp_path):
        """A regressor's MAE above its promise turns performance.mae degraded; RMSE and the label lag are reported."""
        g = Guard(name="m", operational=False, expectations={"mae": 1.0}, expectation_error_scale=10.0,
                  expectation_min_labels=30, performance_store=str(tmp_path / "o.sqlite"), performance_interval_s=60)

        @g
        def predict(x):
            return {"prediction": [2.5] * len(x)}

        rng = np.random.default_rng(11)
        items = [{"request_id": predict(np.zeros((1, 3)))["request_id"], "label": float(2.5 + rng.normal(0, 4))}
                 for _ in range(400)]
        res = g.record_feedback_many(items + [{"request_id": items[0]["request_id"], "label": "x"}])
        assert res[-1].http_status == 422
        g.component("performance").evaluate()
        chk = g.health()["checks"]["performance.mae"]
        assert chk["status"] == "degraded" and "lower bound" in chk["reason"]
        tally = g.stats()["performance"]["realised"]["0/*"]
        assert tally["mae"] > 2.5 and tally["rmse"] > tally["mae"] and "median_s" in tally["label_lag"]
        g.stop()
