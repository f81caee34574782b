"""``run_worker`` in this process on a real redis-server: what RQ alone would get wrong.

Each test runs the worker in burst mode (it returns once the queue is empty) or makes it stop
by itself; RQ's signal handlers are put back afterwards, so pytest's own stay in force.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from rq import SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import UnixSignalDeathPenalty
from structlog.testing import capture_logs

from infra.config_files import LoadedConfig
from infra.redis.connection import DEFAULT_SOCKET_TIMEOUT
from infra.redis.queue import RqTaskQueue
from overseer.fleet.setup import FleetSetup, RedisPorts, open_redis_ports
from overseer.fleet.worker import (
    DEADLINE_GRACE,
    WorkerFailedError,
    job_time_limit,
    run_worker,
)
from reaper_engine.clock import ManualClock, SystemClock
from reaper_engine.config import ReaperConfig
from reaper_engine.models import Action, AgentType, ResultEvent
from reaper_engine.signing import TaskSigner
from tests.factories import host_spec, make_task
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

LINUX = AgentType.LINUX
SECRET = b"worker-guard-test-secret-0123456789"


@pytest.fixture(autouse=True)
def _restore_signal_handlers() -> Iterator[None]:
    """RQ's work loop installs its own SIGINT/SIGTERM handlers in this process."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def ports(redis_server: RedisServer) -> Iterator[RedisPorts]:
    setup = FleetSetup(redis_url=redis_server.url, prefix="reaper", signer=TaskSigner(SECRET))
    opened = open_redis_ports(setup)
    opened.client.flushdb()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def work(ports: RedisPorts, redis_server: RedisServer, tmp_path: Path):
    """``work(**kw)``: run_worker for the linux queue with a test config and audit log."""
    setup = FleetSetup(redis_url=redis_server.url, prefix="reaper", signer=TaskSigner(SECRET))
    loaded = LoadedConfig(config=ReaperConfig(), sources=(), user_file=None)
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}

    def run(**kw) -> int:
        kw.setdefault("burst", True)
        kw.setdefault("name", "worker-test")
        return run_worker(LINUX, setup, ports, loaded, env=env, **kw)

    return run


def now_task(task_id: str, timeout: float = 60.0, **kw):
    return make_task(Action.SCAN, task_id=task_id, now=SystemClock().now(), timeout=timeout, **kw)


def results(ports: RedisPorts, mission_id: str = "m1") -> list[ResultEvent]:
    raw = ports.client.xrange(ports.bus.stream_key(mission_id))
    return [ResultEvent.model_validate_json(fields[b"event"]) for _, fields in raw]


def dead_errors(ports: RedisPorts) -> list[str]:
    return [d.error for d in ports.queue.dead_letters(LINUX)]


def corrupt_copy(client: redis.Redis, good_id: str, bad_id: str, **fields: str) -> None:
    """A job hash copied from a good one with some fields spoiled, listed on the queue."""
    raw = client.hgetall(f"rq:job:{good_id}")
    raw.update({k.encode(): v.encode() for k, v in fields.items()})
    client.hset(f"rq:job:{bad_id}", mapping=raw)
    client.lpush("rq:queue:reaper-linux", bad_id)  # ahead of the good job


# -- 1. jobs RQ cannot load ------------------------------------------------------------------


@pytest.mark.parametrize(
    "spoiled", [{"status": "bogus"}, {"created_at": "not a date"}, {"timeout": "soon"}]
)
def test_a_job_hash_rq_cannot_load_is_dead_lettered_and_the_job_behind_it_runs(
    ports, work, spoiled
):
    good = now_task("good-1")
    ports.queue.publish(good)
    corrupt_copy(ports.client, "good-1", "bad-1", **spoiled)

    assert work() == 1

    assert [r.task_id for r in results(ports)] == ["good-1"]
    [error] = dead_errors(ports)
    assert error.startswith("JOB_MALFORMED"), error
    [dead] = ports.queue.dead_letters(LINUX)
    assert json.loads(dead.payload)[next(iter(spoiled))] == next(iter(spoiled.values()))
    assert not ports.client.exists("rq:job:bad-1")
    assert ports.client.llen("rq:queue:reaper-linux:intermediate") == 0
    assert ports.queue.size(LINUX) == 0


def test_an_id_with_no_job_behind_it_is_dead_lettered(ports, work):
    ports.queue.publish(now_task("good-1"))
    ports.client.lpush("rq:queue:reaper-linux", "no-such-job")

    assert work() == 1

    assert [r.task_id for r in results(ports)] == ["good-1"]
    [dead] = ports.queue.dead_letters(LINUX)
    assert dead.error.startswith("JOB_MISSING")
    assert dead.payload == "no-such-job"
    assert ports.client.llen("rq:queue:reaper-linux:intermediate") == 0


