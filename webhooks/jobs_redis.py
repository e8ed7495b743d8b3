"""The job table on Redis, for a scaled-out deployment (web and workers on several machines).

Same contract as ``webhooks.jobs.SqliteJobStore``. The delivery guarantees are Redis Streams':

* a new job is one Lua script that writes the job hash and ``XADD``s its id to the stream, so a
  job is never without its message;
* workers read the stream through one consumer group (``XREADGROUP``): a message stays in the
  reader's pending list until the job is finished or given back (``XACK`` + ``XDEL``), and the
  heartbeat that renews the job's lease also resets the message's idle time (``XCLAIM`` to itself);
* a message idle for longer than a lease belongs to a dead worker (killed mid-job, or between
  reading the message and claiming its job): the next worker that looks takes it over with
  ``XAUTOCLAIM``;
* a job given back for a retry waits in a sorted set (``delayed``) until it is due, then gets a new
  message (``maintain``).

Every state change is one Lua script, so two workers can never run the same job and a delivery id
is accepted once. Keys live under ``revbot:<name>:``: ``job:<id>`` (hash), ``key:<job key>`` -> id,
``pr:<repo>#<n>`` (set of review job ids), ``all`` (sorted set of every id), ``counts`` (jobs per
state), ``active`` (ids queued or running), ``finished`` (final jobs by time, for pruning),
``delayed``, ``stream``, ``delivery:<id>`` (expires after the retention period), ``workers``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from webhooks.jobs import LOST_LEASE, QUEUED, STATES, Accepted, Clock, Job, NewJob, QueueError

log = logging.getLogger(__name__)

GROUP = "workers"
DEFAULT_RETENTION_S = 7 * 24 * 3600

# Shared Lua helpers. ARGV[1] is the key prefix and ARGV[2] the time in every script.
_LUA_HELPERS = (
    """
local P, NOW = ARGV[1], ARGV[2]
local STREAM = P .. 'stream'
local function set_state(id, new)
  local jk = P .. 'job:' .. id
  local old = redis.call('HGET', jk, 'state')
  if old then redis.call('HINCRBY', P .. 'counts', old, -1) end
  redis.call('HINCRBY', P .. 'counts', new, 1)
  redis.call('HSET', jk, 'state', new, 'updated_at', NOW)
  if new == 'queued' or new == 'running' then
    redis.call('SADD', P .. 'active', id)
    redis.call('ZREM', P .. 'finished', id)
  else
    redis.call('SREM', P .. 'active', id)
    redis.call('ZADD', P .. 'finished', tonumber(NOW), id)
  end
end
local function drop_message(msg)
  if msg and msg ~= '' then
    redis.call('XACK', STREAM, '"""
    + GROUP
    + """', msg)
    redis.call('XDEL', STREAM, msg)
  end
end
local function enqueue(id)
  redis.call('ZREM', P .. 'delayed', id)
  redis.call('XADD', STREAM, '*', 'job', id)
end
"""
)

