"""RQ jobs written the way RQ's ``Queue.enqueue_many`` writes them, without RQ's Job objects.

RQ builds a ``Job`` per call (a dozen attributes, a callback check, a ``to_dict`` of ~16
fields, three pipeline commands) and that is most of what dispatching a task costs: about
120 µs a job (bench/bench_fleet.py, "dispatch"). The engine dispatches a follow-up task for
most results it applies, so this is the engine's largest cost per result after decoding.

What is written, per job, is what RQ 3 writes for a job without dependencies, callbacks,
retries or a TTL (``Job.to_dict`` after ``Queue._prepare_for_queue``), but for the job data's
zlib level, which RQ's reader does not care about; so RQ's own workers, ``Job.fetch`` and
RQ's dashboards read it as their own. The queue is pushed and registered as
``Queue.enqueue_many`` does. tests/redis/test_rq_jobs.py compares the two field by field
(the data decompressed), so an RQ upgrade that changes the format fails a test, not the
fleet.

``JobWriter.enqueue`` writes a whole batch with one call of a Lua script. Each job comes
with a guard key, and the script writes a job only if it sets that guard (``SET NX EX``)
and no job with its id exists (one still queued, running or keeping its result): of racing
publishers exactly one writes each job. Per job the client sends only what varies (id,
data, description, meta, timeout; guard and job key); the fields every job shares go once
per call. Packing ~40 arguments a job in redis-py, what a pipelined ``HSET`` costs, was
most of the old price.
"""

# rq is imported where it is used, as in queue.py: this module must load without it.
# ruff: noqa: PLC0415
from __future__ import annotations

import json
import secrets
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from infra.redis.connection import as_text

if TYPE_CHECKING:
    import redis

_TIMESTAMP: Final = "%Y-%m-%dT%H:%M:%S.%fZ"  # rq.utils._TIMESTAMP_FORMAT

# RQ reads job data with a plain zlib.decompress, whatever level wrote it. Measured on a
# scan task's data (906 bytes; Python 3.11, zlib 1.2.13, best of repeated runs on 2 cores):
# level 6 (the default) 16-20 µs and 427 bytes, level 1 13-16 µs and 448 bytes, level 0
# (stored) 1.5-2.5 µs and 918 bytes. Level 1 saves a fifth of the time for 5% more bytes.
# Level 0 would save the most, but RQ keeps every finished job's hash for its result_ttl:
# twice the data is memory (and AOF) that Redis pays for an hour after each job.
ZLIB_LEVEL: Final = 1

# Most values one Lua unpack() may spread into a command's arguments (its C stack allows
# ~8000): longer pushes are split.
PUSH_CHUNK: Final = 1000

DEFAULT_CALLS_PREFIX: Final = "reaper:publish:"

# How long a call's reply is kept for a resend of the same call: redis-py's retries after a
# lost reply take seconds, not minutes.
CALL_TTL: Final = 600

# KEYS: rq:queues, the nq queue keys, then a (guard key, job key) pair per job, and last
#   the call's key.
# ARGV: nq, the nq queue names, the nq job counts (the jobs come grouped by queue, in the
#   order each queue gets them), then the shared fields (enqueue stamp, result_ttl,
#   failure_ttl, the call's token), then per job: id, data, description, meta, timeout.
# Returns one character per job, in ARGV order: "1" written, "0" a duplicate.
#
# A script error does not undo the writes made before it, so whatever could fail (a foreign
# key of the wrong type) is checked before the first write; after that no command can fail
# (the TTLs are checked by the caller). The reply is kept under the call's key: a client
# that lost it and sends the call again gets the same reply and writes nothing, whatever
# happened to the jobs meanwhile (taken by a worker, discarded by a cancel).
_ENQUEUE: Final = (
    f"local CHUNK = {PUSH_CHUNK}\nlocal CALL_TTL = {CALL_TTL}\n"
    + r"""
local call_key = KEYS[#KEYS]
local replied = redis.call('GET', call_key)
if replied then
  return replied
end
local nq = tonumber(ARGV[1])
local registry = KEYS[1]
local function refuse_unless(key, wanted)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= wanted then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. kind .. ', not a ' .. wanted)
  end
end
local refused = refuse_unless(registry, 'set')
if refused then return refused end
for q = 1, nq do
  refused = refuse_unless(KEYS[1 + q], 'list')
  if refused then return refused end
end

local shared = 2 + 2 * nq
local result_ttl = tonumber(ARGV[shared + 1])
local token = ARGV[shared + 3]
local fields = {}
local function field(name, value)
  fields[#fields + 1] = name
  fields[#fields + 1] = value
  return #fields
end
field('created_at', ARGV[shared])
local DATA = field('data', '')
field('success_callback_name', '')
field('failure_callback_name', '')
field('stopped_callback_name', '')
field('started_at', '')
field('ended_at', '')
field('last_heartbeat', '')
field('worker_name', '')
field('group_id', '')
local ORIGIN = field('origin', '')
local DESCRIPTION = field('description', '')
field('enqueued_at', ARGV[shared])
local TIMEOUT = field('timeout', '')
field('result_ttl', ARGV[shared + 1])
field('failure_ttl', ARGV[shared + 2])
field('status', 'queued')
local META = field('meta', '')

local won = {}
local seen = {}
local job = 0
local arg = shared + 3
for q = 1, nq do
  local queue_key = KEYS[1 + q]
  local ids = {}
  fields[ORIGIN] = ARGV[1 + q]
  for _ = 1, tonumber(ARGV[1 + nq + q]) do
    job = job + 1
    local guard = KEYS[nq + 2 * job]
    local job_key = KEYS[nq + 2 * job + 1]
    local timeout = ARGV[arg + 5]
    local written = '0'
    if not seen[guard] then
      seen[guard] = true
      local ttl = tostring(tonumber(timeout) + result_ttl)
      if redis.call('SET', guard, token, 'NX', 'EX', ttl) then
        if redis.call('EXISTS', job_key) == 0 then
          fields[DATA] = ARGV[arg + 2]
          fields[DESCRIPTION] = ARGV[arg + 3]
          fields[META] = ARGV[arg + 4]
          fields[TIMEOUT] = timeout
          redis.call('HSET', job_key, unpack(fields))
          ids[#ids + 1] = ARGV[arg + 1]
          written = '1'
        end
      end
    end
    won[job] = written
    arg = arg + 5
  end
  if #ids > 0 then
    redis.call('SADD', registry, queue_key)
    for first = 1, #ids, CHUNK do
      redis.call('RPUSH', queue_key, unpack(ids, first, math.min(first + CHUNK - 1, #ids)))
    end
  end
end
local reply = table.concat(won)
redis.call('SET', call_key, reply, 'EX', CALL_TTL)
return reply
"""
)


