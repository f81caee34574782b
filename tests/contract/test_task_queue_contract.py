"""TaskQueue contract: one FIFO per agent type, blocking consume, dedup, discard, dead letters."""

from __future__ import annotations

import json
import threading
import time

from reaper_engine import SCHEMA_VERSION
from reaper_engine.models import OS, Action, AgentType
from tests.contract.conftest import PROMPT, between_calls
from tests.factories import host_spec, make_task

LINUX = AgentType.LINUX
WINDOWS = AgentType.WINDOWS
MACOS = AgentType.MACOS

BLOCKED = 0.1  # how long a consume must stay blocked to count as "waiting"
# A consume must return within this of the publish or interrupt that wakes it: far above a
# real wake-up (milliseconds), far below what a consume that polls on a timer would take.
WAKE = 1.0


def linux_task(task_id: str, **kw):
    return make_task(Action.SCAN, host=host_spec("lin1"), task_id=task_id, **kw)


def windows_task(task_id: str, **kw):
    return make_task(Action.SCAN, host=host_spec("win1", OS.WINDOWS), task_id=task_id, **kw)


def drain(queue, agent_type: AgentType) -> list[str]:
    out = []
    while (task := queue.consume(agent_type, timeout=0)) is not None:
        out.append(task.task_id)
    return out


# -- FIFO and isolation ---------------------------------------------------------------------


def test_consume_is_fifo_per_agent_type(task_queue):
    for n in range(5):
        assert task_queue.publish(linux_task(f"t{n}")) is True
    assert drain(task_queue, LINUX) == ["t0", "t1", "t2", "t3", "t4"]


def test_consumed_task_round_trips_intact(task_queue):
    task = linux_task("t1", params={"approved": []}, dry_run=True, attempt=2)
    task_queue.publish(task)
    assert task_queue.consume(LINUX, timeout=1) == task


def test_agent_types_are_isolated(task_queue):
    task_queue.publish(linux_task("l1"))
    task_queue.publish(windows_task("w1"))
    task_queue.publish(linux_task("l2"))

    assert task_queue.size(LINUX) == 2
    assert task_queue.size(WINDOWS) == 1
    assert task_queue.size(MACOS) == 0
    assert task_queue.consume(MACOS, timeout=0) is None
    assert drain(task_queue, WINDOWS) == ["w1"]
    assert drain(task_queue, LINUX) == ["l1", "l2"]


def test_size_tracks_publish_and_consume(task_queue):
    assert task_queue.size(LINUX) == 0
    task_queue.publish(linux_task("t1"))
    task_queue.publish(linux_task("t2"))
    assert task_queue.size(LINUX) == 2
    task_queue.consume(LINUX, timeout=0)
    assert task_queue.size(LINUX) == 1
    task_queue.consume(LINUX, timeout=0)
    assert task_queue.size(LINUX) == 0


def test_each_task_goes_to_exactly_one_of_concurrent_consumers(task_queue, background):
    ids = [f"t{n}" for n in range(40)]
    consumers = [
        background(lambda: _consume_until_idle(task_queue, LINUX, idle=0.5)) for _ in range(4)
    ]
    for task_id in ids:
        task_queue.publish(linux_task(task_id))
    got = [task_id for c in consumers for task_id in c.result(10)]
    assert sorted(got) == sorted(ids)  # none lost, none delivered twice


def _consume_until_idle(queue, agent_type: AgentType, idle: float) -> list[str]:
    out = []
    while (task := queue.consume(agent_type, timeout=idle)) is not None:
        out.append(task.task_id)
    return out


# -- blocking -------------------------------------------------------------------------------


def test_consume_on_empty_queue_returns_none_after_timeout(task_queue, background):
    call = background(lambda: task_queue.consume(LINUX, timeout=0.2))
    assert call.result(PROMPT) is None
    assert call.elapsed is not None
    assert call.elapsed >= 0.15  # it did wait (allowing for clock granularity)


def test_consume_with_zero_timeout_does_not_block(task_queue, background):
    call = background(lambda: task_queue.consume(LINUX, timeout=0))
    assert call.result(PROMPT) is None


def test_blocked_consume_wakes_on_publish_from_another_thread(task_queue, background):
    task = linux_task("t1")
    call = background(lambda: task_queue.consume(LINUX, timeout=10))
    assert not call.done.wait(BLOCKED), "consume returned before anything was published"

    published_at = time.monotonic()
    assert task_queue.publish(task)

    assert call.result(PROMPT) == task
    assert call.since(published_at) < WAKE


def test_publish_for_another_agent_type_does_not_satisfy_a_blocked_consume(task_queue, background):
    call = background(lambda: task_queue.consume(WINDOWS, timeout=0.5))
    assert not call.done.wait(BLOCKED)
    task_queue.publish(linux_task("l1"))
    assert call.result(PROMPT) is None
    assert task_queue.size(LINUX) == 1


