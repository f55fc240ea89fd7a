"""A :class:`~guarded_serving.store.base.WindowStore` in Redis, shared by every host's workers.

Layout (``{...}`` is a Redis Cluster hash tag: one namespace lives in one slot, so
one script may touch all of its keys)::

    gs:{<namespace>}:c:<counter>        a counter; a stream's total is the counter "total:<stream>"
    gs:{<namespace>}:s:<stream>         sorted set of batches, scored by pos_end (the total after the batch);
                                        member = b"<pos_end>:<ncols>:" + float64 rows
    gs:{<namespace>}:b:<batch_id>       "applied" marker of an idempotent batch (expires after dedupe_ttl_s)

The namespace is ``<model>:<version>:<name>`` when the guard opens the store
(:meth:`guarded_serving.context.GuardContext.open_store`), so models and versions
never mix.

Writes: one Lua script per batch bumps the totals (``INCRBY``), adds the batch
members and trims retention (``ZREMRANGEBYSCORE``) atomically; :meth:`append_batches`
sends every pending batch in one pipeline, so a flush costs one round trip. A batch
with an id first sets its marker with ``SET NX``: a batch whose reply was lost (Redis
died after applying it) and that is retried is not appended twice.

Reads: :meth:`window` is one script (total and batches from one snapshot);
:meth:`rows_after` one ``ZRANGEBYSCORE``.

Connections: ``redis://[[user]:password@]host:port/db`` or ``rediss://`` for TLS,
with redis-py's URL query options (``?ssl_ca_certs=/ca.pem&ssl_certfile=...&ssl_keyfile=...
&ssl_cert_reqs=required``); ``password`` and the TLS options may also be given as
keywords. redis-py's connection pool is thread-safe and reopens after ``fork()``.
Timeouts are short (a slow or dead Redis costs the background worker, never a request)
and each call is retried once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from ..errors import ConfigError
from ._rows import as_rows, rows_after_batches, stack
from .base import Batch, WindowStore

__all__ = ["RedisWindowStore", "redact_url"]

# KEYS: marker, then (total, zset) per stream. ARGV: retention, dedupe ttl, then (n, ncols, blob) per stream.
# Returns {applied (1, or 0 when the marker existed), total per stream...}.
_APPEND = """
local retention = tonumber(ARGV[1])
local k = (#KEYS - 1) / 2
local out = {1}
if KEYS[1] ~= '' and ARGV[2] ~= '0' then
  if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
    out[1] = 0
    for i = 1, k do out[i + 1] = tonumber(redis.call('GET', KEYS[2 * i]) or '0') end
    return out
  end
end
for i = 1, k do
  local tkey, zkey = KEYS[2 * i], KEYS[2 * i + 1]
  local n = tonumber(ARGV[3 * i])
  local total
  if n > 0 then
    total = redis.call('INCRBY', tkey, n)
    redis.call('ZADD', zkey, total, string.format('%d', total) .. ':' .. ARGV[3 * i + 1] .. ':' .. ARGV[3 * i + 2])
    if total > retention then redis.call('ZREMRANGEBYSCORE', zkey, '-inf', total - retention) end
  else
    total = tonumber(redis.call('GET', tkey) or '0')
  end
  out[i + 1] = total
end
return out
"""

# KEYS: total, zset. ARGV: n. Returns {total, members of the batches ending after total - n}.
_WINDOW = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
return {total, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. string.format('%d', total - tonumber(ARGV[1])), '+inf')}
"""

_SHA = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in (("append", _APPEND), ("window", _WINDOW))}
_BODY = {"append": _APPEND, "window": _WINDOW}


def redact_url(url: str) -> str:
    """``url`` with its password (and query options) left out, for messages."""
    try:
        u = urlsplit(url)
        host = u.hostname or ""
        netloc = (f"{u.username}:***@" if u.username else ":***@" if u.password else "") + host
        if u.port:
            netloc += f":{u.port}"
        return f"{u.scheme}://{netloc}{u.path}"
    except ValueError:
        return "<unparsable URL>"


