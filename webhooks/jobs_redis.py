"""The job table in Redis, for a scaled-out deployment (web and workers on several machines).

Same contract as ``webhooks.jobs.SqliteJobStore``; every state change is one Lua script, so two
workers can never claim the same job and a delivery id is accepted once. Keys live under
``revbot:<name>:``: ``job:<id>`` (hash), ``key:<job key>`` -> id, ``pr:<repo>#<n>`` (set of review
job ids), ``active`` (ids queued or running), ``all`` (sorted set of every id), ``counts`` (jobs per
state), ``delivery:<id>`` (expires), ``counters`` (metric totals).
"""
from __future__ import annotations

import json
import time
from typing import Any

from webhooks.jobs import QUEUED, STATES, Accepted, Job, NewJob, QueueError

DELIVERY_TTL_S = 14 * 24 * 3600

# Shared Lua helpers: move a job to a state, keeping the per-state counts and the active set right.
_LUA_HELPERS = """
local P = ARGV[1]
local function set_state(id, new)
  local jk = P .. 'job:' .. id
  local old = redis.call('HGET', jk, 'state')
  if old then redis.call('HINCRBY', P .. 'counts', old, -1) end
  redis.call('HINCRBY', P .. 'counts', new, 1)
  redis.call('HSET', jk, 'state', new)
  if new == 'queued' or new == 'running' then
    redis.call('SADD', P .. 'active', id)
  else
    redis.call('SREM', P .. 'active', id)
  end
end
"""

# ARGV: prefix, delivery_id, ttl, event, action, has_job, kind, key, repo, pr, head_sha, payload, now, supersede
_ACCEPT = _LUA_HELPERS + """
local delivery, now = ARGV[2], ARGV[13]
if delivery ~= '' then
  local ok = redis.call('SET', P .. 'delivery:' .. delivery, ARGV[4] .. '/' .. ARGV[5], 'NX', 'EX', tonumber(ARGV[3]))
  if not ok then return {1, 0, 0} end
end
if ARGV[6] ~= '1' then return {0, 0, 0} end
local kind, key, repo, pr = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local id = redis.call('GET', P .. 'key:' .. key)
local created = 0
if not id then
  id = tostring(redis.call('INCR', P .. 'seq'))
  redis.call('HSET', P .. 'job:' .. id, 'id', id, 'kind', kind, 'key', key, 'repo', repo, 'pr', pr,
             'head_sha', ARGV[11], 'payload', ARGV[12], 'attempts', 0, 'not_before', 0,
             'dispatched_at', now, 'created_at', now, 'updated_at', now)
  redis.call('SET', P .. 'key:' .. key, id)
  redis.call('ZADD', P .. 'all', tonumber(id), id)
  set_state(id, 'queued')
  created = 1
else
  local state = redis.call('HGET', P .. 'job:' .. id, 'state')
  if state == 'failed' or state == 'superseded' or state == 'skipped' then
    redis.call('HSET', P .. 'job:' .. id, 'payload', ARGV[12], 'attempts', 0, 'not_before', 0,
               'dispatched_at', now, 'updated_at', now)
    redis.call('HDEL', P .. 'job:' .. id, 'owner', 'lease_until', 'result')
    set_state(id, 'queued')
    created = 1
  end
end
local out = {0, tonumber(id), created}
if created == 1 and kind == 'review' and ARGV[14] == '1' then
  local prkey = P .. 'pr:' .. string.lower(repo) .. '#' .. pr
  for _, other in ipairs(redis.call('SMEMBERS', prkey)) do
    if other ~= id then
      local st = redis.call('HGET', P .. 'job:' .. other, 'state')
      if st == 'queued' or st == 'running' then
        set_state(other, 'superseded')
        redis.call('HSET', P .. 'job:' .. other, 'updated_at', now)
        table.insert(out, tonumber(other))
      end
    end
  end
  redis.call('SADD', prkey, id)
end
return out
"""

# ARGV: prefix, id, owner, lease_until, now
_CLAIM = _LUA_HELPERS + """
local jk = P .. 'job:' .. ARGV[2]
local now = tonumber(ARGV[5])
local h = redis.call('HMGET', jk, 'state', 'not_before', 'lease_until')
if not h[1] then return 0 end
if tonumber(h[2] or '0') > now then return 0 end
if not (h[1] == 'queued' or (h[1] == 'running' and tonumber(h[3] or '0') < now)) then return 0 end
set_state(ARGV[2], 'running')
redis.call('HSET', jk, 'owner', ARGV[3], 'lease_until', ARGV[4], 'updated_at', ARGV[5])
redis.call('HINCRBY', jk, 'attempts', 1)
return 1
"""