# ARGV: prefix, now, delivery_id, ttl, event, action, has_job, kind, key, repo, pr, head_sha, payload, supersede
_ACCEPT = (
    _LUA_HELPERS
    + """
local delivery = ARGV[3]
if delivery ~= '' then
  local ok = redis.call('SET', P .. 'delivery:' .. delivery, ARGV[5] .. '/' .. ARGV[6], 'NX', 'EX', tonumber(ARGV[4]))
  if not ok then return {1, 0, 0} end
end
if ARGV[7] ~= '1' then return {0, 0, 0} end
local kind, key, repo, pr = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local id = redis.call('GET', P .. 'key:' .. key)
local created = 0
if not id then
  id = tostring(redis.call('INCR', P .. 'seq'))
  redis.call('HSET', P .. 'job:' .. id, 'id', id, 'kind', kind, 'key', key, 'repo', repo, 'pr', pr,
             'head_sha', ARGV[12], 'payload', ARGV[13], 'attempts', 0, 'not_before', 0, 'created_at', NOW)
  redis.call('SET', P .. 'key:' .. key, id)
  redis.call('ZADD', P .. 'all', tonumber(id), id)
  set_state(id, 'queued')
  created = 1
else
  local state = redis.call('HGET', P .. 'job:' .. id, 'state')
  if state == 'failed' or state == 'superseded' or state == 'skipped' then
    redis.call('HSET', P .. 'job:' .. id, 'payload', ARGV[13], 'attempts', 0, 'not_before', 0)
    redis.call('HDEL', P .. 'job:' .. id, 'owner', 'lease_until', 'result', 'msg')
    set_state(id, 'queued')
    created = 1
  end
end
if created == 1 then enqueue(id) end
local out = {0, tonumber(id), created}
if created == 1 and kind == 'review' and ARGV[14] == '1' then
  local prkey = P .. 'pr:' .. string.lower(repo) .. '#' .. pr
  for _, other in ipairs(redis.call('SMEMBERS', prkey)) do
    if other ~= id then
      local st = redis.call('HGET', P .. 'job:' .. other, 'state')
      if st == 'queued' or st == 'running' then
        set_state(other, 'superseded')
        table.insert(out, tonumber(other))
      end
    end
  end
  redis.call('SADD', prkey, id)
end
return out
"""
)

# ARGV: prefix, now, id, message id, owner, lease_until, max_attempts
# -> 'ok' (leased to owner), 'busy' (another worker's lease holds: keep the message),
#    'later' (a retry not due yet), 'gone' / 'final' / 'failed' (nothing to run): the message is dropped
_CLAIM = (
    _LUA_HELPERS
    + """
local id, msg = ARGV[3], ARGV[4]
local jk = P .. 'job:' .. id
local now = tonumber(NOW)
local h = redis.call('HMGET', jk, 'state', 'not_before', 'lease_until', 'attempts', 'msg')
if not h[1] then drop_message(msg) return 'gone' end
if h[1] == 'queued' then
  if tonumber(h[2] or '0') > now then drop_message(msg) return 'later' end
elseif h[1] == 'running' then
  if tonumber(h[3] or '0') >= now then return 'busy' end
  if tonumber(h[4] or '0') >= tonumber(ARGV[7]) then
    set_state(id, 'failed')
    redis.call('HSET', jk, 'result', cjson.encode({error = ARGV[8]}))
    redis.call('HDEL', jk, 'owner', 'lease_until', 'msg')
    drop_message(h[5])
    drop_message(msg)
    return 'failed'
  end
else
  drop_message(msg)
  return 'final'
end
if h[5] and h[5] ~= msg then drop_message(h[5]) end
set_state(id, 'running')
redis.call('HSET', jk, 'owner', ARGV[5], 'lease_until', ARGV[6], 'msg', msg)
redis.call('HINCRBY', jk, 'attempts', 1)
return 'ok'
"""
)

# ARGV: prefix, now, id, owner, lease_until -- renew the lease and the message's idle time
_HEARTBEAT = (
    _LUA_HELPERS
    + """
local jk = P .. 'job:' .. ARGV[3]
local h = redis.call('HMGET', jk, 'state', 'owner', 'msg')
if h[1] ~= 'running' or h[2] ~= ARGV[4] then return 0 end
redis.call('HSET', jk, 'lease_until', ARGV[5], 'updated_at', NOW)
if h[3] then redis.call('XCLAIM', STREAM, '"""
    + GROUP
    + """', ARGV[4], 0, h[3], 'JUSTID') end
return 1
"""
)

# ARGV: prefix, now, id, owner, field, value  -- set a field of a job this owner runs
_OWNED_SET = (
    _LUA_HELPERS
    + """
local jk = P .. 'job:' .. ARGV[3]
local h = redis.call('HMGET', jk, 'state', 'owner')
if h[1] ~= 'running' or h[2] ~= ARGV[4] then return 0 end
redis.call('HSET', jk, ARGV[5], ARGV[6], 'updated_at', NOW)
return 1
"""
)

