"""EventBus contract: per-mission streams, at-least-once with ack, claim_stale, dead letters."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from reaper_engine import SCHEMA_VERSION
from reaper_engine.models import Action, ResultEvent, ResultStatus
from tests.contract.conftest import PROMPT, between_calls
from tests.factories import make_task, result_for

BLOCKED = 0.1
# A read must return within this of the publish or interrupt that wakes it: far above a real
# wake-up (milliseconds), far below what a read that polls on a timer would take.
WAKE = 1.0


def event(task_id: str, mission_id: str = "m1", attempt: int = 1, **kw) -> ResultEvent:
    task = make_task(Action.SCAN, mission_id=mission_id, task_id=task_id, attempt=attempt)
    return result_for(task, ResultStatus.SUCCESS, summary=f"done {task_id}", **kw)


def ids(deliveries) -> list[str]:
    return [d.event.task_id for d in deliveries]


# -- reading --------------------------------------------------------------------------------


def test_read_returns_events_in_publish_order(event_bus):
    for n in range(5):
        event_bus.publish(event(f"t{n}"))
    got = event_bus.read("m1", timeout=1)
    assert ids(got) == ["t0", "t1", "t2", "t3", "t4"]
    assert all(d.mission_id == "m1" for d in got)
    assert all(d.deliveries == 1 for d in got)
    assert len({d.delivery_id for d in got}) == 5


def test_event_round_trips_intact(event_bus):
    sent = event("t1", data={"findings": [], "processes_scanned": 3}, attempt=2)
    event_bus.publish(sent)
    [delivery] = event_bus.read("m1", timeout=1)
    assert delivery.event == sent


def test_missions_are_isolated(event_bus):
    event_bus.publish(event("a1", "mA"))
    event_bus.publish(event("b1", "mB"))
    event_bus.publish(event("a2", "mA"))

    assert ids(event_bus.read("mB", timeout=1)) == ["b1"]
    assert ids(event_bus.read("mA", timeout=1)) == ["a1", "a2"]
    assert event_bus.read("mC", timeout=0) == []
    assert event_bus.pending_count("mA") == 2
    assert event_bus.pending_count("mB") == 1
    assert event_bus.pending_count("mC") == 0


def test_an_event_is_handed_out_once(event_bus):
    event_bus.publish(event("t1"))
    assert ids(event_bus.read("m1", timeout=1)) == ["t1"]
    assert event_bus.read("m1", timeout=0) == []
    event_bus.publish(event("t2"))
    assert ids(event_bus.read("m1", timeout=1)) == ["t2"]


def test_max_count_is_honoured(event_bus):
    for n in range(5):
        event_bus.publish(event(f"t{n}"))
    assert ids(event_bus.read("m1", timeout=1, max_count=2)) == ["t0", "t1"]
    assert ids(event_bus.read("m1", timeout=1, max_count=2)) == ["t2", "t3"]
    assert ids(event_bus.read("m1", timeout=1, max_count=2)) == ["t4"]


def test_read_on_empty_stream_returns_empty_after_timeout(event_bus, background):
    call = background(lambda: event_bus.read("m1", timeout=0.2))
    assert call.result(PROMPT) == []
    assert call.elapsed is not None
    assert call.elapsed >= 0.15


def test_blocked_read_wakes_on_publish_from_another_thread(event_bus, background):
    call = background(lambda: event_bus.read("m1", timeout=10))
    assert not call.done.wait(BLOCKED), "read returned before anything was published"

    published_at = time.monotonic()
    event_bus.publish(event("t1"))

    assert ids(call.result(PROMPT)) == ["t1"]
    assert call.since(published_at) < WAKE


def test_publish_to_another_mission_does_not_satisfy_a_blocked_read(event_bus, background):
    call = background(lambda: event_bus.read("m1", timeout=0.5))
    assert not call.done.wait(BLOCKED)
    event_bus.publish(event("x1", "m2"))
    assert call.result(PROMPT) == []
    assert ids(event_bus.read("m2", timeout=0)) == ["x1"]


def test_interrupt_releases_a_blocked_read_promptly(event_bus, background):
    call = background(lambda: event_bus.read("m1", timeout=10))
    assert not call.done.wait(BLOCKED)

    interrupted_at = time.monotonic()
    event_bus.interrupt()

    assert call.result(PROMPT) == []
    assert call.since(interrupted_at) < WAKE


def test_bus_still_works_after_interrupt(event_bus):
    event_bus.interrupt()
    event_bus.publish(event("t1"))
    assert ids(event_bus.read("m1", timeout=1)) == ["t1"]


# -- interrupt is sticky: a read that starts after it does not wait -------------------------


def _between_reads(bus, mission_id: str, between: threading.Event, go: threading.Event):
    return between_calls(lambda t: bus.read(mission_id, timeout=t), between, go)


def test_an_interrupt_fired_before_a_read_starts_still_releases_it(event_bus, background):
    between, go = threading.Event(), threading.Event()
    call = background(_between_reads(event_bus, "m1", between, go))
    assert between.wait(PROMPT)

    event_bus.interrupt()  # the reader is not blocked: it is between two reads
    go.set()

    got, took = call.result(PROMPT)
    assert got == []
    assert took < WAKE  # it did not wait out its 10 s


def test_a_read_after_an_interrupt_still_takes_what_is_there(event_bus):
    event_bus.interrupt()
    event_bus.publish(event("t1"))
    began = time.monotonic()
    assert ids(event_bus.read("m1", timeout=10)) == ["t1"]
    assert time.monotonic() - began < WAKE


def test_an_interrupt_releases_one_read_per_thread_then_reads_wait_again(event_bus):
    event_bus.read("m1", timeout=0)  # this thread's reads so far saw no interrupt
    event_bus.interrupt()
    event_bus.interrupt()  # two before the next read count as one

    began = time.monotonic()
    assert event_bus.read("m1", timeout=10) == []
    assert time.monotonic() - began < WAKE

    began = time.monotonic()
    assert event_bus.read("m1", timeout=0.2) == []
    assert time.monotonic() - began >= 0.15  # waits again: the interrupt was used up


def test_one_interrupt_reaches_blocked_and_not_yet_blocked_readers_alike(event_bus, background):
    blocked = [background(lambda m=m: event_bus.read(m, timeout=10)) for m in ("m1", "m2")]
    assert not any(c.done.wait(BLOCKED) for c in blocked)
    gates = [(threading.Event(), threading.Event()) for _ in range(3)]
    between = [background(_between_reads(event_bus, "m1", b, g)) for b, g in gates]
    assert all(b.wait(PROMPT) for b, _ in gates)

    event_bus.interrupt()
    for _, go in gates:
        go.set()

    assert [c.result(PROMPT) for c in blocked] == [[], []]
    results = [c.result(PROMPT) for c in between]
    assert [got for got, _ in results] == [[], [], []]
    assert all(took < WAKE for _, took in results)


# -- concurrency ----------------------------------------------------------------------------


def test_concurrent_publishers_and_readers_deliver_every_event_once(event_bus, background):
    publishers, per_publisher, readers = 3, 40, 4
    total = publishers * per_publisher
    stop = threading.Event()
    progress = threading.Condition()
    delivered = [0]

    def read_until_stopped() -> list:
        got = []
        while not stop.is_set():
            batch = event_bus.read("m1", timeout=10, max_count=7)
            event_bus.ack("m1", [d.delivery_id for d in batch])
            got.extend(batch)
            with progress:
                delivered[0] += len(batch)
                progress.notify_all()
        return got

    def publish_all(p: int) -> None:
        for n in range(per_publisher):
            event_bus.publish(event(f"p{p}-{n:03d}"))

    reading = [background(read_until_stopped) for _ in range(readers)]
    publishing = [background(lambda p=p: publish_all(p)) for p in range(publishers)]
    for call in publishing:
        call.result(30)
    with progress:
        assert progress.wait_for(lambda: delivered[0] >= total, timeout=30), (
            f"{delivered[0]} of {total} events delivered"
        )
    stop.set()
    event_bus.interrupt()  # once: the readers blocked in a read, or about to start one, end
    per_reader = [c.result(PROMPT) for c in reading]

    task_ids = [d.event.task_id for got in per_reader for d in got]
    expected = [f"p{p}-{n:03d}" for p in range(publishers) for n in range(per_publisher)]
    assert sorted(task_ids) == expected  # none lost, none handed out twice
    assert Counter(d.delivery_id for got in per_reader for d in got).most_common(1)[0][1] == 1
    assert all(d.deliveries == 1 for got in per_reader for d in got)
    for got in per_reader:  # each reader sees each publisher's events in publish order
        for p in range(publishers):
            mine = [d.event.task_id for d in got if d.event.task_id.startswith(f"p{p}-")]
            assert mine == sorted(mine)
    assert event_bus.pending_count("m1") == 0
    assert event_bus.claim_stale("m1", min_idle_seconds=0) == []


# -- pending, ack, claim_stale ---------------------------------------------------------------


def test_unacked_events_stay_pending_and_are_reclaimed(event_bus):
    for n in range(3):
        event_bus.publish(event(f"t{n}"))
    first = event_bus.read("m1", timeout=1)
    assert event_bus.pending_count("m1") == 3

    event_bus.ack("m1", [first[1].delivery_id])
    assert event_bus.pending_count("m1") == 2

    again = event_bus.claim_stale("m1", min_idle_seconds=0)

    assert sorted(ids(again)) == ["t0", "t2"]  # the acked t1 is not re-delivered
    assert all(d.deliveries == 2 for d in again)
    by_task = {d.event.task_id: d for d in first}
    for d in again:
        assert d.delivery_id == by_task[d.event.task_id].delivery_id
        assert d.event == by_task[d.event.task_id].event
        assert d.mission_id == "m1"
    assert event_bus.pending_count("m1") == 2  # claimed, still not acked

    third = event_bus.claim_stale("m1", min_idle_seconds=0)
    assert all(d.deliveries == 3 for d in third)

    event_bus.ack("m1", [d.delivery_id for d in third])
    assert event_bus.pending_count("m1") == 0
    assert event_bus.claim_stale("m1", min_idle_seconds=0) == []


def test_claim_stale_respects_min_idle(event_bus):
    event_bus.publish(event("t1"))
    event_bus.read("m1", timeout=1)
    assert event_bus.claim_stale("m1", min_idle_seconds=60) == []
    assert event_bus.pending_count("m1") == 1


def test_claim_stale_ignores_events_never_read(event_bus):
    event_bus.publish(event("t1"))
    assert event_bus.claim_stale("m1", min_idle_seconds=0) == []
    assert event_bus.pending_count("m1") == 0
    assert ids(event_bus.read("m1", timeout=1)) == ["t1"]


def test_claim_stale_honours_max_count(event_bus):
    for n in range(4):
        event_bus.publish(event(f"t{n}"))
    event_bus.read("m1", timeout=1)
    assert len(event_bus.claim_stale("m1", min_idle_seconds=0, max_count=3)) == 3


def test_claim_stale_is_per_mission(event_bus):
    event_bus.publish(event("a1", "mA"))
    event_bus.read("mA", timeout=1)
    assert event_bus.claim_stale("mB", min_idle_seconds=0) == []
    assert ids(event_bus.claim_stale("mA", min_idle_seconds=0)) == ["a1"]


def test_ack_of_unknown_or_repeated_ids_is_harmless(event_bus):
    event_bus.publish(event("t1"))
    [delivery] = event_bus.read("m1", timeout=1)
    event_bus.ack("m1", [delivery.delivery_id])
    event_bus.ack("m1", [delivery.delivery_id])
    event_bus.ack("m1", [])
    assert event_bus.pending_count("m1") == 0


def test_ack_in_another_mission_does_not_ack(event_bus):
    event_bus.publish(event("t1", "mA"))
    [delivery] = event_bus.read("mA", timeout=1)
    event_bus.ack("mB", [delivery.delivery_id])
    assert event_bus.pending_count("mA") == 1


# -- dead letters ---------------------------------------------------------------------------


def test_dead_letter_records_payload_and_error_and_removes_from_pending(event_bus):
    sent = event("poison")
    event_bus.publish(sent)
    event_bus.publish(event("fine"))
    poison, _fine = event_bus.read("m1", timeout=1)

    event_bus.dead_letter(poison, "apply failed: boom")

    assert event_bus.pending_count("m1") == 1
    [dead] = event_bus.dead_letters("m1")
    assert dead.error == "apply failed: boom"
    assert ResultEvent.model_validate_json(dead.payload) == sent
    assert "m1" in dead.source
    assert ids(event_bus.claim_stale("m1", min_idle_seconds=0)) == ["fine"]
    assert event_bus.dead_letters("m2") == []


def test_malformed_entries_are_dead_lettered_and_reading_continues(event_bus, inject_raw_event):
    not_json = "}{ definitely not json"
    wrong_shape = json.dumps({"event_type": "task.result", "task_id": ["no"]})
    event_bus.publish(event("t1"))
    inject_raw_event("m1", not_json)
    inject_raw_event("m1", wrong_shape)
    event_bus.publish(event("t2"))

    got = event_bus.read("m1", timeout=1)

    assert ids(got) == ["t1", "t2"]
    dead = event_bus.dead_letters("m1")
    assert [d.payload for d in dead] == [not_json, wrong_shape]
    assert all(d.error for d in dead)
    assert event_bus.pending_count("m1") == 2  # malformed entries are not left pending
    assert sorted(ids(event_bus.claim_stale("m1", min_idle_seconds=0))) == ["t1", "t2"]


def test_only_malformed_entries_yield_an_empty_read(event_bus, inject_raw_event):
    inject_raw_event("m1", "nope")
    assert event_bus.read("m1", timeout=0) == []
    assert len(event_bus.dead_letters("m1")) == 1
    assert event_bus.pending_count("m1") == 0


def test_event_from_a_newer_schema_is_dead_lettered(event_bus, inject_raw_event):
    doc = json.loads(event("future").model_dump_json())
    doc["schema_version"] = SCHEMA_VERSION + 1
    inject_raw_event("m1", json.dumps(doc))
    event_bus.publish(event("now"))

    assert ids(event_bus.read("m1", timeout=1)) == ["now"]
    [dead] = event_bus.dead_letters("m1")
    assert "schema_version" in dead.error