# ARGV: prefix, id, owner, field, value, now  -- set a field of a job this owner runs
_OWNED_SET = """
local P = ARGV[1]
local jk = P .. 'job:' .. ARGV[2]
local h = redis.call('HMGET', jk, 'state', 'owner')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
redis.call('HSET', jk, ARGV[4], ARGV[5], 'updated_at', ARGV[6])
return 1
"""

# ARGV: prefix, id, owner, state, result, now
_FINISH = _LUA_HELPERS + """
local jk = P .. 'job:' .. ARGV[2]
local h = redis.call('HMGET', jk, 'state', 'owner')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return 0 end
set_state(ARGV[2], ARGV[4])
redis.call('HSET', jk, 'result', ARGV[5], 'updated_at', ARGV[6])
redis.call('HDEL', jk, 'owner', 'lease_until')
return 1
"""

# ARGV: prefix, id, owner, not_before, result, max_attempts, now
_RELEASE = _LUA_HELPERS + """
local jk = P .. 'job:' .. ARGV[2]
local h = redis.call('HMGET', jk, 'state', 'owner', 'attempts')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then return '' end
local new = 'queued'
if tonumber(h[3] or '0') >= tonumber(ARGV[6]) then new = 'failed' end
set_state(ARGV[2], new)
redis.call('HSET', jk, 'not_before', ARGV[4], 'result', ARGV[5], 'updated_at', ARGV[7])
redis.call('HDEL', jk, 'owner', 'lease_until', 'dispatched_at')
return new
"""

# ARGV: prefix, now, redispatch_after, max_attempts
_REAP = _LUA_HELPERS + """
local now = tonumber(ARGV[2])
local stale_before = now - tonumber(ARGV[3])
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'active')) do
  local jk = P .. 'job:' .. id
  local h = redis.call('HMGET', jk, 'state', 'lease_until', 'attempts', 'not_before', 'dispatched_at')
  if h[1] == 'running' and tonumber(h[2] or '0') < now then
    redis.call('HDEL', jk, 'owner', 'lease_until', 'dispatched_at')
    redis.call('HSET', jk, 'updated_at', ARGV[2])
    if tonumber(h[3] or '0') >= tonumber(ARGV[4]) then
      set_state(id, 'failed')
      redis.call('HSET', jk, 'result', '{"error": "worker lost its lease (killed or stalled)"}')
    else
      set_state(id, 'queued')
      h[1], h[5] = 'queued', false
    end
  end
  if h[1] == 'queued' and tonumber(h[4] or '0') <= now and ((not h[5]) or tonumber(h[5]) < stale_before) then
    redis.call('HSET', jk, 'dispatched_at', ARGV[2])
    table.insert(out, tonumber(id))
  end
end
table.sort(out)
return out
"""