def test_interrupt_releases_a_blocked_consume_promptly(task_queue, background):
    call = background(lambda: task_queue.consume(LINUX, timeout=10))
    assert not call.done.wait(BLOCKED)

    interrupted_at = time.monotonic()
    task_queue.interrupt()

    assert call.result(PROMPT) is None
    assert call.since(interrupted_at) < WAKE


def test_interrupt_releases_every_blocked_consumer(task_queue, background):
    calls = [background(lambda a=a: task_queue.consume(a, timeout=10)) for a in AgentType]
    assert not any(c.done.wait(BLOCKED) for c in calls)
    task_queue.interrupt()
    assert [c.result(PROMPT) for c in calls] == [None, None, None]


def test_queue_still_works_after_interrupt(task_queue):
    task_queue.interrupt()
    task_queue.publish(linux_task("t1"))
    task = task_queue.consume(LINUX, timeout=1)
    assert task is not None
    assert task.task_id == "t1"


# -- interrupt is sticky: a consume that starts after it does not wait ------------------------


def _between_consumes(queue, agent_type: AgentType, between: threading.Event, go: threading.Event):
    return between_calls(lambda t: queue.consume(agent_type, timeout=t), between, go)


def test_an_interrupt_fired_before_a_consume_starts_still_releases_it(task_queue, background):
    between, go = threading.Event(), threading.Event()
    call = background(_between_consumes(task_queue, LINUX, between, go))
    assert between.wait(PROMPT)

    task_queue.interrupt()  # the consumer is not blocked: it is between two consumes
    go.set()

    task, took = call.result(PROMPT)
    assert task is None
    assert took < WAKE  # it did not wait out its 10 s


def test_a_consume_after_an_interrupt_still_takes_a_queued_task(task_queue):
    task_queue.interrupt()
    task_queue.publish(linux_task("t1"))
    began = time.monotonic()
    task = task_queue.consume(LINUX, timeout=10)
    assert task is not None
    assert task.task_id == "t1"
    assert time.monotonic() - began < WAKE


def test_an_interrupt_releases_one_consume_per_thread_then_consumes_wait_again(task_queue):
    task_queue.consume(LINUX, timeout=0)  # this thread's consumes so far saw no interrupt
    task_queue.interrupt()
    task_queue.interrupt()  # two before the next consume count as one

    began = time.monotonic()
    assert task_queue.consume(LINUX, timeout=10) is None
    assert time.monotonic() - began < WAKE

    began = time.monotonic()
    assert task_queue.consume(LINUX, timeout=0.2) is None
    assert time.monotonic() - began >= 0.15  # waits again: the interrupt was used up


def test_one_interrupt_reaches_blocked_and_not_yet_blocked_consumers_alike(task_queue, background):
    blocked = [background(lambda a=a: task_queue.consume(a, timeout=10)) for a in AgentType]
    assert not any(c.done.wait(BLOCKED) for c in blocked)
    gates = [(threading.Event(), threading.Event()) for _ in range(3)]
    between = [background(_between_consumes(task_queue, LINUX, b, g)) for b, g in gates]
    assert all(b.wait(PROMPT) for b, _ in gates)

    task_queue.interrupt()
    for _, go in gates:
        go.set()

    assert [c.result(PROMPT) for c in blocked] == [None, None, None]
    results = [c.result(PROMPT) for c in between]
    assert [task for task, _ in results] == [None, None, None]
    assert all(took < WAKE for _, took in results)


# -- deduplication --------------------------------------------------------------------------


def test_duplicate_publish_of_a_queued_task_is_refused_and_delivered_once(task_queue):
    task = linux_task("t1")
    assert task_queue.publish(task) is True
    assert task_queue.publish(task) is False
    assert task_queue.size(LINUX) == 1
    assert drain(task_queue, LINUX) == ["t1"]


def test_same_id_with_other_content_is_still_a_duplicate(task_queue):
    assert task_queue.publish(linux_task("t1"))
    assert task_queue.publish(linux_task("t1", dry_run=True)) is False
    consumed = task_queue.consume(LINUX, timeout=0)
    assert consumed is not None
    assert consumed.dry_run is False  # the first one won
    assert task_queue.consume(LINUX, timeout=0) is None


def test_publish_many_counts_newly_queued_tasks(task_queue):
    task_queue.publish(linux_task("t0"))
    batch = [linux_task("t0"), linux_task("t1"), linux_task("t2"), linux_task("t1")]
    batch.append(windows_task("w1"))
    assert task_queue.publish_many(batch) == 3  # t1, t2, w1
    assert drain(task_queue, LINUX) == ["t0", "t1", "t2"]
    assert drain(task_queue, WINDOWS) == ["w1"]


