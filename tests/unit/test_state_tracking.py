"""Saves that write only what changed, found by the objects reporting their own changes.

The engine keeps the state it saved and goes on changing it; the store's PartTracker then
learns what a change touched from the objects themselves (hosts report field assignments,
the task maps their edits) instead of comparing every entry. These tests drive random
changes, saves, reloads and foreign trackers through a real store and check, after every
save, that what the store holds reads back as exactly the state saved.
"""

from __future__ import annotations

import copy
import pickle
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from infra.memory import InMemoryMissionStore
from infra.memory import store as memory_store
from infra.redis import RedisMissionStore
from infra.state_parts import PartTracker, head_json
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import HostStatus, MissionState, PendingTask, ResultStatus
from reaper_engine.models.tracked import TrackedDict
from reaper_engine.ports import MissionStore
from tests.factories import T0, host_spec, make_record, make_state, make_task

HOSTS = ("a", "b", "c")


class TrackedSaves(RuleBasedStateMachine):
    """An engine's life with one store: change in place, save, sometimes reload."""

    store: MissionStore

    def new_store(self) -> MissionStore:
        assert InMemoryMissionStore.verify_saves  # every save is read back and compared
        return InMemoryMissionStore()

    def check_stored(self, saved: MissionState) -> None:
        """Nothing more: the in-memory store reads each save back itself."""

    @initialize()
    def start(self) -> None:
        self.store = self.new_store()
        self.state = self.store.create(make_state(*(host_spec(h) for h in HOSTS)))
        self.ids = 0
        self.stale: MissionState | None = None

    def _new_id(self) -> str:
        self.ids += 1
        return f"t{self.ids}"

    @rule(host=st.sampled_from(HOSTS), field=st.sampled_from(["failures", "tasks", "facts"]))
    def assign_a_host_field(self, host: str, field: str) -> None:
        target = self.state.hosts[host]
        if field == "failures":
            target.failure_count += 1
        elif field == "tasks":
            target.remember_task(self._new_id())
        else:
            target.facts = {**target.facts, "n": self.ids}

    @rule(host=st.sampled_from(HOSTS))
    def assign_a_value_it_already_has(self, host: str) -> None:
        target = self.state.hosts[host]
        target.last_status = target.last_status

    @rule(host=st.sampled_from(HOSTS))
    def add_a_pending_task(self, host: str) -> None:
        task = make_task(task_id=self._new_id(), host=host_spec(host))
        self.state.pending_tasks[task.task_id] = PendingTask(task=task)

    @precondition(lambda self: self.state.pending_tasks)
    @rule(data=st.data())
    def dispatch_a_pending_task(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.state.pending_tasks)))
        entry = self.state.pending_tasks[task_id]
        self.state.pending_tasks[task_id] = PendingTask(task=entry.task, dispatched_at=T0)

    @precondition(lambda self: self.state.pending_tasks)
    @rule(data=st.data(), how=st.sampled_from(["del", "pop"]))
    def complete_a_pending_task(self, data: st.DataObject, how: str) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.state.pending_tasks)))
        if how == "del":
            task = self.state.pending_tasks[task_id].task
            del self.state.pending_tasks[task_id]
        else:
            task = self.state.pending_tasks.pop(task_id).task
        self.state.completed_tasks[task_id] = make_record(
            task_id, task.host_id, finished_at=T0 + timedelta(seconds=self.ids)
        )

    @precondition(lambda self: self.state.completed_tasks)
    @rule(data=st.data())
    def replace_a_record(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.state.completed_tasks)))
        record = self.state.completed_tasks[task_id]
        self.state.completed_tasks[task_id] = record.model_copy(
            update={"status": ResultStatus.ERROR, "late_applied": not record.late_applied}
        )

    @rule()
    def add_and_drop_a_task_in_one_change(self) -> None:
        task = make_task(task_id=self._new_id())
        self.state.pending_tasks[task.task_id] = PendingTask(task=task)
        del self.state.pending_tasks[task.task_id]

    @rule()
    def replace_a_host_object(self) -> None:
        host = self.state.hosts["b"]
        self.state.hosts["b"] = host.model_copy(update={"last_status": HostStatus.DEGRADED})

    @rule()
    def save(self) -> None:
        self.stale = self.state
        self.state = self.store.save(self.state)
        self.check_stored(self.state)

    @rule()
    def reload(self) -> None:
        self.state = self.store.save(self.state)
        loaded = self.store.load(self.state.mission_id)
        assert loaded == self.state
        self.state = loaded

    @rule(maps=st.booleans())
    def another_store_saves_the_same_objects(self, maps: bool) -> None:
        # A second tracker has the objects report to it: ours must notice, not trust them;
        # also when only the hosts are shared (a copy with task maps of its own).
        mirror = InMemoryMissionStore()
        if maps:
            mirror.create(self.state)
        else:
            mirror.create(
                self.state.model_copy(update={"pending_tasks": {}, "completed_tasks": {}})
            )

    @rule(readers=st.integers(1, 4))
    def others_load_it(self, readers: int) -> None:
        for _ in range(readers):
            self.store.load(self.state.mission_id)

    @rule()
    def the_store_forgets_what_it_knew(self) -> None:
        parts: PartTracker = self.store._parts  # type: ignore[attr-defined]
        parts.forget(self.state.mission_id)  # as after a revision conflict

    @rule()
    def a_deep_copy_is_saved(self) -> None:
        self.state = self.store.save(self.state.model_copy(deep=True))

    @rule()
    def the_hosts_map_is_replaced(self) -> None:
        self.state.hosts = dict(self.state.hosts)

    @rule()
    def a_host_is_swapped_for_its_copy_and_both_change(self) -> None:
        old = self.state.hosts["a"]
        new = old.model_copy()
        self.state.hosts["a"] = new
        old.failure_count += 5  # no longer the state's: must not matter
        new.outcome_detail = f"copy {self.ids}"

    @rule()
    def one_host_object_under_two_keys(self) -> None:
        self.state.hosts["c"] = self.state.hosts["b"]
        self.state.hosts["b"].failure_count += 1  # both keys' documents must change

    @rule()
    def another_mission_shares_hosts(self) -> None:
        self.ids += 1
        other = self.store.create(
            self.state.model_copy(
                update={
                    "mission_id": f"other-{self.ids}",
                    "version": 0,
                    "pending_tasks": {},
                    "completed_tasks": {},
                }
            )
        )
        other.hosts["c"].failure_count += 1  # a shared object: ours changes too
        self.store.save(other)

    @precondition(lambda self: self.stale is not None)
    @rule()
    def a_stale_copy_is_refused(self) -> None:
        stale = self.stale
        assert stale is not None
        if stale.version != self.state.version:
            with pytest.raises(ConcurrentUpdateError):
                self.store.save(stale)

    @invariant()
    def stored_is_saved_or_older(self) -> None:
        stored = self.store.load(self.state.mission_id)
        assert stored is not None
        assert stored.version == self.state.version


