"""An :class:`~guarded_serving.store.outcomes.OutcomeStore` in Redis, shared by every host's workers.

Layout, under ``gs:{<namespace>}:`` (one hash slot; the namespace is ``<model>:outcomes``)::

    p:<request_id>:<row>   hash: ts, ver, seg, kind, pred ("" when no answer), view (float64 bytes)
    l:<request_id>:<row>   hash: label, ts, src (the source tag, when given), seq (absent while the label
                           waits for its prediction)
    n:<request_id>         rows stored for the request (to name a row it never had)
    pts                    sorted set of "<request_id>:<row>" by prediction time (retention)
    v:<version>            the same per model version (the latest predictions of a version)
    pend                   sorted set of pending labels by arrival time
    out, outt              joined outcomes (a JSON array) by sequence number, and by prediction time
    cov                    counters "<ver>\\x1f<seg>\\x1f<class>\\x1f{n,l}": predictions and labelled ones
    seq, meta              the join sequence; pending_dropped

Every write is one Lua script (atomic); a flush of predictions is one script call and a batch of
labels two: one reads the predictions' kinds and row counts, the labels are validated in Python,
and one records them, checking each label slot again atomically (a label that raced in first
still wins). Retention runs in :meth:`expire` (5,000
predictions per script call). Labels are acknowledged once Redis applied them: their durability is
Redis's (``appendonly yes`` with ``appendfsync always`` or ``everysec`` to survive its restart).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Sequence

from .outcomes import LabelOutcome, OutcomeStore, PredictionRecord
from .redis import RedisWindowStore

__all__ = ["RedisOutcomeStore"]

_JOIN = """
local function join(P, rid, row, ver, seg, kind, pred, pts)
  local key = rid .. ':' .. row
  local lk = P .. 'l:' .. key
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('HSET', lk, 'seq', seq)
  local label = tonumber(redis.call('HGET', lk, 'label'))
  local lts = tonumber(redis.call('HGET', lk, 'ts'))
  local src = redis.call('HGET', lk, 'src') or ''
  local p = cjson.null
  if pred ~= '' then p = tonumber(pred) end
  local m = cjson.encode({seq, ver, seg, kind, p, label, tonumber(pts), lts, src, rid, tonumber(row)})
  redis.call('ZADD', P .. 'out', seq, m)
  redis.call('ZADD', P .. 'outt', pts, m)
  local cls = ''
  if kind == 'classification' then cls = pred end
  redis.call('HINCRBY', P .. 'cov', ver .. '\\31' .. seg .. '\\31' .. cls .. '\\31l', 1)
  redis.call('ZREM', P .. 'pend', key)
end
"""

# ARGV: prefix, then 9 per record: rid, row, ts, ver, seg, kind, pred, view, inputs. Returns labels joined.
_ADD_PREDICTIONS = _JOIN + """
local P = ARGV[1]
local joined = 0
for i = 2, #ARGV, 9 do
  local rid, row, ts, ver, seg, kind, pred, view, inputs =
    ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6], ARGV[i+7], ARGV[i+8]
  local key = rid .. ':' .. row
  local pk = P .. 'p:' .. key
  if redis.call('EXISTS', pk) == 0 then
    redis.call('HSET', pk, 'ts', ts, 'ver', ver, 'seg', seg, 'kind', kind, 'pred', pred)
    if view ~= '' then redis.call('HSET', pk, 'view', view) end
    if inputs ~= '' then redis.call('HSET', pk, 'inputs', inputs) end
    redis.call('ZADD', P .. 'pts', ts, key)
    redis.call('ZADD', P .. 'v:' .. ver, ts, key)
    local cls = ''
    if kind == 'classification' then cls = pred end
    redis.call('HINCRBY', P .. 'cov', ver .. '\\31' .. seg .. '\\31' .. cls .. '\\31n', 1)
    local nk = P .. 'n:' .. rid
    if tonumber(redis.call('GET', nk) or '0') < tonumber(row) + 1 then redis.call('SET', nk, tonumber(row) + 1) end
    local lk = P .. 'l:' .. key
    if redis.call('EXISTS', lk) == 1 and redis.call('HEXISTS', lk, 'seq') == 0 then
      join(P, rid, row, ver, seg, kind, pred, ts)
      joined = joined + 1
    end
  end
end
return joined
"""

# ARGV: prefix, ts, then 5 per label: rid, row, label, pending_ok, source ('' untagged). Returns {status, existing
# label or ''} per label.
_ADD_LABELS = _JOIN + """
local P, ts = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 5 do
  local rid, row, label, pending_ok, src = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local key = rid .. ':' .. row
  local lk, pk = P .. 'l:' .. key, P .. 'p:' .. key
  local prior = redis.call('HGET', lk, 'label')
  if prior then
    if tonumber(prior) == tonumber(label) then table.insert(out, 'unchanged') else table.insert(out, 'conflict') end
    table.insert(out, prior)
  elseif redis.call('EXISTS', pk) == 0 then
    if pending_ok == '0' then
      table.insert(out, 'unknown')
    else
      redis.call('HSET', lk, 'label', label, 'ts', ts)
      if src ~= '' then redis.call('HSET', lk, 'src', src) end
      redis.call('ZADD', P .. 'pend', ts, key)
      table.insert(out, 'pending')
    end
    table.insert(out, '')
  else
    redis.call('HSET', lk, 'label', label, 'ts', ts)
    if src ~= '' then redis.call('HSET', lk, 'src', src) end
    local f = redis.call('HMGET', pk, 'ver', 'seg', 'kind', 'pred', 'ts')
    join(P, rid, row, f[1], f[2], f[3], f[4], f[5])
    table.insert(out, 'recorded')
    table.insert(out, '')
  end