def test_publish_many_keeps_each_queues_order_around_duplicates(task_queue):
    assert task_queue.publish_many([linux_task("l2"), windows_task("w2")]) == 2
    macos = [
        make_task(Action.SCAN, host=host_spec("mac1", OS.MACOS), task_id=f"m{n}") for n in (1, 2)
    ]
    batch = [linux_task("l1"), windows_task("w1"), macos[0], linux_task("l2"), windows_task("w2")]
    batch += [linux_task("l3"), macos[1], windows_task("w3"), linux_task("l1"), linux_task("l4")]
    assert task_queue.publish_many(batch) == 7  # l1, w1, m1, l3, m2, w3, l4
    assert drain(task_queue, LINUX) == ["l2", "l1", "l3", "l4"]
    assert drain(task_queue, WINDOWS) == ["w2", "w1", "w3"]
    assert drain(task_queue, MACOS) == ["m1", "m2"]


def test_publish_many_of_nothing_is_zero(task_queue):
    assert task_queue.publish_many([]) == 0


# -- discard --------------------------------------------------------------------------------


def test_discard_removes_queued_tasks_only(task_queue):
    for task_id in ("t1", "t2", "t3"):
        task_queue.publish(linux_task(task_id))
    task_queue.publish(windows_task("w1"))
    taken = task_queue.consume(LINUX, timeout=0)
    assert taken is not None
    assert taken.task_id == "t1"

    # t1 was taken by an agent: not removable. "nope" never existed.
    assert task_queue.discard(["t1", "t2", "w1", "nope"]) == 2

    assert task_queue.size(LINUX) == 1
    assert task_queue.size(WINDOWS) == 0
    assert drain(task_queue, LINUX) == ["t3"]


def test_discard_of_nothing_is_zero(task_queue):
    task_queue.publish(linux_task("t1"))
    assert task_queue.discard([]) == 0
    assert task_queue.size(LINUX) == 1


def test_discarded_id_may_be_published_again(task_queue):
    task_queue.publish(linux_task("t1"))
    assert task_queue.discard(["t1"]) == 1
    assert task_queue.publish(linux_task("t1")) is True
    assert drain(task_queue, LINUX) == ["t1"]


# -- dead letters ---------------------------------------------------------------------------


def test_malformed_payloads_are_dead_lettered_and_the_next_task_delivered(
    task_queue, inject_raw_task
):
    not_json = "this is {not json"
    wrong_shape = json.dumps({"task_id": 7, "hello": "world"})
    inject_raw_task(LINUX, not_json)
    inject_raw_task(LINUX, wrong_shape)
    task_queue.publish(linux_task("good"))

    task = task_queue.consume(LINUX, timeout=1)

    assert task is not None
    assert task.task_id == "good"
    dead = task_queue.dead_letters(LINUX)
    assert [d.payload for d in dead] == [not_json, wrong_shape]
    assert all(d.error for d in dead)
    assert all(LINUX.value in d.source for d in dead)
    assert task_queue.dead_letters(WINDOWS) == []


def test_only_malformed_payloads_yield_none_not_an_exception(task_queue, inject_raw_task):
    inject_raw_task(LINUX, "")
    inject_raw_task(LINUX, "[1, 2, 3]")
    assert task_queue.consume(LINUX, timeout=0) is None
    assert len(task_queue.dead_letters(LINUX)) == 2


def test_task_from_a_newer_schema_is_dead_lettered(task_queue, inject_raw_task):
    doc = json.loads(linux_task("future").model_dump_json())
    doc["schema_version"] = SCHEMA_VERSION + 1
    inject_raw_task(LINUX, json.dumps(doc))
    task_queue.publish(linux_task("now"))

    task = task_queue.consume(LINUX, timeout=1)

    assert task is not None
    assert task.task_id == "now"
    [dead] = task_queue.dead_letters(LINUX)
    assert "schema_version" in dead.error


def test_malformed_payload_wakes_a_blocked_consumer_which_keeps_waiting(
    task_queue, inject_raw_task, background
):
    call = background(lambda: task_queue.consume(LINUX, timeout=10))
    assert not call.done.wait(BLOCKED)
    inject_raw_task(LINUX, "garbage")
    # the garbage is dead-lettered, the consumer keeps waiting and gets the next valid task
    assert not call.done.wait(BLOCKED)
    task_queue.publish(linux_task("good"))
    task = call.result(PROMPT)
    assert task is not None
    assert task.task_id == "good"
    assert [d.payload for d in task_queue.dead_letters(LINUX)] == ["garbage"]
