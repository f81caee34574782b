"""A worker's fixed name after a crash: stale registrations are taken over, live ones are not.

The registrations here are RQ's own (``SimpleWorker.register_birth``), then aged or moved to
another host by editing the key, as a crashed worker elsewhere would leave it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import redis
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from overseer.fleet.worker_names import (
    BEAT_PROMISE,
    RQ_TTL_MARGIN,
    STALE_GRACE,
    RqBeat,
    WorkerNameTakenError,
    claim_name,
    registration,
)

pytestmark = pytest.mark.redis

NAME = "worker-linux-1"
KEY = f"rq:worker:{NAME}"


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


def register(
    client: redis.Redis, *, host: str = "elsewhere", pid: int = 4242, overdue: float = 0.0
) -> SimpleWorker:
    """RQ's registration of NAME, as held by pid ``pid`` on ``host``, its last beat
    promising the next one ``-overdue`` seconds from now (overdue > 0: late already)."""
    worker = SimpleWorker(["reaper-linux"], name=NAME, connection=client, serializer=JSONSerializer)
    worker.register_birth()
    client.hset(KEY, mapping={"hostname": host, "pid": str(pid)})
    age(client, overdue)
    return worker


def age(client: redis.Redis, overdue: float) -> None:
    """Make NAME's last beat promise the next one ``-overdue`` seconds from now."""
    client.pexpire(KEY, int((RQ_TTL_MARGIN - overdue) * 1000))


def start_a_job(client: redis.Redis, worker: SimpleWorker) -> Job:
    """A job the worker has started and not finished: what a SIGKILL leaves behind."""
    queue = Queue("reaper-linux", connection=client, serializer=JSONSerializer)
    job = queue.enqueue("agents.rq_job.run_task", "{}", job_id="in-flight")
    client.lpop(queue.key)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    assert job.get_status() == JobStatus.STARTED
    return job


def a_pid_that_is_gone() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid runs nothing now (reuse within this test is improbable)
    return proc.pid


def test_a_free_name_or_one_whose_holder_stopped_is_claimed_at_once(client):
    claim_name(client, NAME, wait=0)
    worker = register(client)
    worker.register_death()
    claim_name(client, NAME, wait=0)
    assert registration(client, NAME).stopped


def test_a_holder_keeping_its_heartbeat_keeps_its_name(client):
    register(client, overdue=STALE_GRACE - 5)
    with pytest.raises(WorkerNameTakenError, match="elsewhere") as caught:
        claim_name(client, NAME, wait=0)
    assert "--name" in str(caught.value)
    assert registration(client, NAME).alive  # untouched


def test_an_overdue_holder_is_taken_over_and_its_running_job_failed(client):
    worker = register(client)
    job = start_a_job(client, worker)
    age(client, STALE_GRACE + 5)  # then it died: no beat since
    claim_name(client, NAME, wait=0)
    assert registration(client, NAME).stopped  # RQ will let the new worker register
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert job.id in FailedJobRegistry("reaper-linux", connection=client)
    assert StartedJobRegistry("reaper-linux", connection=client).count == 0


def test_a_holder_whose_pid_is_gone_from_this_host_is_taken_over_at_once(client):
    register(client, host=socket.gethostname(), pid=a_pid_that_is_gone())
    claim_name(client, NAME, wait=0)  # its heartbeat is fresh: only the pid tells
    assert registration(client, NAME).stopped


def test_a_registration_under_this_very_pid_is_an_earlier_life_of_this_process(client):
    register(client, host=socket.gethostname(), pid=os.getpid())
    claim_name(client, NAME, wait=0)
    assert registration(client, NAME).stopped


def test_a_holder_that_stops_beating_while_we_wait_is_taken_over(client):
    register(client, overdue=STALE_GRACE - 1)  # overdue in about a second
    claim_name(client, NAME, wait=15)
    assert registration(client, NAME).stopped


def test_the_beat_keeps_the_promise_short_and_never_revives_a_dead_registration(client):
    worker = register(client)
    client.expire(KEY, 400)  # RQ's own long promise (a job's limit)
    beat = RqBeat(client, NAME)
    assert beat.beat()
    assert registration(client, NAME).overdue == pytest.approx(-BEAT_PROMISE, abs=1.5)
    worker.register_death()
    assert not beat.beat()
    assert registration(client, NAME).stopped
    client.delete(KEY)
    assert not beat.beat()
    assert not client.exists(KEY)  # not recreated as a half registration
