"""The pending-task index: by host, and a floor before which no pending task needs the engine."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from reaper_engine.engine import MissionEngine
from reaper_engine.mission_records import TIMEOUT_ERROR
from reaper_engine.models import AgentType, MissionStatus, PendingTask
from reaper_engine.pending_index import PendingIndex
from reaper_engine.rule_planner import RuleBasedPlanner
from tests.factories import T0, clock, host_spec, make_state, make_task


def _entry(task_id: str, host: str = "a", *, backoff: float | None = None, sent: bool = False):
    task = make_task(
        task_id=task_id,
        host=host_spec(host),
        timeout=60.0,
        not_before=T0 + timedelta(seconds=backoff) if backoff is not None else None,
    )
    return PendingTask(task=task, dispatched_at=T0 if sent else None)


def test_an_empty_mission_is_quiet_for_ever():
    index = PendingIndex.of({})
    assert index.floor is None
    assert index.quiet_until(T0 + timedelta(days=365))


def test_each_kind_of_pending_task_needs_the_engine_at_its_own_time():
    assert _entry("t1", sent=True).wakeup() == T0 + timedelta(seconds=60)  # deadline
    assert _entry("t2", backoff=5.0).wakeup() == T0 + timedelta(seconds=5)
    waiting = _entry("t3").wakeup()  # not yet dispatched, no backoff: at once
    assert waiting < T0
    assert not PendingIndex.of({"t3": _entry("t3")}).quiet_until(T0)


def test_the_index_follows_edits_and_its_floor_stays_a_lower_bound():
    pending = {"t1": _entry("t1", "a", sent=True), "t2": _entry("t2", "b", backoff=30.0)}
    index = PendingIndex.of(pending)
    assert index.by_host == {"a": {"t1"}, "b": {"t2"}}
    assert index.floor == T0 + timedelta(seconds=30)
    assert index.fits(pending)
    assert not index.fits(dict(pending))  # another dict: another copy of the state

    sooner = _entry("t3", "a", backoff=10.0)
    index.added(sooner)
    assert index.floor == T0 + timedelta(seconds=10)
    index.removed(sooner.task)
    index.removed(pending["t2"].task)
    assert index.by_host == {"a": {"t1"}}
    assert index.floor == T0 + timedelta(seconds=10)  # lowered only: still a lower bound
    assert index.quiet_until(T0 + timedelta(seconds=9))


@given(st.lists(st.tuples(st.sampled_from("abc"), st.none() | st.floats(0, 100), st.booleans())))
def test_the_floor_is_exact_when_made_and_no_later_than_any_task_after_edits(specs):
    pending = {}
    for n, (host, backoff, sent) in enumerate(specs):
        pending[f"t{n}"] = _entry(f"t{n}", host, backoff=backoff, sent=sent)
    index = PendingIndex.of(pending)
    times = [e.wakeup() for e in pending.values()]
    assert index.floor == (min(times) if times else None)
    for task_id in list(pending)[::2]:
        index.removed(pending.pop(task_id).task)
    assert all(index.floor is not None and index.floor <= e.wakeup() for e in pending.values())
    assert {t for ids in index.by_host.values() for t in ids} == set(pending)


def _engine(store: InMemoryMissionStore, queue: InMemoryTaskQueue, late: float = 0.0):
    manual = clock()
    manual.advance(late)
    return manual, MissionEngine(
        "m1",
        store=store,
        queue=queue,
        bus=InMemoryEventBus(),
        planner=RuleBasedPlanner(),
        clock=manual,
    )


def test_a_tick_dispatches_a_task_left_undispatched_without_a_backoff():
    # No engine leaves one, but a state written by an older engine may hold one.
    store, queue = InMemoryMissionStore(), InMemoryTaskQueue()
    state = make_state(host_spec("a"))
    state.status = MissionStatus.RUNNING
    state.pending_tasks = {"t1": _entry("t1")}
    store.create(state)
    _, engine = _engine(store, queue)
    engine.tick()
    assert queue.size(AgentType.LINUX) == 1
    stored = store.load("m1")
    assert stored is not None
    assert stored.pending_tasks["t1"].dispatched_at == T0


def test_quiet_ticks_leave_the_kept_state_alone_then_a_deadline_times_out():
    store, queue = InMemoryMissionStore(), InMemoryTaskQueue()
    state = make_state(host_spec("a"))
    state.status = MissionStatus.RUNNING
    state.pending_tasks = {"t1": _entry("t1", sent=True)}
    store.create(state)
    manual, engine = _engine(store, queue, late=59.0)
    before = engine.tick()
    assert engine.tick() is before  # nothing due: not even a save
    assert before is not None
    assert before.version == 1
    manual.advance(1.0)
    after = engine.tick()
    assert after is not None
    assert after.completed_tasks["t1"].error_code == TIMEOUT_ERROR
