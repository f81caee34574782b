"""infra/redis/rq_jobs.py writes jobs exactly as RQ's own enqueue_many does, each at most once.

The guard for an RQ upgrade: if RQ changes what a queued job looks like, these fail before a
fleet has workers that cannot read the engine's jobs. The rest covers the enqueue script:
guards, duplicates, order per queue, long pushes, a call sent twice, and failures that must
leave nothing behind.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from infra.redis.connection import as_text
from infra.redis.rq_jobs import (
    CALL_TTL,
    PUSH_CHUNK,
    ZLIB_LEVEL,
    JobWriter,
    NewJob,
)
from infra.redis.rq_jobs import (
    DEFAULT_CALLS_PREFIX as CALLS,
)

NOW = datetime(2026, 12, 1, 18, 30, 5, 123456, tzinfo=UTC)
_STAMPS = ("created_at", "enqueued_at")
FUNCTION = "tests.redis.test_rq_jobs.echo"
RESULT_TTL = 600
FAILURE_TTL = 86400


def new_job(
    job_id: str = "job-1", queue: str = "reaper-linux", args: tuple[str, ...] = ("x",)
) -> NewJob:
    return NewJob(
        job_id=job_id,
        queue=queue,
        guard=f"test:guard:{job_id}",
        args=args,
        description="scan lin1 (m1)",
        meta={"task_id": job_id, "attempt": 2},
        timeout=95,
    )


def echo(value: str) -> str:
    return value


def writer_on(client: redis.Redis) -> JobWriter:
    return JobWriter(client, FUNCTION, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL)


def rq_written(client: redis.Redis, job: NewJob) -> dict[Any, Any]:
    """What RQ itself stores for the same job (enqueue_many on a pipeline)."""
    queue = Queue(job.queue, connection=client, serializer=JSONSerializer)
    data = Queue.prepare_data(
        FUNCTION,
        args=list(job.args),
        timeout=job.timeout,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
        description=job.description,
        job_id=job.job_id,
        meta=dict(job.meta),
    )
    pipe = client.pipeline(transaction=True)
    queue.enqueue_many([data], pipeline=pipe)
    pipe.execute()
    return client.hgetall(f"rq:job:{job.job_id}")


def ours_written(client: redis.Redis, job: NewJob) -> dict[Any, Any]:
    assert writer_on(client).enqueue([job], NOW) == [True]
    return client.hgetall(f"rq:job:{job.job_id}")


def listed(client: redis.Redis, queue: str) -> list[str]:
    return [as_text(i) for i in client.lrange(f"rq:queue:{queue}", 0, -1)]


# -- RQ's format ----------------------------------------------------------------------------


def test_the_hash_is_rqs_field_for_field(any_client: redis.Redis) -> None:
    theirs = rq_written(any_client, new_job("theirs", args=('é "quoted" {json}',)))
    ours = ours_written(any_client, new_job("ours", args=('é "quoted" {json}',)))
    assert set(ours) == set(theirs)
    for field, value in theirs.items():
        name = field.decode()
        if name in _STAMPS:
            continue  # written at a different moment; the format is checked below
        if name == "data":
            # Compressed at another level than RQ's; the JSON inside is the same bytes.
            assert zlib.decompress(ours[field]) == zlib.decompress(value)
        elif name == "meta":
            assert ours[field] == value.replace(b"theirs", b"ours")
        else:
            assert ours[field] == value, name
    for name in _STAMPS:
        key = name.encode()
        assert len(ours[key]) == len(theirs[key])
        assert ours[key] == b"2026-12-01T18:30:05.123456Z"


def test_job_data_is_zlib_at_the_chosen_level(any_client: redis.Redis) -> None:
    data = ours_written(any_client, new_job("z"))[b"data"]
    text = b'["tests.redis.test_rq_jobs.echo", null, ["x"], {}]'
    assert data == zlib.compress(text, ZLIB_LEVEL)


def test_rq_loads_the_job_and_finds_it_queued(any_client: redis.Redis) -> None:
    ours_written(any_client, new_job("loaded"))
    job = Job.fetch("loaded", connection=any_client, serializer=JSONSerializer)
    assert job.func_name == FUNCTION
    assert job.args == ["x"]
    assert job.get_status() is JobStatus.QUEUED
    assert job.origin == "reaper-linux"
    assert job.timeout == 95
    assert job.meta == {"task_id": "loaded", "attempt": 2}
    assert job.enqueued_at == NOW


def test_queues_are_pushed_in_order_and_registered(any_client: redis.Redis) -> None:
    jobs = [new_job(f"j{n}", queue="reaper-macos" if n % 2 else "reaper-linux") for n in range(6)]
    assert writer_on(any_client).enqueue(jobs, NOW) == [True] * 6
    assert listed(any_client, "reaper-linux") == ["j0", "j2", "j4"]
    assert listed(any_client, "reaper-macos") == ["j1", "j3", "j5"]
    assert any_client.smembers("rq:queues") == {
        b"rq:queue:reaper-linux",
        b"rq:queue:reaper-macos",
    }
    queue = Queue("reaper-macos", connection=any_client, serializer=JSONSerializer)
    assert queue.job_ids == ["j1", "j3", "j5"]
    assert any_client.hget("rq:job:j1", "origin") == b"reaper-macos"


@pytest.mark.redis
def test_an_rq_worker_runs_it(redis_client: redis.Redis) -> None:
    ours_written(redis_client, new_job("run-me", args=("hello",)))
    queue = Queue("reaper-linux", connection=redis_client, serializer=JSONSerializer)
    worker = SimpleWorker([queue], connection=redis_client, serializer=JSONSerializer)
    assert worker.work(burst=True) is True
    job = Job.fetch("run-me", connection=redis_client, serializer=JSONSerializer)
    assert job.get_status() is JobStatus.FINISHED
    assert job.return_value() == "hello"


# -- each job at most once ------------------------------------------------------------------


def test_the_guard_holds_the_calls_token_for_the_timeout_plus_the_result_ttl(
    any_client: redis.Redis,
) -> None:
    assert writer_on(any_client).enqueue([new_job("g")], NOW, token="tok-1") == [True]
    assert any_client.get("test:guard:g") == b"tok-1"
    assert 95 + RESULT_TTL - 5 <= any_client.ttl("test:guard:g") <= 95 + RESULT_TTL


def test_a_taken_guard_or_a_job_still_in_rq_makes_a_duplicate_and_the_rest_keep_order(
    any_client: redis.Redis,
) -> None:
    any_client.set("test:guard:b", b"another publisher")
    any_client.hset("rq:job:d", mapping={"status": "finished"})  # keeping its result
    jobs = [
        new_job(name, queue="reaper-windows" if name in "cf" else "reaper-linux")
        for name in "abcdef"
    ]
    assert writer_on(any_client).enqueue(jobs, NOW) == [True, False, True, False, True, True]
    assert listed(any_client, "reaper-linux") == ["a", "e"]
    assert listed(any_client, "reaper-windows") == ["c", "f"]
    assert any_client.get("test:guard:b") == b"another publisher"  # left as it was
    assert any_client.hgetall("rq:job:d") == {b"status": b"finished"}
    assert not any_client.exists("rq:job:b")


def test_a_job_id_given_twice_in_one_call_is_written_once(any_client: redis.Redis) -> None:
    jobs = [new_job("x"), new_job("y"), new_job("x", args=("other",))]
    assert writer_on(any_client).enqueue(jobs, NOW) == [True, True, False]
    assert listed(any_client, "reaper-linux") == ["x", "y"]
    assert Job.fetch("x", connection=any_client, serializer=JSONSerializer).args == ["x"]


def test_a_call_sent_again_with_its_token_reports_its_jobs_and_writes_nothing_twice(
    any_client: redis.Redis,
) -> None:
    """What a redis-py retry does after a lost reply: the same command once more."""
    writer = writer_on(any_client)
    jobs = [new_job("r1"), new_job("r2", queue="reaper-macos")]
    assert writer.enqueue(jobs, NOW, token="call-1") == [True, True]
    assert writer.enqueue(jobs, NOW, token="call-1") == [True, True]
    assert listed(any_client, "reaper-linux") == ["r1"]
    assert listed(any_client, "reaper-macos") == ["r2"]
    assert writer.enqueue(jobs, NOW, token="call-2") == [False, False]  # anyone else: taken


def test_a_call_sent_again_after_its_jobs_were_taken_or_discarded_writes_nothing(
    any_client: redis.Redis,
) -> None:
    """The retry of a lost reply can come after a worker took a job, or a cancel pulled it
    (both delete the job and its guard): the task must not be queued again."""
    writer = writer_on(any_client)
    jobs = [new_job("taken"), new_job("pulled")]
    assert writer.enqueue(jobs, NOW, token="call-1") == [True, True]
    for name in ("taken", "pulled"):  # as consume() and discard() leave them
        any_client.lrem("rq:queue:reaper-linux", 1, name)
        any_client.delete(f"rq:job:{name}", f"test:guard:{name}")

    assert writer.enqueue(jobs, NOW, token="call-1") == [True, True]  # the first reply
    assert listed(any_client, "reaper-linux") == []
    assert not any_client.exists("rq:job:taken", "rq:job:pulled")
    assert 0 < any_client.ttl(f"{CALLS}call-1") <= CALL_TTL


def test_a_call_sent_again_reports_its_duplicates_as_duplicates(any_client: redis.Redis) -> None:
    any_client.hset("rq:job:kept", mapping={"status": "failed"})  # kept for failure_ttl
    writer = writer_on(any_client)
    assert writer.enqueue([new_job("kept")], NOW, token="call-1") == [False]
    assert writer.enqueue([new_job("kept")], NOW, token="call-1") == [False]


def test_ttls_that_would_fail_the_script_midway_are_refused_before_it_runs(
    any_client: redis.Redis,
) -> None:
    with pytest.raises(ValueError, match="result_ttl"):
        JobWriter(any_client, FUNCTION, result_ttl=-1, failure_ttl=FAILURE_TTL)
    with pytest.raises(ValueError, match="timeout"):
        writer_on(any_client).enqueue([new_job("a"), new_job("b")._replace(timeout=0)], NOW)
    assert any_client.keys("*") == []


def test_pushes_longer_than_one_unpack_are_split_and_keep_their_order(
    any_client: redis.Redis,
) -> None:
    count = 2 * PUSH_CHUNK + 7
    jobs = [
        new_job(f"n{n:05d}", queue="reaper-macos" if n == 3 else "reaper-linux")
        for n in range(count)
    ]
    assert writer_on(any_client).enqueue(jobs, NOW) == [True] * count
    assert listed(any_client, "reaper-linux") == [j.job_id for j in jobs if j.job_id != "n00003"]
    assert listed(any_client, "reaper-macos") == ["n00003"]
    assert any_client.hget(f"rq:job:n{count - 1:05d}", "status") == b"queued"


def test_nothing_to_write_sends_nothing(any_client: redis.Redis) -> None:
    assert writer_on(any_client).enqueue([], NOW) == []
    assert any_client.dbsize() == 0


# -- failures leave nothing behind ----------------------------------------------------------


@pytest.mark.parametrize("broken", ["rq:queue:reaper-macos", "rq:queues"])
def test_a_foreign_key_of_the_wrong_type_fails_the_call_before_any_write(
    any_client: redis.Redis, broken: str
) -> None:
    any_client.set(broken, b"not a list or a set")
    jobs = [new_job("w1"), new_job("w2", queue="reaper-macos")]
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        writer_on(any_client).enqueue(jobs, NOW)
    assert any_client.keys("test:guard:*") == []
    assert any_client.keys("rq:job:*") == []
    assert not any_client.exists("rq:queue:reaper-linux")

    any_client.delete(broken)
    assert writer_on(any_client).enqueue(jobs, NOW) == [True, True]  # nothing was claimed


@pytest.mark.redis
def test_a_server_that_lost_its_scripts_gets_them_again(redis_client: redis.Redis) -> None:
    writer = writer_on(redis_client)
    assert writer.enqueue([new_job("before")], NOW) == [True]
    redis_client.script_flush()  # what a restarted server has forgotten
    assert writer.enqueue([new_job("after")], NOW) == [True]
    assert listed(redis_client, "reaper-linux") == ["before", "after"]
