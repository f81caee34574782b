"""MissionStore contract: create/load/save with optimistic concurrency, independent copies."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import Action, MissionStatus, PendingTask, ResultStatus
from tests.factories import T0, host_spec, make_record, make_state, make_task


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
    loaded.hosts["h1"].facts = {"hostname": "mutated"}
    loaded.hosts["h1"].remember_task("t1")

    fresh = mission_store.load("m1")
    assert fresh is not None
    assert fresh.counters.results_applied == 0
    assert fresh.status is MissionStatus.PENDING
    assert fresh.hosts["h1"].facts == {}
    assert fresh.hosts["h1"].last_tasks == ()
    assert fresh is not loaded


def test_returned_copies_from_create_and_save_are_independent(mission_store):
    original = make_state(mission_id="m1")
    created = mission_store.create(original)
    created.hosts["h1"].facts = {"x": 1}
    original.hosts["h1"].facts = {"y": 2}
    loaded = mission_store.load("m1")
    assert loaded is not None
    assert loaded.hosts["h1"].facts == {}

    saved = mission_store.save(loaded)
    saved.hosts["h1"].facts = {"z": 3}
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


def test_every_kind_of_change_between_saves_is_stored(mission_store):
    spec1, spec2 = host_spec("h1"), host_spec("h2")
    state = mission_store.create(make_state(spec1, spec2, mission_id="m1"))
    first = make_task(Action.DISCOVER, host=spec1, mission_id="m1", task_id="t1")
    second = make_task(Action.SCAN, host=spec2, mission_id="m1", task_id="t2")
    state.pending_tasks = {"t1": PendingTask(task=first), "t2": PendingTask(task=second)}
    earlier = make_record(
        "t0", "h2", Action.REAP, status=ResultStatus.ERROR, error_code="TASK_TIMEOUT"
    )
    state.completed_tasks = {"t0": earlier}
    state = mission_store.save(state)

    state.hosts["h1"].facts = {"hostname": "one"}  # a host field
    state.hosts["h2"].remember_task("t0")
    state.pending_tasks["t1"] = PendingTask(task=first, dispatched_at=T0)  # replaced
    del state.pending_tasks["t2"]  # gone
    state.completed_tasks["t2"] = make_record("t2", "h2")
    state.completed_tasks["t0"] = earlier.model_copy(update={"late_applied": True})  # replaced
    state.counters.results_applied = 1  # the head
    saved = mission_store.save(state)

    loaded = mission_store.load("m1")
    assert loaded == saved
    assert loaded is not None
    assert loaded.hosts["h1"].facts == {"hostname": "one"}
    assert loaded.hosts["h2"].last_tasks == ("t0",)
    assert loaded.pending_tasks["t1"].dispatched_at == T0
    assert set(loaded.pending_tasks) == {"t1"}
    assert loaded.completed_tasks["t2"].status is ResultStatus.SUCCESS
    assert loaded.completed_tasks["t0"].late_applied


_HOSTS = ("h1", "h2", "h3")
_OPS = st.one_of(
    st.tuples(st.just("failures"), st.sampled_from(_HOSTS), st.integers(0, 9)),
    st.tuples(st.just("facts"), st.sampled_from(_HOSTS), st.integers(0, 9)),
    st.tuples(st.just("admit"), st.sampled_from(_HOSTS), st.just(0)),
    st.tuples(st.just("dispatch"), st.just(""), st.integers(0, 20)),
    st.tuples(st.just("complete"), st.just(""), st.integers(0, 20)),
    st.tuples(st.just("fold"), st.just(""), st.integers(0, 20)),
    st.tuples(st.just("counter"), st.just(""), st.integers(0, 99)),
    st.tuples(st.just("save"), st.just(""), st.just(0)),
    st.tuples(st.just("save"), st.just(""), st.just(0)),  # twice as likely
    st.tuples(st.just("reload"), st.just(""), st.just(0)),
)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(_OPS, min_size=8, max_size=40))
def test_a_copy_kept_and_changed_across_saves_always_loads_as_saved(mission_store, ops):
    """As an engine does: change the copy a save returned, save it again, now and then
    reload; whatever was saved last is what loads, every part of it."""
    mission_id = f"m-{uuid.uuid4().hex[:12]}"
    specs = {h: host_spec(h) for h in _HOSTS}
    state = mission_store.create(make_state(*specs.values(), mission_id=mission_id))
    last_saved = state.model_copy(deep=True)
    for number, (op, host_id, value) in enumerate(ops):
        pending, done = list(state.pending_tasks), list(state.completed_tasks)
        if op == "failures":
            state.hosts[host_id].failure_count = value
        elif op == "facts":
            state.hosts[host_id].facts = {"n": value}
        elif op == "admit":
            task = make_task(host=specs[host_id], mission_id=mission_id, task_id=f"t{number}")
            state.pending_tasks[task.task_id] = PendingTask(task=task)
            state.hosts[host_id].remember_task(task.task_id)
        elif op == "dispatch" and pending:
            task_id = pending[value % len(pending)]
            state.pending_tasks[task_id] = PendingTask(
                task=state.pending_tasks[task_id].task, dispatched_at=T0
            )
        elif op == "complete" and pending:
            task = state.pending_tasks.pop(pending[value % len(pending)]).task
            state.completed_tasks[task.task_id] = make_record(
                task.task_id, task.host_id, task.action
            )
        elif op == "fold" and done:
            record = state.completed_tasks[done[value % len(done)]]
            state.completed_tasks[record.task_id] = record.model_copy(
                update={"late_applied": not record.late_applied}
            )
        elif op == "counter":
            state.counters.results_applied = value
        elif op == "save":
            state = mission_store.save(state)
            last_saved = state.model_copy(deep=True)
        elif op == "reload":
            loaded = mission_store.load(mission_id)
            assert loaded == last_saved
            assert loaded is not None
            state = loaded
    assert mission_store.load(mission_id) == last_saved


def test_a_load_keeps_the_hosts_in_inventory_order_and_tasks_in_time_order(mission_store):
    # Hosts named against their order; tasks with documents long enough that a Redis
    # hash stops keeping insertion order (values over 64 bytes).
    specs = [host_spec(h) for h in ("zeta", "alpha", "mid", "beta")]
    state = make_state(*specs, mission_id="m1")
    for n, spec in enumerate(reversed(specs)):
        task = make_task(
            host=spec, mission_id="m1", task_id=f"t-{spec.host_id}", now=T0 + timedelta(n)
        )
        state.pending_tasks[task.task_id] = PendingTask(task=task)
        record_id = f"r-{spec.host_id}"
        state.completed_tasks[record_id] = make_record(
            record_id, spec.host_id, finished_at=T0 + timedelta(n)
        )
    mission_store.save(mission_store.create(state))

    loaded = mission_store.load("m1")

    assert loaded is not None
    assert list(loaded.hosts) == ["zeta", "alpha", "mid", "beta"]
    assert list(loaded.pending_tasks) == ["t-beta", "t-mid", "t-alpha", "t-zeta"]
    assert list(loaded.completed_tasks) == ["r-beta", "r-mid", "r-alpha", "r-zeta"]
