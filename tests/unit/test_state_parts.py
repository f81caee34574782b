"""PartTracker and assemble: which parts of a mission a save writes, and how a load rebuilds it.

The stores' behaviour (every change stored, nothing else rewritten) is in the contract suite
(tests/contract/test_mission_store_contract.py) and tests/redis/test_mission_store.py; this
is the bookkeeping behind it.
"""

from __future__ import annotations

import pytest

from infra.memory import InMemoryMissionStore
from infra.state_parts import PartTracker, assemble, head_json, new_revision
from reaper_engine.errors import MessageDecodeError
from reaper_engine.models import MissionState, MissionStatus, PendingTask
from tests.factories import host_spec, make_state, make_task


def _saved(state: MissionState, version: int) -> MissionState:
    return state.model_copy(update={"version": version})


def _delta(tracker: PartTracker, state: MissionState):
    return tracker.delta(state, head_json(state))


def test_a_mission_never_seen_is_written_in_full_with_its_host_order():
    state = _saved(make_state(host_spec("b"), host_spec("a")), 1)
    delta = _delta(PartTracker(), state)
    assert delta.full
    assert set(delta.hosts) == {"a", "b"}
    assert delta.host_order == ("b", "a")


def test_after_a_save_only_what_changed_is_written_as_a_delta_of_that_revision():
    tracker = PartTracker()
    state = _saved(make_state(host_spec("a"), host_spec("b")), 1)
    state.pending_tasks = {"t1": PendingTask(task=make_task(task_id="t1"))}
    tracker.saved(state, "rev-1")

    state.hosts["b"].failure_count = 1
    del state.pending_tasks["t1"]
    delta = _delta(tracker, state)

    assert delta.base == "rev-1"
    assert set(delta.hosts) == {"b"}
    assert delta.pending == {}
    assert delta.pending_gone == ["t1"]


def test_a_copy_loaded_at_the_saved_revision_saves_as_a_delta_too():
    tracker = PartTracker()
    engine_copy = _saved(make_state(host_spec("a"), host_spec("b")), 1)
    tracker.saved(engine_copy, "rev-1")
    reloaded = engine_copy.model_copy(deep=True)
    tracker.loaded(reloaded, "rev-1")

    engine_copy.hosts["a"].failure_count = 1
    reloaded.hosts["b"].failure_count = 1

    assert set(_delta(tracker, engine_copy).hosts) == {"a"}
    assert set(_delta(tracker, reloaded).hosts) == {"b"}


def test_loads_never_push_out_the_copy_saved_last():
    tracker = PartTracker(copies=2)
    engine_copy = _saved(make_state(host_spec("a")), 1)
    tracker.saved(engine_copy, "rev-1")
    for _ in range(3):
        tracker.loaded(engine_copy.model_copy(deep=True), "rev-1")
    assert _delta(tracker, engine_copy).hosts == {}


def test_a_load_of_another_revision_replaces_what_the_store_knew():
    tracker = PartTracker()
    mine = _saved(make_state(host_spec("a")), 2)
    tracker.saved(mine, "rev-2")
    theirs = mine.model_copy(deep=True)
    tracker.loaded(theirs, "rev-2-after-a-lost-write")
    assert _delta(tracker, theirs).base == "rev-2-after-a-lost-write"
    assert _delta(tracker, mine).hosts == {"a": mine.hosts["a"].model_dump_json()}


def test_a_mission_this_store_never_saved_is_not_tracked():
    tracker = PartTracker()
    state = _saved(make_state(host_spec("a")), 1)
    tracker.loaded(state, "rev-1")  # a dashboard's read
    assert _delta(tracker, state).full


def test_a_copy_of_another_version_or_other_hosts_is_written_in_full():
    tracker = PartTracker()
    state = _saved(make_state(host_spec("a"), host_spec("b")), 2)
    tracker.saved(state, "rev-2")
    assert _delta(tracker, _saved(state, 1)).full
    grown = state.model_copy(deep=True)
    grown.hosts = {**grown.hosts, **make_state(host_spec("z")).hosts}
    assert _delta(tracker, grown).full
    reordered = state.model_copy(deep=True)
    reordered.hosts = dict(reversed(reordered.hosts.items()))
    assert _delta(tracker, reordered).full  # the host order is written only in full


def test_one_host_object_in_two_stores_is_judged_by_each_store_alone():
    primary, mirror = PartTracker(), PartTracker()
    state = _saved(make_state(host_spec("a")), 1)
    mirror.saved(state, "m-1")
    state.hosts["a"].failure_count = 2
    primary.saved(state, "p-1")  # the primary saw the change, the mirror did not
    assert set(_delta(mirror, state).hosts) == {"a"}
    assert _delta(primary, state).hosts == {}


def test_finished_missions_are_forgotten_and_only_the_latest_saved_ones_kept():
    tracker = PartTracker(missions=2)
    states = [_saved(make_state(mission_id=f"m{i}"), 1) for i in range(3)]
    for state in states:
        tracker.saved(state, new_revision())
    assert _delta(tracker, states[0]).full  # pushed out by m1 and m2
    assert not _delta(tracker, states[2]).full

    done = _saved(states[2].model_copy(update={"status": MissionStatus.COMPLETED}), 2)
    tracker.saved(done, new_revision())
    assert _delta(tracker, done).full


def test_assemble_rebuilds_the_state_from_its_parts():
    state = make_state(host_spec("b"), host_spec("a"))
    state.pending_tasks = {"t1": PendingTask(task=make_task(task_id="t1"))}
    rebuilt = assemble(
        head_json(state).encode(),
        {k: v.model_dump_json().encode() for k, v in state.hosts.items()},
        {k: v.model_dump_json() for k, v in state.pending_tasks.items()},
        {},
        host_order=["b", "a"],
    )
    assert rebuilt == state
    assert list(rebuilt.hosts) == ["b", "a"]


@pytest.mark.parametrize("head", ["", "not json", "[1]", '{"mission_id": "truncated'])
def test_a_broken_head_is_a_decode_error(head):
    with pytest.raises(MessageDecodeError, match="not a valid MissionState"):
        assemble(head, {}, {}, {})


def test_the_suite_catches_a_host_value_changed_behind_the_trackers_back():
    # The check the suite runs on every in-memory save (tests/conftest.py), shown to
    # work: stores write only what an assignment changed. The models leave no value to
    # change in place (tuples, frozen models, read-only mappings), so go around them.
    store = InMemoryMissionStore()
    state = store.create(make_state(mission_id="m1"))
    state.hosts["h1"].__dict__["failure_count"] = 2
    with pytest.raises(AssertionError, match="changed in place, not assigned"):
        store.save(state)