end
return out
"""

# ARGV: prefix, then 2 per label: rid, row. Returns {kind or '', rows stored for the request} per label.
_KINDS = """
local P = ARGV[1]
local out = {}
for i = 2, #ARGV, 2 do
  table.insert(out, redis.call('HGET', P .. 'p:' .. ARGV[i] .. ':' .. ARGV[i+1], 'kind') or '')
  table.insert(out, redis.call('GET', P .. 'n:' .. ARGV[i]) or '0')
end
return out
"""

# ARGV: prefix, cutoff, pending cutoff, limit. Returns {predictions, labels, pending_dropped, more}.
_EXPIRE = """
local P, cut, pcut, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local keys = redis.call('ZRANGEBYSCORE', P .. 'pts', '-inf', '(' .. cut, 'LIMIT', 0, limit)
local n_lab = 0
for _, key in ipairs(keys) do
  local pk, lk = P .. 'p:' .. key, P .. 'l:' .. key
  local f = redis.call('HMGET', pk, 'ver', 'seg', 'kind', 'pred')
  if f[1] then
    local cls = ''
    if f[3] == 'classification' then cls = f[4] end
    local field = f[1] .. '\\31' .. f[2] .. '\\31' .. cls .. '\\31'
    redis.call('HINCRBY', P .. 'cov', field .. 'n', -1)
    if redis.call('HEXISTS', lk, 'seq') == 1 then
      redis.call('HINCRBY', P .. 'cov', field .. 'l', -1)
      n_lab = n_lab + 1
      redis.call('DEL', lk)
    end
    redis.call('ZREM', P .. 'v:' .. f[1], key)
  end
  redis.call('DEL', pk)
  redis.call('DEL', P .. 'n:' .. string.match(key, '^(.*):[^:]*$'))
  redis.call('ZREM', P .. 'pts', key)