def test_a_job_with_other_arguments_is_refused_not_run(ports, work):
    queue = ports.queue.rq_queue(LINUX)
    queue.enqueue("agents.rq_job.run_task", "a", "b")  # two arguments: not our job's shape
    assert work() == 0
    [error] = dead_errors(ports)
    assert error.startswith("JOB_REFUSED: job arguments")


def test_a_work_loop_that_ends_on_a_bug_is_reported(ports, work, monkeypatch):
    def broken(self, job, queue):
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(SimpleWorker, "execute_job", broken)
    ports.queue.publish(now_task("t1"))
    with pytest.raises(WorkerFailedError, match="a bug in the worker"):
        work(burst=False)


# -- 3. Redis errors outside RQ's dequeue ----------------------------------------------------


def test_a_redis_error_that_ends_the_work_loop_is_ridden_out(ports, work, monkeypatch):
    real = SimpleWorker.check_for_suspension
    failures = iter([redis.exceptions.ConnectionError("Redis went away")])

    def flaky(self, burst):
        for err in failures:  # once
            raise err
        return real(self, burst)

    monkeypatch.setattr(SimpleWorker, "check_for_suspension", flaky)
    ports.queue.publish(now_task("t1"))
    with capture_logs() as logs:
        assert work() == 1  # the task queued behind the failure: run by the next work loop
    assert "worker_redis_lost" in [e["event"] for e in logs]
    assert [r.task_id for r in results(ports)] == ["t1"]


# -- 4. the ports' client keeps its timeout --------------------------------------------------


def test_rq_gets_a_client_of_its_own_and_the_ports_keep_their_socket_timeout(ports, work):
    # One client serves the bus, the queue, the store, leases and heartbeats.
    pool = ports.client.connection_pool
    work()
    assert pool.connection_kwargs["socket_timeout"] == DEFAULT_SOCKET_TIMEOUT


# -- 5. each task id runs once ---------------------------------------------------------------


def test_a_finished_job_pushed_again_does_not_run_again(ports, work):
    ports.queue.publish(now_task("t1"))
    assert work() == 1
    ports.client.rpush("rq:queue:reaper-linux", "t1")  # the job hash keeps its result
    with capture_logs() as logs:
        assert work() == 0
    assert [r.task_id for r in results(ports)] == ["t1"]  # one result only
    assert "task_duplicate_skipped" in [e["event"] for e in logs]


# -- 6. the job's time limit is the task's deadline ------------------------------------------


def test_job_time_limit_is_the_time_left_plus_grace_never_more_than_queued():
    assert job_time_limit(130, 30.0) == 30 + DEADLINE_GRACE
    assert job_time_limit(130, 29.2) == 32  # whole seconds, rounded up
    assert job_time_limit(10, 30.0) == 10  # never longer than it was queued with
    assert job_time_limit(None, 5.0) == 5 + DEADLINE_GRACE
    assert job_time_limit(-1, 5.0) == 5 + DEADLINE_GRACE  # RQ's "no limit"
    assert job_time_limit(130, -50.0) == 1  # expired: just long enough to say so
    assert job_time_limit(130, None) == 130  # no deadline to read: as queued


def queued_long_ago(ports: RedisPorts, waited: float, timeout: float, **kw) -> str:
    """Publish a task as if ``waited`` seconds ago: its RQ timeout was ``timeout`` then."""
    now = SystemClock().now()
    then = now - timedelta(seconds=waited)
    task = make_task(Action.SCAN, task_id="late-1", now=then, timeout=timeout, **kw)
    queue = RqTaskQueue(ports.client, TaskSigner(SECRET), ManualClock(then))
    assert queue.publish(task)
    assert Job.fetch("late-1", ports.client, serializer=JSONSerializer).timeout == timeout
    return task.task_id


def test_a_job_that_waited_in_the_queue_runs_only_until_its_deadline(ports, work, monkeypatch):
    limits: list[int] = []
    real = UnixSignalDeathPenalty.setup_death_penalty

    def recording(self):
        limits.append(self._timeout)
        real(self)

    monkeypatch.setattr(UnixSignalDeathPenalty, "setup_death_penalty", recording)
    queued_long_ago(ports, waited=100, timeout=130)  # 30 s left of 130
    assert work() == 1
    [limit] = limits
    assert 30 <= limit <= 30 + DEADLINE_GRACE + 1


@pytest.mark.slow
def test_a_handler_still_running_at_its_deadline_is_stopped_and_reported(ports, work):
    slow = host_spec(options={"latency_seconds": 20})  # each call to the host takes 20 s
    queued_long_ago(ports, waited=100, timeout=101, host=slow)  # 1 s left of 101
    assert work() == 1
    [result] = results(ports)
    assert (result.error_code, result.retriable) == ("DEADLINE_EXCEEDED", True)
    # The limit was the deadline (+ grace), not the 101 s it was queued with; the result
    # was published after the limit ended, so the alarm could not cut it short.
    assert FailedJobRegistry("reaper-linux", connection=ports.client).count == 0
