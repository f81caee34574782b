"""RQ jobs written the way RQ's ``Queue.enqueue_many`` writes them, without RQ's Job objects.

RQ builds a ``Job`` per call (a dozen attributes, a callback check, a ``to_dict`` of ~16
fields, three pipeline commands) and that is most of what dispatching a task costs: about
120 µs a job, against a few µs to write the same hash from a template (bench/bench_fleet.py,
"dispatch"). The engine dispatches a follow-up task for most results it applies, so this is
the engine's largest cost per result after decoding.

What is written, per job, is exactly what RQ 3 writes for a job without dependencies,
callbacks, retries or a TTL (``Job.to_dict`` after ``Queue._prepare_for_queue``), so RQ's own
workers, ``Job.fetch`` and RQ's dashboards read it as their own; the queue is pushed and
registered as ``Queue.enqueue_many`` does. tests/redis/test_rq_jobs.py compares the two
field by field, so an RQ upgrade that changes the format fails a test, not the fleet.
"""

# rq is imported where it is used, as in queue.py: this module must load without it.
# ruff: noqa: PLC0415
from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

_TIMESTAMP: Final = "%Y-%m-%dT%H:%M:%S.%fZ"  # rq.utils._TIMESTAMP_FORMAT


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job: a call of ``function`` with ``args``, queued on ``queue``."""

    job_id: str
    queue: str
    function: str
    args: Sequence[Any]
    timeout: int
    result_ttl: int
    failure_ttl: int
    description: str
    meta: Mapping[str, Any]


def job_hash(spec: JobSpec, now: datetime) -> dict[str, str | bytes | int]:
    """The fields RQ's ``Job.save`` writes for ``spec``, enqueued at ``now`` (UTC)."""
    stamp = now.strftime(_TIMESTAMP)
    # RQ's JSONSerializer: json.dumps of (function name, instance, args, kwargs), UTF-8.
    data = json.dumps([spec.function, None, list(spec.args), {}]).encode()
    return {
        "created_at": stamp,
        "data": zlib.compress(data),
        "success_callback_name": "",
        "failure_callback_name": "",
        "stopped_callback_name": "",
        "started_at": "",
        "ended_at": "",
        "last_heartbeat": "",
        "worker_name": "",
        "group_id": "",
        "origin": spec.queue,
        "description": spec.description,
        "enqueued_at": stamp,
        "timeout": spec.timeout,
        "result_ttl": spec.result_ttl,
        "failure_ttl": spec.failure_ttl,
        "status": "queued",
        "meta": json.dumps(dict(spec.meta)).encode(),
    }


def enqueue(pipe: Any, specs: Sequence[JobSpec], now: datetime) -> None:
    """Queue ``specs`` on ``pipe`` (a redis-py pipeline): each job's hash, then one push
    per queue in the order given, and the queue's registration in ``rq:queues``."""
    # RQ's key names from RQ itself.
    from rq import Queue
    from rq.job import Job

    order: dict[str, list[str]] = {}
    for spec in specs:
        pipe.hset(Job.key_for(spec.job_id), mapping=job_hash(spec, now))
        order.setdefault(spec.queue, []).append(spec.job_id)
    for queue, job_ids in order.items():
        key = Queue.redis_queue_namespace_prefix + queue
        pipe.sadd(Queue.redis_queues_keys, key)
        pipe.rpush(key, *job_ids)