# ARGV: prefix, now, id, owner, state, result
_FINISH = (
    _LUA_HELPERS
    + """
local jk = P .. 'job:' .. ARGV[3]
local h = redis.call('HMGET', jk, 'state', 'owner', 'msg')
if h[1] ~= 'running' or h[2] ~= ARGV[4] then return 0 end
set_state(ARGV[3], ARGV[5])
redis.call('HSET', jk, 'result', ARGV[6])
redis.call('HDEL', jk, 'owner', 'lease_until', 'msg')
drop_message(h[3])
return 1
"""
)

# ARGV: prefix, now, id, owner, not_before, result, max_attempts
_RELEASE = (
    _LUA_HELPERS
    + """
local jk = P .. 'job:' .. ARGV[3]
local h = redis.call('HMGET', jk, 'state', 'owner', 'attempts', 'msg')
if h[1] ~= 'running' or h[2] ~= ARGV[4] then return '' end
local new = 'queued'
if tonumber(h[3] or '0') >= tonumber(ARGV[7]) then new = 'failed' end
set_state(ARGV[3], new)
redis.call('HSET', jk, 'not_before', ARGV[5], 'result', ARGV[6])
redis.call('HDEL', jk, 'owner', 'lease_until', 'msg')
drop_message(h[4])
if new == 'queued' then redis.call('ZADD', P .. 'delayed', tonumber(ARGV[5]), ARGV[3]) end
return new
"""
)

# ARGV: prefix, now, max_attempts, error -- due retries get their message; dead workers' last
# attempts are failed (their other jobs are taken over by XAUTOCLAIM in take())
_MAINTAIN = (
    _LUA_HELPERS
    + """
local now = tonumber(NOW)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'delayed', '-inf', now)) do
  if redis.call('HGET', P .. 'job:' .. id, 'state') == 'queued' then enqueue(id)
  else redis.call('ZREM', P .. 'delayed', id) end
end
local failed = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'active')) do
  local jk = P .. 'job:' .. id
  local h = redis.call('HMGET', jk, 'state', 'lease_until', 'attempts', 'msg')
  if h[1] == 'running' and tonumber(h[2] or '0') < now and tonumber(h[3] or '0') >= tonumber(ARGV[3]) then
    set_state(id, 'failed')
    redis.call('HSET', jk, 'result', cjson.encode({error = ARGV[4]}))
    redis.call('HDEL', jk, 'owner', 'lease_until', 'msg')
    drop_message(h[4])
    table.insert(failed, tonumber(id))
  end
end
return failed
"""
)

# ARGV: prefix, now, before, limit -- delete finished jobs last changed before ``before``
_PRUNE = (
    _LUA_HELPERS
    + """
local ids = redis.call('ZRANGEBYSCORE', P .. 'finished', '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  local jk = P .. 'job:' .. id
  local h = redis.call('HMGET', jk, 'state', 'key', 'repo', 'pr', 'kind')
  if h[1] then
    redis.call('HINCRBY', P .. 'counts', h[1], -1)
    if redis.call('GET', P .. 'key:' .. h[2]) == id then redis.call('DEL', P .. 'key:' .. h[2]) end
    if h[5] == 'review' then redis.call('SREM', P .. 'pr:' .. string.lower(h[3]) .. '#' .. h[4], id) end
  end
  redis.call('DEL', jk)
  redis.call('ZREM', P .. 'all', id)
  redis.call('ZREM', P .. 'finished', id)
end
return #ids
"""
)


