"""RedisWindowStore: shared windows in a real redis-server on 127.0.0.1."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from guarded_serving import ConfigError
from guarded_serving.store import SQLiteWindowStore, WindowStore, open_store
from guarded_serving.store.redis import RedisWindowStore, redact_url
from tests.redis_server import RedisServer

pytest.importorskip("redis", reason="the redis extra is not installed (pip install guarded-serving[redis])")


def _writer(url: str, wid: int, batches: int) -> None:
    store = RedisWindowStore(url, retention=10**7, namespace="conc")
    for b in range(batches):
        n = 1 + (b % 3)
        rows = np.column_stack([np.full(n, wid), np.arange(n) + b * 10]).astype(float)
        store.append_batches([(f"w{wid}-{b}", {"s": rows, "t": rows[:, :1]})])
    store.close()


class TestBasics:
    def test_is_a_window_store(self, redis_url):
        """The Redis store implements the abstract interface."""
        assert isinstance(RedisWindowStore(redis_url), WindowStore)

    def test_window_returns_latest_rows_in_order(self, redis_url):
        """window(n) gives the last n rows, oldest first, across batch boundaries."""
        s = RedisWindowStore(redis_url)
        for i in range(5):
            s.append("s", np.arange(i * 4, i * 4 + 4, dtype=float).reshape(2, 2))
        assert s.total("s") == 10
        w = s.window("s", 3)
        assert w[:, 0].tolist() == [14.0, 16.0, 18.0]
        assert s.window("other", 5).shape == (0, 0)

    def test_rows_after_consumes_incrementally(self, redis_url):
        """rows_after returns exactly the rows after a position, limited, and the new position."""
        s = RedisWindowStore(redis_url)
        s.append("s", np.arange(5, dtype=float)[:, None])
        s.append("s", np.arange(5, 10, dtype=float)[:, None])
        rows, pos = s.rows_after("s", 2, limit=4)
        assert rows[:, 0].tolist() == [2.0, 3.0, 4.0, 5.0] and pos == 6
        rows, pos = s.rows_after("s", pos, limit=100)
        assert rows[:, 0].tolist() == [6.0, 7.0, 8.0, 9.0] and pos == 10

    def test_retention_is_bounded(self, redis_url, redis_server):
        """Old batches beyond the retention are removed from Redis; the total still counts them."""
        s = RedisWindowStore(redis_url, retention=10, namespace="ret")
        for i in range(50):
            s.append("s", np.full((2, 1), float(i)))
        assert s.total("s") == 100
        assert len(s.window("s", 1000)) <= 12
        assert redis_server.client().zcard("gs:{ret}:s:s") <= 6

    def test_counters(self, redis_url):
        """counter reads the shared integer counters: 0 if never set; a stream's total is one."""
        s = RedisWindowStore(redis_url)
        assert s.counter("k") == 0
        s.append("s", np.ones((3, 1)))
        s.append("s", np.ones((1, 1)))
        assert s.counter("total:s") == s.total("s") == 4

    def test_rejects_non_2d_rows(self, redis_url):
        """Appending a 1-D array is an error naming the shape."""
        with pytest.raises(ValueError, match="2-D"):
            RedisWindowStore(redis_url).append("s", np.ones(3))

    def test_same_rows_as_sqlite(self, redis_url, tmp_path):
        """The same appends give the same windows, totals and rows_after in Redis and SQLite."""
        rng = np.random.default_rng(0)
        stores = [RedisWindowStore(redis_url, retention=40), SQLiteWindowStore(tmp_path / "w.sqlite", retention=40)]
        for _ in range(30):
            rows = rng.normal(size=(int(rng.integers(1, 6)), 3))
            for st in stores:
                st.append("s", rows)
        r, q = stores
        assert r.total("s") == q.total("s")
        np.testing.assert_array_equal(r.window("s", 25), q.window("s", 25))
        for pos in (0, 7, r.total("s") - 30, r.total("s") - 3):
            a, pa = r.rows_after("s", pos, 11)
            b, pb = q.rows_after("s", pos, 11)
            np.testing.assert_array_equal(a, b)
            assert pa == pb