class RedisWindowStore(WindowStore):
    """Shared windows in Redis (one namespace per model, version and store name).

    Parameters
    ----------
    url : str, default="redis://127.0.0.1:6379/0"
        ``redis://`` or ``rediss://`` (TLS) URL; a password in it wins over ``password``.
    retention : int, default=200_000
        Rows kept per stream (older batches are removed on append).
    namespace : str, default="default"
        Prefix shared by this store's keys (``gs:{namespace}:...``).
    password, username : str, optional
        Credentials when the URL has none.
    ssl_ca_certs, ssl_certfile, ssl_keyfile : str, optional
        TLS files (``rediss://`` only): the CA to trust, and a client certificate and key.
    ssl_cert_reqs : {"required", "optional", "none"}, default="required"
    socket_timeout_s : float, default=5.0
        Longest wait for a reply; a slower Redis fails the background flush, which retries.
    connect_timeout_s : float, default=2.0
    dedupe_ttl_s : int, default=3600
        How long a batch id is remembered (0: no idempotency markers).
    client : redis.Redis, optional
        A ready client (then ``url`` only names it in messages).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, retention: int = 200_000,
                 namespace: str = "default", password: str | None = None, username: str | None = None,
                 ssl_ca_certs: str | None = None, ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
                 ssl_cert_reqs: str | None = None, socket_timeout_s: float = 5.0, connect_timeout_s: float = 2.0,
                 dedupe_ttl_s: int = 3600, client: Any = None) -> None:
        if not isinstance(retention, int) or isinstance(retention, bool) or retention < 1:
            raise ValueError(f"retention={retention!r} is invalid: expected an integer >= 1")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://")):
            raise ValueError(f"url={redact_url(str(url))!r} is invalid: expected redis://host:port/db "
                             "or rediss://host:port/db (TLS)")
        if not isinstance(namespace, str) or not namespace or any(c in namespace for c in "{}"):
            raise ValueError(f"namespace={namespace!r} is invalid: expected a non-empty string without braces")
        if not isinstance(dedupe_ttl_s, int) or dedupe_ttl_s < 0:
            raise ValueError(f"dedupe_ttl_s={dedupe_ttl_s!r} is invalid: expected an integer >= 0")
        if client is None and importlib.util.find_spec("redis") is None:
            raise ConfigError(f"the store {redact_url(url)} needs redis-py, which is not installed: "
                              "pip install 'guarded-serving[redis]'")
        self.url = url
        self.retention = retention
        self.namespace = namespace
        self.dedupe_ttl_s = dedupe_ttl_s
        self._options: dict[str, Any] = {"socket_timeout": float(socket_timeout_s),
                                         "socket_connect_timeout": float(connect_timeout_s)}
        for k, v in (("password", password), ("username", username), ("ssl_ca_certs", ssl_ca_certs),
                     ("ssl_certfile", ssl_certfile), ("ssl_keyfile", ssl_keyfile), ("ssl_cert_reqs", ssl_cert_reqs)):
            if v is not None:
                self._options[k] = v
        self._client_obj = client
        self._lock = threading.Lock()
        self._prefix = f"gs:{{{namespace}}}:"
        #: Round trips to Redis made by this object (pipelines count once).
        self.round_trips = 0

    # -- connection ----------------------------------------------------------------
    def _client(self) -> Any:
        if self._client_obj is None:
            with self._lock:
                if self._client_obj is None:
                    import redis
                    from redis.backoff import ExponentialBackoff
                    from redis.retry import Retry

                    opts = dict(self._options)
                    if not self.url.startswith("rediss://"):
                        for k in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"):
                            if opts.pop(k, None) is not None:
                                raise ValueError(f"{k} is set but the URL {redact_url(self.url)} is not rediss:// "
                                                 "(TLS)")
                    self._client_obj = redis.Redis.from_url(
                        self.url, retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1), **opts)
        return self._client_obj

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}:{name}"

    def _script(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        from redis.exceptions import NoScriptError

        c = self._client()
        self.round_trips += 1
        try:
            return c.evalsha(_SHA[name], len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis forgot its scripts
            self.round_trips += 1
            return c.eval(_BODY[name], len(keys), *keys, *args)

    # -- WindowStore -----------------------------------------------------------------
    def append(self, stream: str, rows: np.ndarray) -> int:
        return self.append_batches([(None, {stream: rows})])[0][stream]

    def append_batches(self, batches: Sequence[Batch]) -> list[dict[str, int]]:
        """Every batch in one pipeline (one round trip); each batch is one atomic script."""
        from redis.exceptions import NoScriptError

        calls = []
        for batch_id, streams in batches:
            keys = [self._key("b", batch_id) if batch_id else ""]
            args: list[Any] = [self.retention, self.dedupe_ttl_s if batch_id else 0]
            for stream, rows in streams.items():
                a = as_rows(rows)
                keys += [self._key("c", "total:" + stream), self._key("s", stream)]
                args += [a.shape[0], a.shape[1], a.tobytes()]
            calls.append((list(streams), keys, args))
        if not calls:
            return []
        c = self._client()

        def send(sha: bool) -> list[Any]:
            pipe = c.pipeline(transaction=False)
            for _, keys, args in calls:
                if sha:
                    pipe.evalsha(_SHA["append"], len(keys), *keys, *args)
                else:
                    pipe.eval(_APPEND, len(keys), *keys, *args)
            self.round_trips += 1
            return pipe.execute()  # type: ignore[no-any-return]

        try:
            replies = send(True)
        except NoScriptError:  # nothing was applied: every call in the pipeline failed the same way
            replies = send(False)
        return [{s: int(t) for s, t in zip(names, reply[1:])} for (names, _, _), reply in zip(calls, replies)]

    def total(self, stream: str) -> int:
        return self.counter("total:" + stream)

    def counter(self, key: str) -> int:
        self.round_trips += 1
        got = self._client().get(self._key("c", key))
        return int(got) if got is not None else 0

    def window(self, stream: str, n: int) -> np.ndarray:
        if n <= 0:
            return np.empty((0, 0))
        _, members = self._script("window", [self._key("c", "total:" + stream), self._key("s", stream)], [int(n)])
        return stack([_parse(m) for m in members], keep_last=n)

    def rows_after(self, stream: str, position: int, limit: int) -> tuple[np.ndarray, int]:
        self.round_trips += 1
        members = self._client().zrangebyscore(self._key("s", stream), f"({int(position)}", "+inf")
        return rows_after_batches([_parse(m) for m in members], int(position), limit)

    # -- administration ----------------------------------------------------------------
    def describe(self) -> str:
        return f"Redis {redact_url(self.url)} (keys gs:{{{self.namespace}}}:*)"

    def verify(self) -> None:
        """Raise :class:`ConfigError` when Redis refuses the credentials or its TLS certificate is
        not trusted; anything else (a Redis down or slow) propagates as redis-py's error, which the
        caller treats as transient."""
        import redis.exceptions as E

        try:
            self.round_trips += 1
            self._client().ping()
        except E.AuthenticationError as exc:
            raise ConfigError(f"{self.describe()} refused the credentials ({exc}): set the password in the URL "
                              "(redis://:PASSWORD@host:port/db) or in GUARDED_STORE_PASSWORD") from None
        except E.ConnectionError as exc:
            if "certificate verify failed" in str(exc).lower():
                raise ConfigError(f"{self.describe()}: the server's TLS certificate was not trusted ({exc}): "
                                  "give the CA with ?ssl_ca_certs=/path/ca.pem in the URL (or ssl_ca_certs=)") from None
            raise
        except E.ResponseError as exc:
            if "NOPERM" in str(exc) or "NOAUTH" in str(exc):
                raise ConfigError(f"{self.describe()} refused the user ({exc})") from None
            raise

    def close(self) -> None:
        with self._lock:
            c, self._client_obj = self._client_obj, None
        if c is not None:
            try:
                c.close()
            except Exception:  # pragma: no cover - closing a broken pool
                pass


def _parse(member: bytes) -> tuple[int, int, int, bytes]:
    pos_end, ncols, data = member.split(b":", 2)
    nc = int(ncols)
    return int(pos_end), len(data) // (8 * nc) if nc else 0, nc, data