end
local old = redis.call('ZRANGEBYSCORE', P .. 'outt', '-inf', '(' .. cut)
for _, m in ipairs(old) do redis.call('ZREM', P .. 'out', m) end
redis.call('ZREMRANGEBYSCORE', P .. 'outt', '-inf', '(' .. cut)
local pend = redis.call('ZRANGEBYSCORE', P .. 'pend', '-inf', '(' .. pcut)
for _, key in ipairs(pend) do redis.call('DEL', P .. 'l:' .. key) end
redis.call('ZREMRANGEBYSCORE', P .. 'pend', '-inf', '(' .. pcut)
if #pend > 0 then redis.call('HINCRBY', P .. 'meta', 'pending_dropped', #pend) end
local more = 0
if #keys == limit then more = 1 end
return {#keys, n_lab, #pend, more}
"""


class RedisOutcomeStore(OutcomeStore):
    """Predictions and labels in Redis (see the module docstring for the layout).

    Parameters
    ----------
    url : str
        ``redis://`` or ``rediss://`` URL (credentials and TLS as for
        :class:`~guarded_serving.store.redis.RedisWindowStore`).
    namespace : str, default="default:outcomes"
    retention_s, pending_s : float
        As for :class:`~guarded_serving.store.outcomes.SQLiteOutcomeStore`.
    **options
        Passed to :class:`RedisWindowStore` (``password``, ``ssl_*``, timeouts, ``client``).
    """

    def __init__(self, url: str, *, namespace: str = "default:outcomes", retention_s: float = 7 * 86400.0,
                 pending_s: float = 3600.0, **options: Any) -> None:
        if not retention_s > 0:
            raise ValueError(f"retention_s={retention_s!r} is invalid: expected seconds > 0")
        self._conn = RedisWindowStore(url, namespace=namespace, **options)  # its connection handling
        self.url = url
        self.namespace = namespace
        self.retention_s = float(retention_s)
        self.pending_s = float(pending_s)
        self._p = self._conn._prefix
        self._scripts: dict[str, Any] = {}

    def _script(self, body: str) -> Any:
        """A registered script (EVALSHA; loaded again when a restarted Redis forgot it)."""
        got = self._scripts.get(body)
        if got is None:
            got = self._scripts[body] = self._conn._client().register_script(body)
        return got

    def add_predictions(self, records: Sequence[PredictionRecord]) -> int:
        if not records:
            return 0
        args: list[Any] = [self._p]
        for r in records:
            args += [r.request_id, r.row, repr(float(r.ts)), r.version, r.segment, r.kind,
                     "" if r.predicted is None else repr(float(r.predicted)), r.view or b"", r.inputs or b""]
        return int(self._script(_ADD_PREDICTIONS)(args=args))

    def add_labels(self, items: Sequence[tuple],
                   validate: Callable[[str | None, float], str | None], now: float | None = None
                   ) -> list[LabelOutcome]:
        ts = time.time() if now is None else float(now)
        if not items:
            return []
        args: list[Any] = [self._p]
        for item in items:
            args += [item[0], item[1]]
        got = [g.decode() if isinstance(g, bytes) else str(g) for g in self._script(_KINDS)(args=args)]
        out: list[LabelOutcome | None] = []
        send: list[Any] = [self._p, repr(ts)]
        sent: list[int] = []
        kinds: list[str | None] = []
        for i, item in enumerate(items):
            rid, row, label, pending_ok = item[:4]
            source = item[4] if len(item) > 4 and item[4] is not None else ""
            kind = got[2 * i] or None
            rows = int(got[2 * i + 1])
            kinds.append(kind)
            if kind is None and rows:
                out.append(LabelOutcome("invalid", problem=f"row {row} does not exist: the request had {rows} row(s)"))
                continue
            problem = validate(kind, label)
            if problem is not None:
                out.append(LabelOutcome("invalid", problem=problem, kind=kind))
                continue
            out.append(None)
            sent.append(i)
            send += [rid, row, repr(float(label)), "1" if pending_ok else "0", source]
        replies = self._script(_ADD_LABELS)(args=send) if sent else []
        for j, i in enumerate(sent):
            status, prior = (r.decode() if isinstance(r, bytes) else str(r) for r in replies[2 * j:2 * j + 2])
            out[i] = LabelOutcome(status, existing=float(prior) if prior else None, kind=kinds[i])
        return [o for o in out if o is not None]

    def outcomes_after(self, seq: int, limit: int) -> list[tuple]:
        members = self._conn._client().zrangebyscore(f"{self._p}out", f"({int(seq)}", "+inf", start=0,
                                                     num=int(limit))
        out = []
        for m in members:
            got = json.loads(m)
            s, ver, seg, kind, pred, label, pts, lts = got[:8]
            src, rid, row = (got[8] or None, got[9], got[10]) if len(got) >= 11 else (None, None, None)
            out.append((int(s), ver, seg, kind, pred, label, pts, lts, None, src, rid, row))
        return out

    def coverage(self) -> list[tuple]:
        counts: dict[tuple[str, str, str], list[int]] = {}
        for field, value in self._conn._client().hgetall(f"{self._p}cov").items():
            ver, seg, cls, what = field.decode().split("\x1f")
            c = counts.setdefault((ver, seg, cls), [0, 0])
            c[0 if what == "n" else 1] += int(value)
        return [(ver, seg, float(cls) if cls else None, n, lab)
                for (ver, seg, cls), (n, lab) in counts.items() if n > 0]

    def latest(self, version: str, n: int) -> list[tuple]:
        c = self._conn._client()
        keys = [k.decode() for k in c.zrevrange(f"{self._p}v:{version}", 0, int(n) - 1)]
        pipe = c.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(f"{self._p}p:{k}", "ts", "seg", "pred", "view")
            pipe.hmget(f"{self._p}l:{k}", "label", "seq")
        got = pipe.execute() if keys else []
        out = []
        for i in range(len(keys)):
            ts, seg, pred, view = got[2 * i]
            label, seq = got[2 * i + 1]
            if ts is None:
                continue
            out.append((float(ts), seg.decode(), float(pred) if pred not in (b"", None) else None, view or None,
                        float(label) if label is not None and seq is not None else None))
        out.sort(key=lambda r: r[0])
        return out

    def expire(self, now: float | None = None) -> dict[str, int]:
        t = time.time() if now is None else float(now)
        total = {"predictions": 0, "labels": 0, "pending_dropped": 0}
        while True:
            n_pred, n_lab, n_pend, more = self._script(_EXPIRE)(
                args=[self._p, repr(t - self.retention_s), repr(t - self.pending_s), 5000])
            total["predictions"] += int(n_pred)
            total["labels"] += int(n_lab)
            total["pending_dropped"] += int(n_pend)
            if not int(more):
                return total

    def counts(self) -> dict[str, int]:
        pipe = self._conn._client().pipeline(transaction=False)
        pipe.zcard(f"{self._p}pts")
        pipe.zcard(f"{self._p}out")
        pipe.zcard(f"{self._p}pend")
        pipe.hget(f"{self._p}meta", "pending_dropped")
        p, lab, pend, dropped = pipe.execute()
        return {"predictions": int(p), "labels": int(lab), "pending": int(pend), "pending_dropped": int(dropped or 0)}

    def describe(self) -> str:
        return self._conn.describe()

    def verify(self) -> None:
        self._conn.verify()

    def close(self) -> None:
        self._conn.close()
