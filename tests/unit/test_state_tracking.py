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

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from infra.memory import InMemoryMissionStore
from infra.state_parts import PartTracker, head_json
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import HostStatus, MissionState, PendingTask, ResultStatus
from reaper_engine.models.tracked import TrackedDict
from tests.factories import T0, host_spec, make_record, make_state, make_task

HOSTS = ("a", "b", "c")


class TrackedSaves(RuleBasedStateMachine):
    """An engine's life with one store: change in place, save, sometimes reload."""

    @initialize()
    def start(self) -> None:
        assert InMemoryMissionStore.verify_saves  # every save is read back and compared
        self.store = InMemoryMissionStore()
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
        # verify_saves (tests/conftest.py) reads every save back and compares.
        self.state = self.store.save(self.state)

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


TrackedSaves.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_saves_write_every_change_and_only_changes = TrackedSaves.TestCase


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
