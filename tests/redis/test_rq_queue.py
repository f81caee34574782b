"""RqTaskQueue beyond the port contract: RQ job shape, JSON only, dedupe races, foreign jobs."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable
from datetime import timedelta

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from infra.redis.connection import connect
from infra.redis.keys import RedisKeys, job_id_for
from infra.redis.queue import JOB_FUNCTION, RUN_CLAIM_MARGIN, RqTaskQueue
from infra.redis.rq_jobs import PUSH_CHUNK
from reaper_engine.clock import ManualClock, SystemClock
from reaper_engine.models import OS, Action, AgentType
from reaper_engine.signing import TaskSigner
from tests.factories import T0, host_spec, make_task
from tests.integration.conftest import wait_until

LINUX = AgentType.LINUX
PREFIX = "reaper-test"


def task(task_id: str, host: str = "lin1", **kw):
    return make_task(Action.SCAN, host=host_spec(host), task_id=task_id, **kw)


def queue_on(client: redis.Redis, signer: TaskSigner, clock=None) -> RqTaskQueue:
    return RqTaskQueue(client, signer, clock or ManualClock(T0), prefix=PREFIX)


def push_job_id(queue: RqTaskQueue, job_id: str) -> None:
    """What a foreign writer can do: put any id on the queue's list."""
    queue.rq_queue(LINUX).connection.rpush(queue.rq_queue(LINUX).key, job_id)


# -- the jobs we write ----------------------------------------------------------------------


@pytest.mark.redis
def test_publish_many_lands_a_thousand_json_jobs_in_one_round_trip(
    redis_client, signer, monkeypatch
):
    queue = queue_on(redis_client, signer)
    tasks = [task(f"t{n:04d}", timeout=90) for n in range(1000)]

    trips = count_round_trips(monkeypatch)
    assert queue.publish_many(tasks) == 1000
    # One script call; the first on a server that lacks the script is refused with
    # NOSCRIPT, which redis-py answers with SCRIPT LOAD and the call again.
    assert trips() <= 3
    before = trips()
    tasks.append(task("t1000", timeout=90))
    assert queue.publish_many([tasks[-1], tasks[0]]) == 1
    assert trips() == before + 1

    listed = [i.decode() for i in redis_client.lrange(queue.rq_queue(LINUX).key, 0, -1)]
    assert listed == [t.task_id for t in tasks]  # job ids are task ids, in publish order
    assert queue.size(LINUX) == 1001
    for sample in (tasks[0], tasks[499], tasks[-1]):
        raw = redis_client.hgetall(f"rq:job:{sample.task_id}")
        data = zlib.decompress(raw[b"data"])  # RQ compresses job data; the text inside is JSON
        assert not data.startswith(b"\x80")  # not a pickle
        func, instance, args, kwargs = json.loads(data)
        assert (func, instance, kwargs) == (JOB_FUNCTION, None, {})
        [envelope] = args
        assert signer.open(envelope, T0) == sample
        assert raw[b"origin"] == b"reaper-linux"
        assert raw[b"timeout"] == b"90"  # seconds until the deadline
        assert raw[b"description"] == f"scan lin1 ({sample.mission_id})".encode()
        assert int(raw[b"result_ttl"]) == 3600
        assert int(raw[b"failure_ttl"]) == 86400


def test_the_envelope_is_the_json_of_its_three_fields_byte_for_byte(signer):
    """seal() writes the envelope text itself; it must stay what json.dumps made."""
    for sealer in (signer, TaskSigner(None)):
        # Text that JSON escapes, inside text that JSON escapes again.
        sample = task("t1", params={"note": 'é "quoted" \\ </tag>\n'})
        envelope = sealer.seal(sample)
        doc = json.loads(envelope)
        assert envelope == json.dumps({"v": 1, "task": sample.model_dump_json(), "sig": doc["sig"]})
        assert sealer.open(envelope, T0) == sample