class TestBatches:
    def test_one_round_trip_for_many_batches(self, redis_url):
        """append_batches sends every batch and stream in one pipeline: one round trip."""
        s = RedisWindowStore(redis_url)
        s.counter("warm")  # connect first
        before = s.round_trips
        out = s.append_batches([(f"b{i}", {"x": np.ones((2, 3)), "y": np.ones((2, 1))}) for i in range(5)])
        assert s.round_trips - before == 1
        assert [o["x"] for o in out] == [2, 4, 6, 8, 10] and out[-1]["y"] == 10

    def test_a_retried_batch_is_applied_once(self, redis_url):
        """A batch id makes the append idempotent: the retry of an applied batch adds nothing."""
        s = RedisWindowStore(redis_url)
        first = s.append_batches([("same-id", {"x": np.ones((3, 1))})])
        again = s.append_batches([("same-id", {"x": np.ones((3, 1))})])
        assert first == again == [{"x": 3}]
        assert s.total("x") == 3

    def test_scripts_reload_after_a_flush_of_the_script_cache(self, redis_url, redis_server):
        """A Redis that forgot its scripts (restart, SCRIPT FLUSH) is answered by sending them again."""
        s = RedisWindowStore(redis_url)
        s.append("x", np.ones((1, 1)))
        redis_server.client().script_flush()
        s.append("x", np.ones((1, 1)))
        assert s.window("x", 10).shape == (2, 1)


class TestNamespaces:
    def test_models_and_versions_do_not_mix(self, redis_url):
        """Two namespaces (model:version:name) keep separate streams in one Redis."""
        a = open_store(redis_url, retention=100, namespace="m:1:drift")
        b = open_store(redis_url, retention=100, namespace="m:2:drift")
        a.append("inputs", np.ones((4, 2)))
        b.append("inputs", np.zeros((1, 2)))
        assert a.total("inputs") == 4 and b.total("inputs") == 1

    def test_context_namespaces_by_model_and_version(self, redis_url, monkeypatch):
        """A guard's context opens $GUARDED_STORE_URL under <model>:<version>:<name>."""
        from guarded_serving import Guard

        monkeypatch.setenv("GUARDED_STORE_URL", redis_url)
        g = Guard(name="m", version="7")
        st = g.context.open_store(None, name="drift", retention=10)
        assert isinstance(st, RedisWindowStore) and st.namespace == "m:7:drift"