class RedisJobStore:
    """``webhooks.jobs.JobStore`` on Redis (see the module docstring)."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        name: str = "revbot",
        client: Any = None,
        *,
        clock: Clock = time.time,
        retention_s: float = DEFAULT_RETENTION_S,
    ):
        import redis

        self.prefix = f"revbot:{name}:"
        self.stream = self.prefix + "stream"
        self.clock = clock
        self.retention_s = retention_s
        self._url = url
        try:
            self.r = client or redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
            self.r.ping()
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists already: fine
                raise QueueError(f"Redis at {_safe(url)}: cannot create the consumer group: {exc}") from exc
        except redis.RedisError as exc:
            raise QueueError(f"Redis at {_safe(url)} unreachable: {exc}") from exc
        self._scripts = {
            name: self.r.register_script(src)
            for name, src in (
                ("accept", _ACCEPT),
                ("claim", _CLAIM),
                ("heartbeat", _HEARTBEAT),
                ("owned_set", _OWNED_SET),
                ("finish", _FINISH),
                ("release", _RELEASE),
                ("maintain", _MAINTAIN),
                ("prune", _PRUNE),
            )
        }

    def __repr__(self) -> str:
        return f"RedisJobStore({_safe(self._url)!r})"

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise QueueError(f"Redis job table ({_safe(self._url)}): {exc}") from exc

    def _run(self, name: str, *args: Any) -> Any:
        return self._call(self._scripts[name], args=[self.prefix, repr(self.clock()), *args])

    def ping(self) -> None:
        import redis

        try:
            self.r.ping()
        except redis.RedisError as exc:
            raise QueueError(f"Redis at {_safe(self._url)} unreachable: {exc}") from exc

    def close(self) -> None:
        try:
            self.r.close()
        except Exception as exc:  # closing is best effort: the process is leaving the connection anyway
            log.debug("closing the Redis connection failed: %s", exc, exc_info=True)

    # ------------------------------------------------------------------ web side

    def accept(self, delivery_id, event, action, job: NewJob | None = None, supersede=True) -> Accepted:
        res = self._run(
            "accept",
            delivery_id or "",
            max(int(self.retention_s), 1),
            event,
            action or "",
            "1" if job else "0",
            job.kind if job else "",
            job.key if job else "",
            job.repo if job else "",
            job.pr if job else 0,
            (job.head_sha or "") if job else "",
            json.dumps(job.payload) if job else "{}",
            "1" if supersede else "0",
        )
        dup, job_id, created, *superseded = [int(x) for x in res]
        return Accepted(bool(dup), job_id or None, bool(created), superseded)

    # ------------------------------------------------------------------ worker side

    def take(self, owner, lease_s, max_attempts, wait=0.0) -> Job | None:
        """A dead worker's job first (its message idle for longer than a lease), else the next new
        message, blocking up to ``wait`` seconds for one."""
        deadline = time.monotonic() + wait
        while True:
            reply = self._call(
                self.r.xautoclaim,
                self.stream,
                GROUP,
                owner,
                min_idle_time=max(int(lease_s * 1000), 1),
                start_id="0-0",
                count=1,
            )
            messages = reply[1] if reply else []
            if not messages:  # block for new ones, waking now and then to look for dead workers' again
                block = max(int(min(deadline - time.monotonic(), lease_s / 2) * 1000), 0)
                read = self._call(
                    self.r.xreadgroup, GROUP, owner, {self.stream: ">"}, count=1, block=block if block > 0 else None
                )
                messages = read[0][1] if read else []
            for msg_id, fields in messages:
                if not fields:  # deleted under us (finished meanwhile)
                    continue
                job_id = int(fields[b"job"])
                state = self._run(
                    "claim",
                    job_id,
                    msg_id,
                    owner,
                    repr(self.clock() + lease_s),
                    max_attempts,
                    LOST_LEASE.format(n=max_attempts),
                )
                if _text(state) == "ok":
                    return self.get(job_id)
            if time.monotonic() >= deadline:
                return None

    def heartbeat(self, job_id, owner, lease_s) -> bool:
        return int(self._run("heartbeat", job_id, owner, repr(self.clock() + lease_s))) == 1

    def save_plan(self, job_id, owner, plan) -> bool:
        return int(self._run("owned_set", job_id, owner, "plan", json.dumps(plan))) == 1

    def finish(self, job_id, owner, state, result=None) -> bool:
        return int(self._run("finish", job_id, owner, state, json.dumps(result))) == 1

    def release(self, job_id, owner, delay, error, max_attempts) -> str:
        due = repr(self.clock() + delay)
        return _text(self._run("release", job_id, owner, due, json.dumps({"error": error}), max_attempts))

    def maintain(self, max_attempts) -> list[int]:
        """Send due retries to the stream; fail dead workers' jobs that used up their attempts."""
        return [int(x) for x in self._run("maintain", max_attempts, LOST_LEASE.format(n=max_attempts))]

    def prune(self, before) -> dict[str, int]:
        """Delete finished jobs last changed before ``before`` (deliveries expire on their own
        after ``retention_s``) and consumers of the group that are gone and hold nothing."""
        jobs = 0
        while True:
            n = int(self._run("prune", repr(float(before)), 500))
            jobs += n
            if n < 500:
                break
        idle_ms = max(self.clock() - before, 0) * 1000
        for consumer in self._call(self.r.xinfo_consumers, self.stream, GROUP):
            if int(consumer.get("pending", 0)) == 0 and int(consumer.get("idle", 0)) > idle_ms:
                self._call(self.r.xgroup_delconsumer, self.stream, GROUP, consumer["name"])
        return {"jobs": jobs, "deliveries": 0}

    # ------------------------------------------------------------------ reading

    def get(self, job_id) -> Job | None:
        raw = self._call(self.r.hgetall, self.prefix + f"job:{job_id}")
        return _job(raw) if raw else None

    def find(self, repo=None, pr=None, kind=None) -> list[Job]:
        out = []
        for raw_id in self._call(self.r.zrange, self.prefix + "all", 0, -1):
            job = self.get(int(raw_id))
            if job is None:
                continue
            if (
                (repo is None or job.repo == repo)
                and (pr is None or job.pr == pr)
                and (kind is None or job.kind == kind)
            ):
                out.append(job)
        return out

    def counts(self) -> dict[str, int]:
        out = {state: 0 for state in STATES}
        for state, n in self._call(self.r.hgetall, self.prefix + "counts").items():
            out[state.decode()] = int(n)
        return out

    def waiting(self) -> int:
        """Messages no worker has read yet (the group's lag)."""
        for group in self._call(self.r.xinfo_groups, self.stream):
            if _text(group.get("name")) == GROUP:
                lag = group.get("lag")
                return int(lag) if lag is not None else int(self._call(self.r.xlen, self.stream))
        return 0

    def delivery_count(self) -> int:
        return sum(1 for _ in self.r.scan_iter(self.prefix + "delivery:*", count=1000))

    def report_worker(self, owner: str, info: dict[str, Any]) -> None:
        self._call(self.r.hset, self.prefix + "workers", owner, json.dumps({**info, "seen": self.clock()}))

    def workers(self, max_age: float) -> list[dict[str, Any]]:
        cutoff = self.clock() - max_age
        out = []
        for owner, raw in sorted(self._call(self.r.hgetall, self.prefix + "workers").items()):
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _safe(url: str) -> str:
    from urllib.parse import urlparse

    p = urlparse(url)
    return f"{p.scheme}://{p.hostname}:{p.port or 6379}{p.path}"


def _job(raw: dict[bytes, bytes]) -> Job:
    d = {k.decode(): v.decode() for k, v in raw.items()}

    def num(name: str, default: float | None = None) -> float | None:
        return float(d[name]) if d.get(name) not in (None, "") else default

    return Job(
        id=int(d["id"]),
        kind=d["kind"],
        key=d["key"],
        repo=d["repo"],
        pr=int(d["pr"]),
        head_sha=d.get("head_sha") or None,
        state=d.get("state", QUEUED),
        payload=json.loads(d.get("payload") or "{}"),
        attempts=int(d.get("attempts") or 0),
        owner=d.get("owner") or None,
        lease_until=num("lease_until"),
        not_before=num("not_before", 0.0) or 0.0,
        plan=json.loads(d["plan"]) if d.get("plan") else None,
        result=json.loads(d["result"]) if d.get("result") not in (None, "", "null") else None,
        created_at=num("created_at", 0.0) or 0.0,
        updated_at=num("updated_at", 0.0) or 0.0,
    )
