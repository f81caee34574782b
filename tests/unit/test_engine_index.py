"""The engine's pending-task index over many turns, and saves that cost what they changed.

The index outlives a change: it is kept with the state the engine keeps, so it must stay
exact through batches, ticks, retries, backoffs, save conflicts (a rival engine on the same
store) and cancels; and a tick that finds nothing due must not leave anything due behind.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

from infra import state_parts
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from reaper_engine.clock import ManualClock
from reaper_engine.engine import MissionEngine
from reaper_engine.models import (
    Action,
    MissionOptions,
    MissionState,
    MissionStatus,
    ResultEvent,
    ResultStatus,
    Task,
)
from reaper_engine.planner import PlannedTask
from reaper_engine.ports import Delivery
from reaper_engine.rule_planner import RuleBasedPlanner
from tests.factories import clock as make_clock
from tests.factories import host_spec, make_state


class RandomPlanner:
    """Proposes zero to two scans per host, some after a backoff, some retries."""

    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _some(self, hosts: Sequence[str]) -> list[PlannedTask]:
        return [
            PlannedTask(
                host_id=host,
                action=Action.SCAN,
                delay_seconds=self.rng.choice([0, 0, 0, 0.5, 3, 20, 200]),
                attempt=self.rng.choice([1, 1, 2]),
            )
            for host in hosts
            for _ in range(self.rng.choice([0, 1, 1, 2]))
        ]

    def initial_tasks(self, state: MissionState) -> list[PlannedTask]:
        return self._some(list(state.hosts))

    def next_tasks(self, state: MissionState, task: Task, result: ResultEvent) -> list[PlannedTask]:
        return [] if self.rng.random() < 0.15 else self._some([task.host_id])


def _check_kept_index(engine: MissionEngine) -> None:
    kept, index = engine._reusable, engine._index
    if kept is None or index is None or not index.fits(kept.pending_tasks):
        return
    by_host: dict[str, set[str]] = {}
    for task_id, entry in kept.pending_tasks.items():
        by_host.setdefault(entry.task.host_id, set()).add(task_id)
    assert {host: ids for host, ids in index.by_host.items() if ids} == by_host
    for entry in kept.pending_tasks.values():
        assert index.floor is not None
        assert index.floor <= entry.wakeup()


def _nothing_due_left(state: MissionState, now: Any) -> None:
    for entry in state.pending_tasks.values():
        if entry.dispatched_at is None:
            assert not entry.task.is_due(now), entry.task.task_id
        else:
            assert entry.dispatched_at == now or not entry.task.is_expired(now), entry.task.task_id


def _life(seed: int, steps: int = 150) -> None:
    rng = random.Random(seed)
    clock = make_clock()
    store, queue, bus = InMemoryMissionStore(), InMemoryTaskQueue(), InMemoryEventBus()

    def engine() -> MissionEngine:
        return MissionEngine(
            "m1", store=store, queue=queue, bus=bus, planner=RandomPlanner(rng), clock=clock
        )

    ours, rival = engine(), engine()
    options = MissionOptions(max_attempts=3, task_timeout_seconds=rng.choice([5.0, 60.0]))
    ours.start_mission(make_state(*(host_spec(f"h{i}") for i in range(4)), options=options))
    for _ in range(steps):
        state = store.load("m1")
        assert state is not None
        if state.status.is_terminal:
            return
        who = rival if rng.random() < 0.2 else ours  # the rival's saves make ours conflict
        roll = rng.random()
        sent = [e.task for e in state.pending_tasks.values() if e.dispatched_at is not None]
        if roll < 0.45 and sent:
            batch = rng.sample(sent, min(len(sent), rng.choice([1, 1, 3])))
            status = [ResultStatus.SUCCESS, ResultStatus.ERROR]
            who.process_results(
                [
                    ResultEvent.for_task(t, rng.choice(status), retriable=True, ts=clock.now())
                    for t in batch
                ]
            )
        elif roll < 0.75:
            who.tick()
        elif roll < 0.97:
            clock.advance(rng.choice([0.1, 1, 3, 5, 20, 61, 300]))
        else:
            who.cancel()
        _check_kept_index(ours)
        if rng.random() < 0.3:
            ticked = ours.tick()
            if ticked is not None and ticked.status is MissionStatus.RUNNING:
                _nothing_due_left(ticked, clock.now())


@pytest.mark.parametrize("seed", range(40))
def test_the_kept_index_stays_exact_and_ticks_leave_nothing_due(seed):
    _life(seed)


def test_the_engines_saves_of_its_kept_state_never_compare_entry_by_entry(monkeypatch):
    def refuse(*_args: object) -> bool:
        raise AssertionError("a save walked the mission's hosts")

    monkeypatch.setattr(state_parts._Copy, "unchanged_host", refuse)
    clock = make_clock()
    store, queue, bus = InMemoryMissionStore(), InMemoryTaskQueue(), InMemoryEventBus()
    engine = MissionEngine(
        "m1", store=store, queue=queue, bus=bus, planner=RuleBasedPlanner(), clock=clock
    )
    state = engine.start_mission(make_state(*(host_spec(f"h{i}") for i in range(20))))
    for entry in list(state.pending_tasks.values())[:5]:
        engine.process_result(ResultEvent.for_task(entry.task, ResultStatus.SUCCESS, data={}))
        engine.tick()
    assert engine._reusable is not None
    assert engine._reusable.counters.results_applied == 5


class _RecordingBus(InMemoryEventBus):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: list[float] = []

    def read(self, mission_id: str, timeout: float, max_count: int = 100) -> list[Delivery]:
        self.timeouts.append(timeout)
        return super().read(mission_id, timeout=0, max_count=max_count)


def test_a_backoff_a_batch_adds_shortens_the_loops_next_wait():
    clock: ManualClock = make_clock()
    bus = _RecordingBus()
    planner = RandomPlanner(random.Random(0))
    engine = MissionEngine(
        "m1",
        store=InMemoryMissionStore(),
        queue=InMemoryTaskQueue(),
        bus=bus,
        planner=planner,
        clock=clock,
    )
    planner.initial_tasks = lambda state: [PlannedTask("a", Action.SCAN)]  # type: ignore[method-assign]
    planner.next_tasks = lambda *_: [  # type: ignore[method-assign]
        PlannedTask("a", Action.SCAN, delay_seconds=7.0)
    ]
    state = engine.start_mission(
        make_state(host_spec("a"), options=MissionOptions(task_timeout_seconds=600.0))
    )
    (entry,) = state.pending_tasks.values()
    assert engine.step(max_wait=60.0)
    assert bus.timeouts[-1] == pytest.approx(60.0)  # the deadline, 600 s away, is further
    bus.publish(ResultEvent.for_task(entry.task, ResultStatus.ERROR, retriable=True))
    assert engine.step(max_wait=60.0)  # applies it: a retry 7 s from now
    assert engine.step(max_wait=60.0)
    assert bus.timeouts[-1] == pytest.approx(7.0)