def test_a_batch_longer_than_one_push_lands_whole_and_in_order(any_client, signer):
    queue = queue_on(any_client, signer)
    tasks = [
        make_task(
            Action.SCAN,
            host=host_spec(f"h{n}", OS.MACOS if n % 7 else OS.LINUX),
            task_id=f"t{n:05d}",
        )
        for n in range(PUSH_CHUNK * 2 + 500)
    ]
    assert queue.publish_many(tasks) == len(tasks)
    for agent_type in (LINUX, AgentType.MACOS):
        rq_queue = queue.rq_queue(agent_type)
        listed = [i.decode() for i in any_client.lrange(rq_queue.key, 0, -1)]
        assert listed == [t.task_id for t in tasks if t.agent_type is agent_type]
    assert queue.publish_many(tasks) == 0


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count commands sent alone plus pipelines executed, from now on."""
    trips = 0
    real_command = redis.Redis.execute_command
    real_pipeline = redis.client.Pipeline.execute

    def command(self, *args, **kwargs):
        nonlocal trips
        trips += 1
        return real_command(self, *args, **kwargs)

    def pipeline(self, *args, **kwargs):
        nonlocal trips
        trips += 1
        return real_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline)
    return lambda: trips


def test_job_timeout_is_the_time_left_until_the_deadline(any_client, signer):
    clock = ManualClock(T0)
    queue = queue_on(any_client, signer, clock)
    queue.publish(task("soon", timeout=10.2))
    queue.publish(task("late", timeout=7200))
    clock.advance(3600 * 5)
    queue.publish(task("gone", timeout=1))  # already past its deadline: still at least 1 s
    timeouts = {
        job_id: Job.fetch(job_id, connection=any_client, serializer=JSONSerializer).timeout
        for job_id in ("soon", "late", "gone")
    }
    assert timeouts == {"soon": 11, "late": 7200, "gone": 1}


def test_a_task_id_rq_refuses_gets_a_stable_job_id_and_still_round_trips(any_client, signer):
    queue = queue_on(any_client, signer)
    dotted = task("scan-web1.lab-3f2a", host="web1.lab")
    other = task("scan-web1_lab-3f2a", host="web1_lab")  # RQ-safe, and must not collide
    assert queue.publish(dotted)
    assert queue.publish(other)
    assert queue.publish(dotted) is False
    assert job_id_for(dotted.task_id) != dotted.task_id
    assert job_id_for(dotted.task_id) != job_id_for(other.task_id)
    assert queue.consume(LINUX, timeout=1) == dotted
    assert queue.discard([other.task_id]) == 1
    assert queue.size(LINUX) == 0


def test_consumed_jobs_and_their_guards_are_deleted(any_client, signer):
    queue = queue_on(any_client, signer)
    queue.publish(task("t1"))
    assert any_client.exists("rq:job:t1", RedisKeys(PREFIX).task_guard("t1")) == 2
    assert queue.consume(LINUX, timeout=1) is not None
    assert any_client.exists("rq:job:t1", RedisKeys(PREFIX).task_guard("t1")) == 0


def test_discard_deletes_the_job_and_its_guard(any_client, signer):
    queue = queue_on(any_client, signer)
    queue.publish_many([task("t1"), task("t2")])
    assert queue.discard(["t1", "t1", "missing"]) == 1
    assert any_client.exists("rq:job:t1", RedisKeys(PREFIX).task_guard("t1")) == 0
    assert any_client.exists("rq:job:t2") == 1


def test_a_job_still_in_rq_blocks_a_republish_even_without_its_guard(any_client, signer):
    queue = queue_on(any_client, signer)
    queue.publish(task("t1"))
    any_client.delete(RedisKeys(PREFIX).task_guard("t1"))  # e.g. the guard's TTL ran out
    assert queue.publish(task("t1")) is False
    assert queue.size(LINUX) == 1


# -- racing publishers ----------------------------------------------------------------------


@pytest.mark.redis
def test_duplicate_publish_across_two_queue_instances_racing_queues_each_task_once(
    new_client, signer
):
    queues = [queue_on(new_client(), signer) for _ in range(2)]
    tasks = [task(f"t{n}") for n in range(200)]
    start = threading.Barrier(4, timeout=10)
    published: list[int] = []
    errors: list[BaseException] = []

    def publisher(queue: RqTaskQueue, one_by_one: bool) -> None:
        try:
            start.wait()
            if one_by_one:
                published.append(sum(queue.publish(t) for t in tasks))
            else:
                published.append(queue.publish_many(tasks))
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [
        threading.Thread(target=publisher, args=(q, one_by_one), daemon=True)
        for q in queues
        for one_by_one in (True, False)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert sum(published) == len(tasks)  # every task queued by exactly one publisher
    listed = [i.decode() for i in new_client().lrange(queues[0].rq_queue(LINUX).key, 0, -1)]
    assert sorted(listed) == sorted(t.task_id for t in tasks)


# -- foreign and broken jobs ----------------------------------------------------------------


def test_garbage_job_hashes_are_dead_lettered_and_the_next_good_task_consumed(any_client, signer):
    queue = queue_on(any_client, signer)
    push_job_id(queue, "no-such-job")  # an id without a hash
    any_client.hset("rq:job:not-json", mapping={"data": b"{{{ not json", "origin": "reaper-linux"})
    push_job_id(queue, "not-json")
    any_client.hset("rq:job:no-data", mapping={"origin": "reaper-linux"})
    push_job_id(queue, "no-data")
    push_job_id(queue, "bad:id/with.chars")
    # RQ's default serializer is pickle: such a job is refused, never unpickled.
    Queue("reaper-linux", connection=any_client).enqueue_call(
        JOB_FUNCTION, args=["x"], job_id="pickled"
    )
    queue.publish(task("good"))

    got = queue.consume(LINUX, timeout=2)

    assert got is not None
    assert got.task_id == "good"
    dead = queue.dead_letters(LINUX)
    errors = [d.error for d in dead]
    assert len(dead) == 5
    assert errors[0] == "No such job: rq:job:no-such-job"
    assert errors[1].startswith("job data is not JSON")
    assert errors[2].startswith("Unexpected job format")
    assert errors[3] == "not an RQ job id"
    assert errors[4].startswith("job data is not JSON")  # pickle: never unpickled
    assert [d.payload for d in dead][::3] == ["no-such-job", "bad:id/with.chars"]
    assert all(d.source == "reaper-linux" for d in dead)
    assert queue.size(LINUX) == 0
    assert not any_client.exists("rq:job:not-json", "rq:job:no-data", "rq:job:pickled")


def test_jobs_calling_another_function_or_with_other_arguments_are_dead_lettered(
    any_client, signer
):
    queue = queue_on(any_client, signer)
    rq_queue = queue.rq_queue(LINUX)
    envelope = signer.seal(task("t1"))
    rq_queue.enqueue_call("os.system", args=[envelope], job_id="t1")
    rq_queue.enqueue_call(JOB_FUNCTION, args=[envelope, "extra"], job_id="two-args")
    rq_queue.enqueue_call(JOB_FUNCTION, args=[{"v": 1}], job_id="not-a-string")
    rq_queue.enqueue_call(JOB_FUNCTION, args=[envelope], kwargs={"x": 1}, job_id="kwargs")

    assert queue.consume(LINUX, timeout=0) is None

    errors = [d.error for d in queue.dead_letters(LINUX)]
    assert errors[0] == f"job calls 'os.system', not {JOB_FUNCTION}"
    assert errors[1:] == ["job arguments are not one envelope string"] * 3


def test_envelopes_the_signer_refuses_are_dead_lettered_with_the_code(any_client, signer):
    queue = queue_on(any_client, signer)
    rq_queue = queue.rq_queue(LINUX)
    forged = TaskSigner(b"another-secret-0123456789abcdef").seal(task("forged"))
    unsigned = TaskSigner(None).seal(task("unsigned"))
    rq_queue.enqueue_call(JOB_FUNCTION, args=[forged], job_id="forged")
    rq_queue.enqueue_call(JOB_FUNCTION, args=[unsigned], job_id="unsigned")
    # A genuine envelope copied into a job of another id would dodge the dedupe.
    rq_queue.enqueue_call(JOB_FUNCTION, args=[signer.seal(task("t9"))], job_id="copy-of-t9")

    assert queue.consume(LINUX, timeout=0) is None

    dead = queue.dead_letters(LINUX)
    assert [d.error.split(":")[0] for d in dead] == [
        "TASK_BAD_SIGNATURE",
        "TASK_UNSIGNED",
        "TASK_JOB_MISMATCH",
    ]
    assert dead[0].payload == forged


def test_an_authentic_expired_task_is_handed_out_for_the_agent_to_refuse(any_client, signer):
    clock = ManualClock(T0)
    queue = queue_on(any_client, signer, clock)
    stale = task("t1", timeout=60)
    queue.publish(stale)
    clock.advance(3600)
    assert queue.consume(LINUX, timeout=1) == stale  # as the in-memory queue does
    assert queue.dead_letters(LINUX) == []


def test_dead_letter_task_records_like_consume_and_is_capped(any_client, signer):
    queue = RqTaskQueue(any_client, signer, SystemClock(), prefix=PREFIX, dead_letter_cap=3)
    for n in range(5):
        queue.dead_letter_task(LINUX, f"payload {n}", f"error {n}")
    dead = queue.dead_letters(LINUX)
    assert [d.payload for d in dead] == ["payload 2", "payload 3", "payload 4"]  # oldest first
    assert dead[0].error == "error 2"
    assert dead[0].source == "reaper-linux"
    assert queue.dead_letters(AgentType.WINDOWS) == []


# -- blocking -------------------------------------------------------------------------------


@pytest.mark.redis
def test_a_wait_longer_than_the_socket_timeout_is_taken_in_slices(redis_server, signer):
    client = connect(redis_server.url, socket_timeout=0.4)
    client.flushdb()
    queue = queue_on(client, signer)
    began = time.monotonic()
    assert queue.consume(LINUX, timeout=1.0) is None  # no TimeoutError, no early return
    assert time.monotonic() - began >= 0.95

    got: list[object] = []
    consumer = threading.Thread(target=lambda: got.append(queue.consume(LINUX, timeout=5)))
    consumer.start()
    wait_blocked(client, 1)
    queue_on(client, signer).publish(task("late"))
    consumer.join(5)
    assert [t.task_id for t in got] == ["late"]  # type: ignore[attr-defined]
    client.close()


def wait_blocked(client: redis.Redis, count: int) -> None:
    """Wait until ``count`` clients are blocked in a command (INFO clients)."""
    wait_until(
        lambda: int(client.info("clients")["blocked_clients"]) >= count,
        timeout=5,
        what=f"{count} blocked consumer(s)",
    )


@pytest.mark.redis
def test_interrupt_reaches_consumers_of_every_thread_and_leaves_no_wake_keys(redis_client, signer):
    queue = queue_on(redis_client, signer)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda a=a: results.append(queue.consume(a, timeout=30)))
        for a in (*AgentType, LINUX)
    ]
    for t in threads:
        t.start()
    wait_blocked(redis_client, len(threads))
    began = time.monotonic()
    queue.interrupt()
    for t in threads:
        t.join(5)
    assert time.monotonic() - began < 2
    assert results == [None] * len(threads)
    assert redis_client.keys(f"{PREFIX}:wake:*") == []
    # and the next consume on those threads' keys waits normally
    queue.publish(task("after"))
    got = queue.consume(LINUX, timeout=1)
    assert got is not None
    assert got.task_id == "after"


def test_consume_for_a_windows_host_uses_the_windows_queue(any_client, signer):
    queue = queue_on(any_client, signer)
    win = make_task(Action.SCAN, host=host_spec("win1", OS.WINDOWS), task_id="w1")
    queue.publish(win)
    assert any_client.llen("rq:queue:reaper-windows") == 1
    assert queue.queue_name(AgentType.WINDOWS) == "reaper-windows"
    assert queue.rq_queue(AgentType.WINDOWS).name == "reaper-windows"
    assert queue.consume(AgentType.WINDOWS, timeout=0) == win


def test_a_failed_publish_leaves_no_guard_and_a_retry_goes_through(any_client, signer):
    """The script checks what could fail before it writes: a failed call claims nothing."""
    queue = queue_on(any_client, signer)
    any_client.set("rq:queue:reaper-windows", b"a foreign write")  # RPUSH would fail on it
    batch = [task("t1"), make_task(Action.SCAN, host=host_spec("win1", OS.WINDOWS), task_id="w1")]
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        queue.publish_many(batch)
    assert any_client.keys(f"{PREFIX}:task:*") == []
    assert any_client.keys("rq:job:*") == []
    assert queue.size(LINUX) == 0

    any_client.delete("rq:queue:reaper-windows")
    assert queue.publish_many(batch) == 2


def test_a_publish_the_client_sent_twice_counts_and_queues_its_tasks_once(any_client, signer):
    """redis-py resends a command whose reply it lost: the second run finds its own guards."""
    queue = queue_on(any_client, signer)
    script = queue._writer._script

    def sent_twice(*args, **kwargs):
        script(*args, **kwargs)
        return script(*args, **kwargs)

    queue._writer._script = sent_twice
    assert queue.publish_many([task("t1"), task("t2")]) == 2
    assert queue.size(LINUX) == 2
    assert queue.publish_many([task("t1"), task("t3")]) == 1  # another call: t1 is taken


def test_a_publish_whose_reply_was_lost_is_a_duplicate_when_tried_again(any_client, signer):
    """Sent, run, reply lost: the caller retries and must not queue the task twice."""
    queue = queue_on(any_client, signer)
    run_then_lose_the_reply = queue._writer._script

    def lossy(*args, **kwargs):
        run_then_lose_the_reply(*args, **kwargs)
        raise redis.exceptions.ConnectionError("reply lost")

    queue._writer._script = lossy
    with pytest.raises(redis.exceptions.ConnectionError):
        queue.publish(task("t1"))
    queue._writer._script = run_then_lose_the_reply
    assert queue.publish(task("t1")) is False
    assert queue.size(LINUX) == 1


def test_expiry_arithmetic_uses_the_queue_clock(any_client, signer):
    clock = ManualClock(T0 - timedelta(seconds=30))
    queue = queue_on(any_client, signer, clock)
    queue.publish(task("t1", timeout=60))
    job = Job.fetch("t1", connection=any_client, serializer=JSONSerializer)
    assert job.timeout == 90
    ttl = any_client.ttl(RedisKeys(PREFIX).task_guard("t1"))
    assert 90 + 3600 - 5 <= ttl <= 90 + 3600


# -- the worker's side: run claims and refused jobs ---------------------------------------


def test_a_task_is_claimed_for_one_run_until_shortly_after_its_deadline(any_client, signer):
    queue = queue_on(any_client, signer)  # the queue's clock is T0; the task ends at T0 + 60
    t1 = task("t1", timeout=60)
    assert queue.claim_run(t1, "worker-a:run-1") is True
    assert queue.claim_run(t1, "worker-b:run-2") is False  # a second run of the same id
    # The client retried a SET whose reply it lost: the claim it finds is its own.
    assert queue.claim_run(t1, "worker-a:run-1") is True
    key = RedisKeys(PREFIX).task_ran("t1")
    assert any_client.get(key) == b"worker-a:run-1"
    assert 60 + RUN_CLAIM_MARGIN - 5 <= any_client.ttl(key) <= 60 + RUN_CLAIM_MARGIN
    assert queue.claim_run(task("t2", timeout=60), "worker-b:run-3") is True  # ids apart


def test_dead_letter_job_records_the_raw_hash_and_removes_the_job(any_client, signer):
    queue = queue_on(any_client, signer)
    any_client.hset("rq:job:bad-1", mapping={"status": "bogus", "origin": "reaper-linux"})
    intermediate = queue.rq_queue(LINUX).intermediate_queue_key
    any_client.rpush(intermediate, "bad-1")  # where RQ's dequeue moved it
    queue.dead_letter_job(LINUX, "bad-1", "JOB_MALFORMED: status")
    [dead] = queue.dead_letters(LINUX)
    assert dead.error == "JOB_MALFORMED: status"
    assert json.loads(dead.payload) == {"status": "bogus", "origin": "reaper-linux"}
    assert not any_client.exists("rq:job:bad-1")
    assert any_client.llen(intermediate) == 0


def test_dead_letter_job_never_touches_the_job_a_foreign_id_points_at(any_client, signer):
    queue = queue_on(any_client, signer)
    queue.publish(task("t1"))
    queue.dead_letter_job(LINUX, "t1:x", "JOB_MISSING")  # RQ would read it as job "t1"
    assert any_client.exists("rq:job:t1")
    assert [d.payload for d in queue.dead_letters(LINUX)] == ["t1:x"]