class InMemorySaves(TrackedSaves):
    @rule(landed=st.booleans())
    def a_write_fails(self, landed: bool) -> None:
        # The store's write raises, before or after it landed; the engine then reloads.
        write = memory_store._Stored.write

        def broken(stored: memory_store._Stored, *args: Any) -> None:
            if landed:
                write(stored, *args)
            raise ConnectionError("lost")

        memory_store._Stored.write = broken  # type: ignore[method-assign]
        try:
            with pytest.raises(ConnectionError):
                self.store.save(self.state)
        finally:
            memory_store._Stored.write = write  # type: ignore[method-assign]
        if landed:
            loaded = self.store.load(self.state.mission_id)
            assert loaded is not None
            self.state = loaded


class FakeRedisSaves(TrackedSaves):
    """The same life on the Redis store (fakeredis), each save read back by another store."""

    def new_store(self) -> MissionStore:
        self.client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
        return RedisMissionStore(self.client)

    def check_stored(self, saved: MissionState) -> None:
        # Another store instance: its reads leave this one's tracker as it was.
        assert RedisMissionStore(self.client).load(saved.mission_id) == saved


_SETTINGS = settings(max_examples=100, stateful_step_count=40, deadline=None)
InMemorySaves.TestCase.settings = _SETTINGS
FakeRedisSaves.TestCase.settings = settings(_SETTINGS, max_examples=40)
test_saves_write_every_change_and_only_changes = InMemorySaves.TestCase
test_redis_saves_write_every_change_and_only_changes = FakeRedisSaves.TestCase


def _saved(state: MissionState, version: int) -> MissionState:
    return state.model_copy(update={"version": version})


def test_a_save_of_the_kept_state_writes_what_its_objects_reported():
    tracker = PartTracker()
    state = _saved(make_state(*(host_spec(h) for h in HOSTS)), 1)
    state.pending_tasks = {"t1": PendingTask(task=make_task(task_id="t1"))}
    tracker.saved(state, "rev-1")
    state.hosts["c"].failure_count = 1
    state.completed_tasks["t1"] = make_record("t1")
    del state.pending_tasks["t1"]

    delta = tracker.delta(state, head_json(state))

    assert delta.base == "rev-1"
    assert set(delta.hosts) == {"c"}
    assert set(delta.done) == {"t1"}
    assert delta.pending_gone == ["t1"]
    saved = _saved(state, 2)
    tracker.saved(saved, "rev-2")
    # Carried forward: the next change starts from nothing to write.
    after = tracker.delta(saved, head_json(saved))
    assert (after.base, after.hosts, after.pending, after.done) == ("rev-2", {}, {}, {})
    assert (after.pending_gone, after.done_gone) == ([], [])


def test_a_plain_dict_for_a_task_map_is_judged_entry_by_entry():
    tracker = PartTracker()
    state = _saved(make_state(host_spec("a")), 1)
    tracker.saved(state, "rev-1")
    state.__dict__["pending_tasks"] = {"t1": PendingTask(task=make_task(task_id="t1"))}
    delta = tracker.delta(state, head_json(state))
    assert set(delta.pending) == {"t1"}


def test_task_maps_are_tracked_however_the_state_is_made():
    state = make_state(host_spec("a"))
    loaded = MissionState.model_validate_json(state.model_dump_json())
    state.pending_tasks = {}
    for made in (state, loaded, state.model_copy(deep=True)):
        assert isinstance(made.pending_tasks, TrackedDict)
        assert isinstance(made.completed_tasks, TrackedDict)


def test_a_tracked_dict_reports_every_edit_and_its_copies_report_nothing():
    watched: set[str] = set()
    tracked: TrackedDict[int] = TrackedDict(a=1, b=2, c=3)
    tracked.watch = watched
    tracked["d"] = 4
    del tracked["a"]
    tracked.pop("b")
    tracked.pop("missing", None)
    tracked.setdefault("e", 5)
    tracked.setdefault("e", 6)
    tracked.update(f=6)
    tracked |= {"g": 7}
    assert watched == {"a", "b", "d", "e", "f", "g"}
    tracked.popitem()
    tracked.clear()
    assert watched == {"a", "b", "c", "d", "e", "f", "g"}
    for other in (copy.copy(tracked), copy.deepcopy(tracked), pickle.loads(pickle.dumps(tracked))):
        assert isinstance(other, TrackedDict)
        assert other.watch is None
        other["z"] = 0
    assert "z" not in watched
