"""infra/redis/rq_jobs.py writes jobs exactly as RQ's own enqueue_many does.

The guard for an RQ upgrade: if RQ changes what a queued job looks like, these fail before a
fleet has workers that cannot read the engine's jobs.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from infra.redis.rq_jobs import JobSpec, enqueue, job_hash

NOW = datetime(2026, 12, 1, 18, 30, 5, 123456, tzinfo=UTC)
_STAMPS = ("created_at", "enqueued_at")


def spec(job_id: str = "job-1", queue: str = "reaper-linux", args: tuple = ("x",)) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        queue=queue,
        function="tests.redis.test_rq_jobs.echo",
        args=args,
        timeout=95,
        result_ttl=600,
        failure_ttl=86400,
        description="scan lin1 (m1)",
        meta={"task_id": job_id, "attempt": 2},
    )


def echo(value: str) -> str:
    return value


def rq_written(client: redis.Redis, s: JobSpec) -> dict[bytes, bytes]:
    """What RQ itself stores for the same job (enqueue_many on a pipeline, as we used to)."""
    queue = Queue(s.queue, connection=client, serializer=JSONSerializer)
    data = Queue.prepare_data(
        s.function,
        args=list(s.args),
        timeout=s.timeout,
        result_ttl=s.result_ttl,
        failure_ttl=s.failure_ttl,
        description=s.description,
        job_id=s.job_id,
        meta=dict(s.meta),
    )
    pipe = client.pipeline(transaction=True)
    queue.enqueue_many([data], pipeline=pipe)
    pipe.execute()
    return client.hgetall(f"rq:job:{s.job_id}")


def ours_written(client: redis.Redis, s: JobSpec) -> dict[bytes, bytes]:
    pipe = client.pipeline(transaction=True)
    enqueue(pipe, [s], NOW)
    pipe.execute()
    return client.hgetall(f"rq:job:{s.job_id}")


@pytest.mark.redis
def test_the_hash_is_rqs_field_for_field(redis_client: redis.Redis) -> None:
    theirs = rq_written(redis_client, spec("theirs"))
    ours = ours_written(redis_client, spec("ours"))
    assert set(ours) == set(theirs)
    for field, value in theirs.items():
        name = field.decode()
        if name in _STAMPS:
            continue  # written at a different moment; the format is checked below
        if name == "data":
            assert zlib.decompress(ours[field]) == zlib.decompress(value)
        elif name == "meta":
            assert ours[field] == value.replace(b"theirs", b"ours")
        else:
            assert ours[field] == value, name
    for name in _STAMPS:
        key = name.encode()
        assert len(ours[key]) == len(theirs[key])
        assert ours[key] == b"2026-12-01T18:30:05.123456Z"


@pytest.mark.redis
def test_rq_loads_the_job_and_finds_it_queued(redis_client: redis.Redis) -> None:
    ours_written(redis_client, spec("loaded"))
    job = Job.fetch("loaded", connection=redis_client, serializer=JSONSerializer)
    assert job.func_name == "tests.redis.test_rq_jobs.echo"
    assert job.args == ["x"]
    assert job.get_status() is JobStatus.QUEUED
    assert job.origin == "reaper-linux"
    assert job.timeout == 95
    assert job.meta == {"task_id": "loaded", "attempt": 2}
    assert job.enqueued_at == NOW


@pytest.mark.redis
def test_queues_are_pushed_in_order_and_registered(redis_client: redis.Redis) -> None:
    specs = [spec(f"j{n}", queue="reaper-macos" if n % 2 else "reaper-linux") for n in range(6)]
    pipe = redis_client.pipeline(transaction=True)
    enqueue(pipe, specs, NOW)
    pipe.execute()
    assert redis_client.lrange("rq:queue:reaper-linux", 0, -1) == [b"j0", b"j2", b"j4"]
    assert redis_client.lrange("rq:queue:reaper-macos", 0, -1) == [b"j1", b"j3", b"j5"]
    assert redis_client.smembers("rq:queues") == {
        b"rq:queue:reaper-linux",
        b"rq:queue:reaper-macos",
    }
    queue = Queue("reaper-macos", connection=redis_client, serializer=JSONSerializer)
    assert queue.job_ids == ["j1", "j3", "j5"]


@pytest.mark.redis
def test_an_rq_worker_runs_it(redis_client: redis.Redis) -> None:
    ours_written(redis_client, spec("run-me", args=("hello",)))
    queue = Queue("reaper-linux", connection=redis_client, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer)
    assert worker.work(burst=True) is True
    job = Job.fetch("run-me", connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.FINISHED
    assert job.return_value() == "hello"


def test_job_hash_is_pure() -> None:
    assert job_hash(spec(), NOW) == job_hash(spec(), NOW)
    assert job_hash(spec(), NOW)["status"] == "queued"
