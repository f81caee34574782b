"""MissionStore contract: create/load/save with optimistic concurrency, independent copies."""

from __future__ import annotations

import threading

import pytest

from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import Action, MissionStatus, PendingTask
from tests.factories import T0, host_spec, make_state, make_task


def test_create_stores_version_1(mission_store):
    state = make_state(mission_id="m1")
    created = mission_store.create(state)
    assert created.version == 1
    assert created.mission_id == "m1"
    loaded = mission_store.load("m1")
    assert loaded == created


def test_create_twice_raises_value_error(mission_store):
    mission_store.create(make_state(mission_id="m1"))
    with pytest.raises(ValueError, match="m1"):
        mission_store.create(make_state(host_spec("other"), mission_id="m1"))
    loaded = mission_store.load("m1")
    assert loaded is not None
    assert list(loaded.hosts) == ["h1"]  # the first one is kept
    assert loaded.version == 1


def test_version_follows_creates_and_saves_without_a_load(mission_store):
    assert mission_store.version("m1") is None
    created = mission_store.create(make_state(mission_id="m1"))
    assert mission_store.version("m1") == 1
    mission_store.save(created)
    assert mission_store.version("m1") == 2
    with pytest.raises(ConcurrentUpdateError):
        mission_store.save(created)  # a stale copy changes nothing, the version included
    assert mission_store.version("m1") == 2


def test_load_unknown_returns_none(mission_store):
    assert mission_store.load("nope") is None


def test_full_state_round_trips(mission_store):
    task = make_task(Action.SCAN, mission_id="m1", task_id="t9")
    state = make_state(host_spec("h1"), host_spec("h2"), mission_id="m1")
    state.pending_tasks = {"t9": PendingTask(task=task, dispatched_at=T0)}
    state.counters.findings = 4
    state.status = MissionStatus.RUNNING
    state.hosts["h2"].facts = {"hostname": "box", "cpu_count": 8}

    created = mission_store.create(state)

    loaded = mission_store.load("m1")
    assert loaded == created
    assert loaded.pending_tasks["t9"].task == task
    assert loaded.hosts["h2"].facts == {"hostname": "box", "cpu_count": 8}


def test_save_bumps_version_and_returns_the_saved_copy(mission_store):
    created = mission_store.create(make_state(mission_id="m1"))
    created.counters.results_applied = 5

    saved = mission_store.save(created)

    assert saved.version == 2
    assert saved.counters.results_applied == 5
    assert mission_store.load("m1") == saved

    saved.status = MissionStatus.RUNNING
    again = mission_store.save(saved)
    assert again.version == 3
    loaded = mission_store.load("m1")
    assert loaded is not None
    assert loaded.status is MissionStatus.RUNNING
    assert loaded.version == 3


def test_saving_a_stale_copy_raises_and_changes_nothing(mission_store):
    mission_store.create(make_state(mission_id="m1"))
    first = mission_store.load("m1")
    second = mission_store.load("m1")
    assert first is not None
    assert second is not None

    first.counters.errors = 1
    mission_store.save(first)

    second.counters.errors = 99
    with pytest.raises(ConcurrentUpdateError):
        mission_store.save(second)

    loaded = mission_store.load("m1")
    assert loaded is not None
    assert loaded.counters.errors == 1
    assert loaded.version == 2


def test_saving_the_same_copy_twice_conflicts(mission_store):
    created = mission_store.create(make_state(mission_id="m1"))
    mission_store.save(created)
    with pytest.raises(ConcurrentUpdateError):
        mission_store.save(created)


def test_saving_an_unknown_mission_does_not_create_it(mission_store):
    state = make_state(mission_id="ghost").model_copy(update={"version": 1})
    with pytest.raises((ConcurrentUpdateError, ValueError)):
        mission_store.save(state)
    assert mission_store.load("ghost") is None
    assert mission_store.list_ids() == []


def test_racing_read_modify_write_with_retry_loses_no_increments(mission_store):
    mission_store.create(make_state(mission_id="m1"))
    threads, increments = 2, 50
    start = threading.Barrier(threads, timeout=10)
    conflicts: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            start.wait()
            mine = 0
            for _ in range(increments):
                while True:
                    state = mission_store.load("m1")
                    assert state is not None
                    state.counters.results_applied += 1
                    try:
                        mission_store.save(state)
                        break
                    except ConcurrentUpdateError:
                        mine += 1
            conflicts.append(mine)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not any(w.is_alive() for w in workers), "a worker did not finish"
    assert errors == []

    final = mission_store.load("m1")
    assert final is not None
    assert final.counters.results_applied == threads * increments
    assert final.version == 1 + threads * increments


def test_load_returns_an_independent_copy(mission_store):
    mission_store.create(make_state(mission_id="m1"))
    loaded = mission_store.load("m1")
    assert loaded is not None

    loaded.counters.results_applied = 42
    loaded.status = MissionStatus.FAILED
    loaded.hosts["h1"].facts["hostname"] = "mutated"
    loaded.hosts["h1"].remember_task("t1")

    fresh = mission_store.load("m1")
    assert fresh is not None
    assert fresh.counters.results_applied == 0
    assert fresh.status is MissionStatus.PENDING
    assert fresh.hosts["h1"].facts == {}
    assert fresh.hosts["h1"].last_tasks == []
    assert fresh is not loaded


def test_returned_copies_from_create_and_save_are_independent(mission_store):
    original = make_state(mission_id="m1")
    created = mission_store.create(original)
    created.hosts["h1"].facts["x"] = 1
    original.hosts["h1"].facts["y"] = 2
    loaded = mission_store.load("m1")
    assert loaded is not None
    assert loaded.hosts["h1"].facts == {}

    saved = mission_store.save(loaded)
    saved.hosts["h1"].facts["z"] = 3
    reloaded = mission_store.load("m1")
    assert reloaded is not None
    assert reloaded.hosts["h1"].facts == {}


def test_list_ids_in_creation_order(mission_store):
    assert mission_store.list_ids() == []
    for mission_id in ("m3", "m1", "m2"):
        mission_store.create(make_state(mission_id=mission_id))
    # saving does not reorder
    state = mission_store.load("m3")
    assert state is not None
    mission_store.save(state)
    assert mission_store.list_ids() == ["m3", "m1", "m2"]
