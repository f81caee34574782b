"""EventBus contract: per-mission streams, at-least-once with ack, claim_stale, dead letters."""

from __future__ import annotations

import json

from reaper_engine import SCHEMA_VERSION
from reaper_engine.models import Action, ResultEvent, ResultStatus
from tests.factories import make_task, result_for

BLOCKED = 0.1
PROMPT = 2.0


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

    event_bus.publish(event("t1"))

    assert ids(call.result(PROMPT)) == ["t1"]
    assert call.elapsed is not None
    assert call.elapsed < 5


def test_publish_to_another_mission_does_not_satisfy_a_blocked_read(event_bus, background):
    call = background(lambda: event_bus.read("m1", timeout=0.5))
    assert not call.done.wait(BLOCKED)
    event_bus.publish(event("x1", "m2"))
    assert call.result(PROMPT) == []
    assert ids(event_bus.read("m2", timeout=0)) == ["x1"]


def test_interrupt_releases_a_blocked_read_promptly(event_bus, background):
    call = background(lambda: event_bus.read("m1", timeout=10))
    assert not call.done.wait(BLOCKED)

    event_bus.interrupt()

    assert call.result(PROMPT) == []
    assert call.elapsed is not None
    assert call.elapsed < 5


def test_bus_still_works_after_interrupt(event_bus):
    event_bus.interrupt()
    event_bus.publish(event("t1"))
    assert ids(event_bus.read("m1", timeout=1)) == ["t1"]


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