class TestConfiguration:
    def test_open_store_dispatches_on_the_url(self, tmp_path):
        """redis:// and rediss:// give a Redis store, anything else a SQLite file."""
        assert isinstance(open_store("redis://127.0.0.1:1/0", retention=5), RedisWindowStore)
        assert isinstance(open_store("rediss://127.0.0.1:1/0", retention=5), RedisWindowStore)
        assert isinstance(open_store(str(tmp_path / "x.sqlite"), retention=5), SQLiteWindowStore)

    def test_password_from_the_environment(self, monkeypatch):
        """$GUARDED_STORE_PASSWORD is the password of a URL without one."""
        monkeypatch.setenv("GUARDED_STORE_PASSWORD", "s3cret")
        st = open_store("redis://127.0.0.1:1/0", retention=5)
        assert st._options["password"] == "s3cret"  # type: ignore[attr-defined]

    def test_messages_never_show_the_password(self):
        """describe() and errors redact the password."""
        st = RedisWindowStore("redis://:hunter2@127.0.0.1:6390/2?ssl_ca_certs=/x")
        assert "hunter2" not in st.describe() and "127.0.0.1:6390/2" in st.describe()
        assert redact_url("rediss://user:pw@h:1/0") == "rediss://user:***@h:1/0"

    def test_tls_options_need_rediss(self):
        """TLS files with a plain redis:// URL are an error, not silently ignored."""
        st = RedisWindowStore("redis://127.0.0.1:1/0", ssl_ca_certs="/ca.pem")
        with pytest.raises(ValueError, match="not rediss"):
            st.counter("x")

    def test_missing_redis_py_is_a_config_error(self, monkeypatch):
        """Without redis-py installed, a Redis URL is a ConfigError saying what to install."""
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a))
        with pytest.raises(ConfigError, match=r"guarded-serving\[redis\]"):
            open_store("redis://127.0.0.1:1/0", retention=5)

    def test_rejects_bad_urls(self):
        """A URL that is not redis:// or rediss:// is a clear error."""
        with pytest.raises(ValueError, match="redis://host:port/db"):
            RedisWindowStore("http://127.0.0.1:1/")

    def test_wrong_password_is_a_config_error(self):
        """verify() turns a refused password into a ConfigError naming where to set it."""
        with RedisServer(password="right") as server:
            RedisWindowStore(server.url_with("right")).verify()
            for url in (server.url_with("wrong"), server.url_with(None)):
                with pytest.raises(ConfigError, match="refused the credentials.*GUARDED_STORE_PASSWORD") as e:
                    RedisWindowStore(url).verify()
                assert "wrong" not in str(e.value)

    def test_tls(self):
        """rediss:// with the CA to trust (URL option or keyword) talks TLS to a TLS-only Redis;
        without the CA, verify() is a ConfigError saying the certificate was not trusted."""
        import redis.exceptions

        with RedisServer(tls=True, password="pw") as server:
            ca = server.tls_files["ca"]
            for st in (RedisWindowStore(f"{server.url}?ssl_ca_certs={ca}"),
                       RedisWindowStore(server.url, ssl_ca_certs=str(ca), ssl_cert_reqs="required")):
                st.verify()
                st.append("s", np.ones((2, 3)))
                assert st.window("s", 10).shape[0] >= 2
            with pytest.raises(ConfigError, match="TLS certificate was not trusted.*ssl_ca_certs"):
                RedisWindowStore(server.url, connect_timeout_s=2).verify()
            with pytest.raises(redis.exceptions.ConnectionError):  # plain text to a TLS port
                RedisWindowStore(server.url.replace("rediss://", "redis://"), connect_timeout_s=2,
                                 socket_timeout_s=2).verify()

    def test_a_down_redis_passes_verify(self):
        """verify() does not fail for a Redis that is merely down (the worker retries)."""
        from guarded_serving.testing import free_port

        st = RedisWindowStore(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.5)
        with pytest.raises(Exception) as e:
            st.verify()
        assert not isinstance(e.value, ConfigError)


class TestConcurrency:
    def test_several_processes_lose_no_rows(self, redis_url):
        """Four processes appending at once: every row stored exactly once, totals exact, streams in step."""
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_writer, args=(redis_url, w, 60)) for w in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        s = RedisWindowStore(redis_url, namespace="conc")
        expected = 4 * sum(1 + (b % 3) for b in range(60))
        assert s.total("s") == s.total("t") == expected
        rows = s.window("s", 10**6)
        assert len(rows) == expected
        assert len({(a, b) for a, b in rows.tolist()}) == expected


class TestReport:
    def test_report_reads_the_window_from_a_redis_url(self, redis_url, tmp_path):
        """`guarded-serving report --store redis://...` draws the current rows from the model's and
        version's keys (the edge-rate plot falls back to the samples: Redis keeps no times)."""
        pytest.importorskip("matplotlib", reason="the report extra is not installed")
        import json

        from guarded_serving.cli import main as cli_main
        from tests.test_report import NAMES, reference, sample

        rng = np.random.default_rng(0)
        st = open_store(redis_url, retention=10_000, namespace="m:1:drift")
        x = rng.normal(size=(200, 3))
        x[:, 0] += 2.0
        st.append("m:inputs", x)
        rec, ref, out = tmp_path / "s.jsonl", tmp_path / "ref.npz", tmp_path / "r.html"
        rec.write_text("".join(json.dumps(sample(1_800_000_000 + 5 * i, 10 * i, drifted=i > 5)) + "\n"
                               for i in range(10)))
        np.savez(ref, reference=reference(), feature_names=np.array(NAMES))
        assert cli_main(["report", "--samples", str(rec), "--store", redis_url, "--reference", str(ref),
                         "-o", str(out), "--quiet"]) == 0
        doc = out.read_text()
        assert "200 current rows from the store" in doc