class NewJob(NamedTuple):
    """One job to queue: a call of the writer's function with ``args``, on ``queue``.

    ``guard`` is the key that claims it (set with the call's token for ``timeout`` plus the
    result's TTL, the longest the job can be in RQ's hands); ``timeout`` is RQ's job
    timeout in seconds, at least 1."""

    job_id: str
    queue: str
    guard: str
    args: Sequence[Any]
    description: str
    meta: Mapping[str, Any]
    timeout: int


class JobWriter:
    """Queues calls of ``function`` as RQ jobs, each at most once, one script call a batch."""

    def __init__(
        self,
        client: redis.Redis,
        function: str,
        *,
        result_ttl: int,
        failure_ttl: int,
        call_key: Callable[[str], str] = DEFAULT_CALLS_PREFIX.__add__,
    ) -> None:
        if result_ttl < 0:
            # RQ's "keep forever" (-1) would make a guard's TTL invalid mid-script.
            raise ValueError(f"result_ttl must be at least 0, not {result_ttl}")
        # RQ's key names from RQ itself.
        from rq import Queue
        from rq.job import Job

        self._script = client.register_script(_ENQUEUE)
        self._job_key = Job.key_for
        self._queue_prefix: str = Queue.redis_queue_namespace_prefix
        self._registry: str = Queue.redis_queues_keys
        self._result_ttl = result_ttl
        self._failure_ttl = failure_ttl
        self._call_key = call_key  # token -> the key keeping that call's reply
        # RQ's JSONSerializer writes json.dumps([function, None, args, {}]); only the args
        # vary, so the rest is text made once (tests compare the bytes with RQ's).
        self._data_head = f"[{json.dumps(function)}, null, "
        self._data_tail = ", {}]"

    def enqueue(
        self, jobs: Sequence[NewJob], now: datetime, *, token: str | None = None
    ) -> list[bool]:
        """Queue ``jobs`` enqueued at ``now`` (UTC); per job, in order, whether this call
        wrote it (False: its guard was taken or its job exists). Pushed in the order given
        per queue; a job id given twice is written once. ``token`` (default: a fresh one)
        names the call: sent again with the same token, it gets the first reply and
        writes nothing (for ``CALL_TTL`` seconds)."""
        if not jobs:
            return []
        if any(job.timeout < 1 for job in jobs):
            raise ValueError("a job's timeout must be at least 1 s")
        token = token or secrets.token_hex(16)
        by_queue: dict[str, list[int]] = {}
        for index, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(index)
        keys: list[str] = [self._registry]
        keys += [self._queue_prefix + queue for queue in by_queue]
        args: list[str | bytes | int] = [len(by_queue), *by_queue]
        args += [len(indexes) for indexes in by_queue.values()]
        args += [
            now.strftime(_TIMESTAMP),
            self._result_ttl,
            self._failure_ttl,
            token,
        ]
        head, tail, job_key = self._data_head, self._data_tail, self._job_key
        order: list[int] = []
        for indexes in by_queue.values():
            order += indexes
            for index in indexes:
                job = jobs[index]
                keys += (job.guard, job_key(job.job_id))
                data = f"{head}{json.dumps(list(job.args))}{tail}".encode()
                args += (
                    job.job_id,
                    zlib.compress(data, ZLIB_LEVEL),
                    job.description,
                    json.dumps(dict(job.meta)),
                    job.timeout,
                )
        keys.append(self._call_key(token))
        reply = as_text(self._script(keys=keys, args=args))
        written = [False] * len(jobs)
        for index, flag in zip(order, reply, strict=True):
            written[index] = flag == "1"
        return written