class RedisJobStore:
    """``webhooks.jobs.JobStore`` on Redis."""

    def __init__(self, url: str, name: str = "revbot", client: Any = None):
        import redis

        self.prefix = f"revbot:{name}:"
        self._url = url
        try:
            self.r = client or redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=10)
            self.r.ping()
        except redis.RedisError as exc:
            raise QueueError(f"Redis at {_safe(url)} unreachable: {exc}") from exc
        self._scripts = {name: self.r.register_script(src) for name, src in (
            ("accept", _ACCEPT), ("claim", _CLAIM), ("owned_set", _OWNED_SET), ("finish", _FINISH),
            ("release", _RELEASE), ("reap", _REAP))}

    def __repr__(self) -> str:
        return f"RedisJobStore({_safe(self._url)!r})"

    def _run(self, name: str, *args: Any) -> Any:
        import redis

        try:
            return self._scripts[name](args=[self.prefix, *args])
        except redis.RedisError as exc:
            raise QueueError(f"Redis job table ({_safe(self._url)}): {exc}") from exc

    def ping(self) -> None:
        import redis

        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise QueueError(f"Redis at {_safe(self._url)} unreachable: {exc}") from exc

    def close(self) -> None:
        try:
            self.r.close()
        except Exception:
            pass

    def accept(self, delivery_id, event, action, job: NewJob | None = None, supersede=True,
               on_created: Any = None) -> Accepted:
        """As SqliteJobStore.accept; ``on_created`` is not supported (the caller pushes)."""
        if on_created is not None:
            raise ValueError("RedisJobStore.accept takes no on_created hook; push the job id afterwards")
        res = self._run(
            "accept", delivery_id or "", DELIVERY_TTL_S, event, action or "", "1" if job else "0",
            job.kind if job else "", job.key if job else "", job.repo if job else "", job.pr if job else 0,
            (job.head_sha or "") if job else "", json.dumps(job.payload) if job else "{}", repr(time.time()),
            "1" if supersede else "0",
        )
        dup, job_id, created, *superseded = [int(x) for x in res]
        return Accepted(bool(dup), job_id or None, bool(created), superseded)

    def mark_dispatched(self, job_id: int) -> None:
        self.r.hset(self.prefix + f"job:{job_id}", "dispatched_at", repr(time.time()))

    def claim(self, job_id, owner, lease_s) -> Job | None:
        now = time.time()
        if int(self._run("claim", job_id, owner, repr(now + lease_s), repr(now))) != 1:
            return None
        return self.get(job_id)

    def heartbeat(self, job_id, owner, lease_s) -> bool:
        now = time.time()
        return int(self._run("owned_set", job_id, owner, "lease_until", repr(now + lease_s), repr(now))) == 1

    def save_plan(self, job_id, owner, plan) -> bool:
        return int(self._run("owned_set", job_id, owner, "plan", json.dumps(plan), repr(time.time()))) == 1

    def finish(self, job_id, owner, state, result=None) -> bool:
        return int(self._run("finish", job_id, owner, state, json.dumps(result), repr(time.time()))) == 1

    def release(self, job_id, owner, delay, error, max_attempts) -> str:
        now = time.time()
        out = self._run("release", job_id, owner, repr(now + delay), json.dumps({"error": error}), max_attempts, repr(now))
        return out.decode() if isinstance(out, bytes) else str(out or "")

    def reap(self, redispatch_after, max_attempts, on_dispatch: Any = None) -> list[int]:
        if on_dispatch is not None:
            raise ValueError("RedisJobStore.reap takes no on_dispatch hook; push the returned ids")
        return [int(x) for x in self._run("reap", repr(time.time()), redispatch_after, max_attempts)]

    def get(self, job_id) -> Job | None:
        raw = self.r.hgetall(self.prefix + f"job:{job_id}")
        return _job(raw) if raw else None

    def find(self, repo=None, pr=None, kind=None) -> list[Job]:
        out = []
        for raw_id in self.r.zrange(self.prefix + "all", 0, -1):
            job = self.get(int(raw_id))
            if job is None:
                continue
            if (repo is None or job.repo == repo) and (pr is None or job.pr == pr) and (kind is None or job.kind == kind):
                out.append(job)
        return out

    def counts(self) -> dict[str, int]:
        out = {state: 0 for state in STATES}
        for state, n in self.r.hgetall(self.prefix + "counts").items():
            out[state.decode()] = int(n)
        return out

    def delivery_count(self) -> int:
        return sum(1 for _ in self.r.scan_iter(self.prefix + "delivery:*", count=1000))

    def add_counters(self, items) -> None:
        pipe = self.r.pipeline(transaction=False)
        n = 0
        for name, labels, delta in items:
            if delta:
                pipe.hincrbyfloat(self.prefix + "counters", json.dumps([name, labels]), float(delta))
                n += 1
        if n:
            pipe.execute()

    def read_counters(self) -> dict[tuple[str, str], float]:
        out = {}
        for k, v in self.r.hgetall(self.prefix + "counters").items():
            name, labels = json.loads(k)
            out[(name, labels)] = float(v)
        return out

    def report_worker(self, owner: str, info: dict[str, Any]) -> None:
        self.r.hset(self.prefix + "workers", owner, json.dumps({**info, "seen": time.time()}))

    def workers(self, max_age: float) -> list[dict[str, Any]]:
        cutoff = time.time() - max_age
        out = []
        for owner, raw in sorted(self.r.hgetall(self.prefix + "workers").items()):
            info = json.loads(raw)
            if info.get("seen", 0) >= cutoff:
                out.append({"owner": owner.decode(), **info})
            elif info.get("seen", 0) < cutoff - 3600:
                self.r.hdel(self.prefix + "workers", owner)
        return out

    def flush_all(self) -> None:
        """Delete every key of this store (tests)."""
        keys = list(self.r.scan_iter(self.prefix + "*", count=1000))
        if keys:
            self.r.delete(*keys)


def _safe(url: str) -> str:
    from urllib.parse import urlparse

    p = urlparse(url)
    return f"{p.scheme}://{p.hostname}:{p.port or 6379}{p.path}"


def _job(raw: dict[bytes, bytes]) -> Job:
    d = {k.decode(): v.decode() for k, v in raw.items()}

    def num(name: str, default: float | None = None) -> float | None:
        return float(d[name]) if d.get(name) not in (None, "") else default

    return Job(
        id=int(d["id"]), kind=d["kind"], key=d["key"], repo=d["repo"], pr=int(d["pr"]),
        head_sha=d.get("head_sha") or None, state=d.get("state", QUEUED), payload=json.loads(d.get("payload") or "{}"),
        attempts=int(d.get("attempts") or 0), owner=d.get("owner") or None, lease_until=num("lease_until"),
        not_before=num("not_before", 0.0) or 0.0, plan=json.loads(d["plan"]) if d.get("plan") else None,
        result=json.loads(d["result"]) if d.get("result") not in (None, "", "null") else None,
        created_at=num("created_at", 0.0) or 0.0, updated_at=num("updated_at", 0.0) or 0.0,
    )

