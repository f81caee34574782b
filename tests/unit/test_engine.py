"""MissionEngine: idempotency, failures and locks, deadlines, completion, cancel, limits.

Driven synchronously: a ManualClock, in-memory ports, and (where a whole flow is needed) the
real agents over the simulated lab, called in the test's own thread.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence

import pytest
import structlog
from structlog.testing import capture_logs

from agents.os_agents import AGENTS
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.codec import encode
from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from overseer.mission_view import render_table
from reaper_engine.admission import admit
from reaper_engine.clock import ManualClock
from reaper_engine.effects import Effects as _FakeEffects
from reaper_engine.engine import (
    BAD_DATA_ERROR,
    TIMEOUT_ERROR,
    ApplyResult,
    MissionEngine,
)
from reaper_engine.errors import ConcurrentUpdateError
from reaper_engine.models import (
    OS,
    Action,
    AgentType,
    HostOutcome,
    HostStatus,
    KillOutcome,
    MissionKind,
    MissionOptions,
    MissionState,
    MissionStatus,
    ReapParams,
    ResultEvent,
    ResultStatus,
    Task,
)
from reaper_engine.planner import PlannedTask
from reaper_engine.rule_planner import RuleBasedPlanner
from tests.factories import clock as make_clock
from tests.factories import host_spec, make_state, make_task, result_for
from tests.integration.conftest import wait_until

LINUX = host_spec("lnx", OS.LINUX, options={"process_table": "linux-incident"})
MAC = host_spec("mac", OS.MACOS, user="dana", options={"process_table": "macos-dev"})
DOWN = host_spec("down", OS.WINDOWS, user="LAB\\qa", options={"fail": "unreachable"})


class Rig:
    """An engine over in-memory ports, with the real agents available to execute tasks."""

    def __init__(self, *hosts, kind=MissionKind.REAP, options=None, planner=None) -> None:
        self.clock: ManualClock = make_clock()
        self.store = InMemoryMissionStore()
        self.queue = InMemoryTaskQueue()
        self.bus = InMemoryEventBus()
        self.lab = SimulatedLab(self.clock)
        router = TransportRouter({LINUX.transport: self.lab})
        self.agents = {
            t: cls(self.queue, self.bus, router, clock=self.clock) for t, cls in AGENTS.items()
        }
        self.engine = self.new_engine(planner)
        self.initial = make_state(
            *(hosts or (LINUX,)),
            kind=kind,
            options=options or MissionOptions(retry_backoff_seconds=1.0),
        )
        self.published: list[Task] = []

    def new_engine(self, planner=None) -> MissionEngine:
        return MissionEngine(
            "m1",
            store=self.store,
            queue=self.queue,
            bus=self.bus,
            planner=planner or RuleBasedPlanner(),
            clock=self.clock,
        )

    def start(self) -> MissionState:
        return self.engine.start_mission(self.initial)

    def state(self) -> MissionState:
        state = self.store.load("m1")
        assert state is not None
        return state

    def take(self) -> list[Task]:
        """Every task currently queued, across agent types."""
        tasks = []
        for agent_type in AgentType:
            while (task := self.queue.consume(agent_type, timeout=0)) is not None:
                tasks.append(task)
        self.published.extend(tasks)
        return tasks

    def run(self, task: Task) -> ResultEvent:
        return self.agents[task.agent_type].handle(task)

    def drain(self, max_rounds: int = 50) -> MissionState:
        """Start if needed, then execute queued tasks and apply their results, advancing time
        through backoffs, until the mission ends."""
        if self.store.load("m1") is None:
            self.start()
        for _ in range(max_rounds):
            tasks = self.take()
            for task in tasks:
                assert self.engine.process_result(self.run(task)) is ApplyResult.APPLIED
            state = self.state()
            if state.status.is_terminal:
                return state
            if not tasks:
                wakeup = state.next_wakeup()
                assert wakeup is not None, "nothing queued and nothing pending, yet not finished"
                self.clock.advance((wakeup - self.clock.now()).total_seconds())
                self.engine.tick()
        raise AssertionError("mission did not finish")


def only(tasks: Sequence[Task]) -> Task:
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_start_dispatches_one_discover_per_host():
    rig = Rig(LINUX, MAC)
    state = rig.start()
    assert state.status is MissionStatus.RUNNING
    assert state.version == 1
    tasks = rig.take()
    assert sorted((t.host_id, t.action) for t in tasks) == [
        ("lnx", Action.DISCOVER),
        ("mac", Action.DISCOVER),
    ]
    assert {t.agent_type for t in tasks} == {AgentType.LINUX, AgentType.MACOS}
    assert all(p.dispatched_at is not None for p in state.pending_tasks.values())
    assert state.counters.tasks_dispatched == 2


def test_success_marks_host_healthy_stores_facts_and_plans_next_step():
    rig = Rig()
    rig.start()
    discover = only(rig.take())
    assert rig.engine.process_result(rig.run(discover)) is ApplyResult.APPLIED
    state = rig.state()
    host = state.hosts["lnx"]
    assert host.last_status is HostStatus.HEALTHY
    assert host.facts["hostname"] == "dev-machine"
    assert list(host.last_tasks) == [discover.task_id]
    assert discover.task_id in state.completed_tasks
    assert only(rig.take()).action is Action.SCAN


def test_same_result_twice_changes_nothing_the_second_time():
    rig = Rig()
    rig.start()
    result = rig.run(only(rig.take()))
    assert rig.engine.process_result(result) is ApplyResult.APPLIED
    before = rig.state()
    queued = rig.queue.size(AgentType.LINUX)
    assert rig.engine.process_result(result) is ApplyResult.DUPLICATE
    after = rig.state()
    assert after == before  # version included: nothing was even saved
    assert rig.queue.size(AgentType.LINUX) == queued


def test_results_for_unknown_tasks_missions_or_mismatched_hosts_are_dropped():
    rig = Rig()
    rig.start()
    task = only(rig.take())
    before = rig.state()
    stranger = result_for(task.model_copy(update={"task_id": "nope"}))
    other_mission = result_for(task.model_copy(update={"mission_id": "m-other"}))
    wrong_host = result_for(task).model_copy(update={"host_id": "mac"})
    with capture_logs() as logs:
        assert rig.engine.process_result(stranger) is ApplyResult.UNKNOWN_TASK
        assert rig.engine.process_result(other_mission) is ApplyResult.UNKNOWN_MISSION
        assert rig.engine.process_result(wrong_host) is ApplyResult.MISMATCH
    assert rig.state() == before
    assert [e["event"] for e in logs] == [
        "result_unknown_task",
        "result_unknown_mission",
        "result_mismatch",
    ]


def test_engine_for_a_missing_mission_drops_results():
    rig = Rig()  # never started: the store has no mission m1
    ghost = result_for(make_task(Action.DISCOVER, host=LINUX, mission_id="m1"))
    assert rig.engine.process_result(ghost) is ApplyResult.UNKNOWN_MISSION


def test_error_degrades_host_counts_failure_and_retries_after_backoff():
    rig = Rig(DOWN)
    rig.start()
    first = only(rig.take())
    rig.engine.process_result(rig.run(first))
    state = rig.state()
    host = state.hosts["down"]
    assert (host.last_status, host.failure_count, host.locked) == (HostStatus.DEGRADED, 1, False)
    assert state.counters.errors == 1
    assert state.counters.retries == 1
    # The retry waits out its backoff: nothing is queued until the clock passes it.
    assert rig.take() == []
    rig.clock.advance(0.5)
    rig.engine.tick()
    assert rig.take() == []
    rig.clock.advance(0.6)
    rig.engine.tick()
    retry = only(rig.take())
    assert (retry.action, retry.attempt) == (Action.DISCOVER, 2)
    assert retry.task_id != first.task_id


def test_host_is_locked_at_max_failures_and_gets_no_more_tasks():
    rig = Rig(DOWN, LINUX, options=MissionOptions(max_attempts=5, retry_backoff_seconds=1.0))
    state = rig.drain()
    host = state.hosts["down"]
    assert host.locked
    assert host.last_status is HostStatus.LOCKED
    assert host.failure_count == host.max_failures == 3
    assert "HOST_UNREACHABLE" in (host.lock_reason or "")
    assert host.outcome is HostOutcome.LOCKED
    down_tasks = [t for t in rig.published if t.host_id == "down"]
    assert [t.attempt for t in down_tasks] == [1, 2, 3]  # max_attempts=5, but locked at 3
    assert state.hosts["lnx"].outcome is HostOutcome.REAPED
    assert state.status is MissionStatus.COMPLETED


def test_mission_fails_when_every_host_fails():
    rig = Rig(DOWN)
    state = rig.drain()
    assert state.status is MissionStatus.FAILED
    assert state.finished_at is not None


def test_non_retriable_error_ends_the_host_as_failed():
    rig = Rig()
    rig.start()
    task = only(rig.take())
    rig.engine.process_result(
        result_for(task, ResultStatus.ERROR, error_code="BOOM", retriable=False, summary="boom")
    )
    state = rig.state()
    assert state.status is MissionStatus.FAILED
    assert state.hosts["lnx"].outcome is HostOutcome.FAILED
    assert "BOOM" in state.hosts["lnx"].outcome_detail
    # Failed for good: status error, not merely degraded; and the table shows it.
    assert state.hosts["lnx"].last_status is HostStatus.ERROR
    row = next(line for line in render_table(state).splitlines() if line.startswith("lnx "))
    assert row.split()[2] == "error"


def test_a_host_that_runs_out_of_retries_ends_in_error_status():
    rig = Rig(DOWN, LINUX, options=MissionOptions(max_attempts=2, retry_backoff_seconds=1.0))
    state = rig.drain()
    down = state.hosts["down"]
    assert (down.outcome, down.failure_count, down.locked) == (HostOutcome.FAILED, 2, False)
    assert down.last_status is HostStatus.ERROR
    assert state.hosts["lnx"].last_status is HostStatus.HEALTHY
    assert state.status is MissionStatus.COMPLETED


def test_a_failed_host_given_a_new_task_is_no_longer_in_error():
    rig = Rig()
    rig.start()
    task = only(rig.take())
    rig.engine.process_result(result_for(task, ResultStatus.ERROR, error_code="BOOM"))
    state = rig.state()
    assert state.hosts["lnx"].last_status is HostStatus.ERROR
    admit(state, [PlannedTask("lnx", Action.DISCOVER)], _FakeEffects(), rig.clock.now())
    host = state.hosts["lnx"]
    assert (host.outcome, host.last_status) == (None, HostStatus.DEGRADED)


def test_overdue_task_becomes_a_timeout_and_late_result_is_ignored():
    rig = Rig(options=MissionOptions(task_timeout_seconds=10, retry_backoff_seconds=1.0))
    rig.start()
    task = rig.state().pending_for("lnx")[0]
    rig.clock.advance(9)
    rig.engine.tick()
    assert rig.state().counters.timeouts == 0
    rig.clock.advance(2)
    rig.engine.tick()
    state = rig.state()
    record = state.completed_tasks[task.task_id]
    assert (record.status, record.error_code) == (ResultStatus.ERROR, TIMEOUT_ERROR)
    assert state.counters.timeouts == 1
    assert state.hosts["lnx"].failure_count == 1
    # The stale task was withdrawn from the queue: it must never run late.
    assert rig.queue.size(AgentType.LINUX) == 0
    # The agent's late answer changes nothing.
    assert rig.engine.process_result(result_for(task)) is ApplyResult.DUPLICATE
    # And the planner retried it.
    rig.clock.advance(1)
    rig.engine.tick()
    retry = only(rig.take())
    assert (retry.action, retry.attempt) == (Action.DISCOVER, 2)


def test_reap_mission_completes_with_each_host_outcome():
    rig = Rig(LINUX, MAC)
    state = rig.drain()
    assert state.status is MissionStatus.COMPLETED
    assert not state.pending_tasks
    lnx, mac = state.hosts["lnx"], state.hosts["mac"]
    assert (lnx.outcome, lnx.successful_kills) == (HostOutcome.REAPED, 8)
    assert (mac.outcome, mac.successful_kills) == (HostOutcome.REAPED, 4)
    actions = [t.action for t in rig.published if t.host_id == "lnx"]
    assert actions == [Action.DISCOVER, Action.SCAN, Action.REAP, Action.VERIFY]
    assert state.counters.kills == 12
    assert {k.outcome for k in lnx.kills} == {KillOutcome.TERMINATED, KillOutcome.KILLED}
    assert not lnx.survivors


def test_audit_mission_is_read_only():
    rig = Rig(LINUX, kind=MissionKind.AUDIT)
    state = rig.drain()
    assert [t.action for t in rig.published] == [Action.DISCOVER, Action.SCAN]
    assert state.hosts["lnx"].outcome is HostOutcome.FINDINGS
    assert state.counters.kills == 0
    assert rig.lab.host(LINUX).signals_received == []


class _Pushy:
    """A planner that tries to reap lnx during an audit and retries it beyond max_attempts;
    every other host it plans as the rule-based planner does."""

    name = "pushy"

    def initial_tasks(self, state):
        others = [p for p in RuleBasedPlanner().initial_tasks(state) if p.host_id != "lnx"]
        return [
            PlannedTask("lnx", Action.REAP, ReapParams(approved=()).model_dump(mode="json")),
            PlannedTask("lnx", Action.DISCOVER, attempt=99),
            *others,
        ]

    def next_tasks(self, state, task, result):
        return RuleBasedPlanner().next_tasks(state, task, result)


REFUSED = (
    "no task admitted: reap refused (audit missions are read-only); "
    "discover refused (attempt 99 exceeds max_attempts)"
)


def test_engine_refuses_what_the_planner_may_not_do():
    rig = Rig(LINUX, MAC, kind=MissionKind.AUDIT, planner=_Pushy())
    with capture_logs() as logs:
        rig.start()
    assert [t.host_id for t in rig.take()] == ["mac"]
    refusals = [e["reason"] for e in logs if e["event"] == "planned_task_refused"]
    assert refusals == ["audit missions are read-only", "attempt 99 exceeds max_attempts"]
    state = rig.drain()
    # The host that never got a task still ends with an outcome, and says why.
    lnx, mac = state.hosts["lnx"], state.hosts["mac"]
    assert (lnx.outcome, lnx.outcome_detail) == (HostOutcome.INCOMPLETE, REFUSED)
    assert lnx.last_status is HostStatus.UNKNOWN
    assert mac.outcome is HostOutcome.FINDINGS
    assert state.status is MissionStatus.COMPLETED


def test_a_mission_whose_only_host_had_every_task_refused_fails():
    rig = Rig(LINUX, kind=MissionKind.AUDIT, planner=_Pushy())
    state = rig.start()
    assert rig.take() == []
    assert (state.hosts["lnx"].outcome, state.hosts["lnx"].outcome_detail) == (
        HostOutcome.INCOMPLETE,
        REFUSED,
    )
    assert state.status is MissionStatus.FAILED
    assert state.finished_at is not None


class _Only:
    """The rule-based planner, restricted to some hosts: the others get nothing at all."""

    name = "only"

    def __init__(self, *host_ids: str) -> None:
        self.host_ids = host_ids

    def initial_tasks(self, state):
        return [p for p in RuleBasedPlanner().initial_tasks(state) if p.host_id in self.host_ids]

    def next_tasks(self, state, task, result):
        return RuleBasedPlanner().next_tasks(state, task, result)


def test_a_planner_that_proposes_nothing_leaves_every_host_incomplete_and_the_mission_failed():
    rig = Rig(LINUX, MAC, planner=_Only())
    with capture_logs() as logs:
        state = rig.start()
    assert rig.take() == []
    assert {h.host_id: (h.outcome, h.outcome_detail) for h in state.hosts.values()} == {
        "lnx": (HostOutcome.INCOMPLETE, "nothing planned"),
        "mac": (HostOutcome.INCOMPLETE, "nothing planned"),
    }
    assert state.status is MissionStatus.FAILED
    events = [e["event"] for e in logs]
    assert events.index("mission_started") < events.index("mission_finished")


def test_a_host_the_planner_never_plans_for_ends_incomplete_when_the_others_finish():
    rig = Rig(LINUX, MAC, planner=_Only("mac"))
    rig.start()
    assert rig.state().hosts["lnx"].outcome is None  # the mission is still running
    state = rig.drain()
    assert (state.hosts["lnx"].outcome, state.hosts["lnx"].outcome_detail) == (
        HostOutcome.INCOMPLETE,
        "nothing planned",
    )
    assert state.hosts["mac"].outcome is HostOutcome.REAPED
    assert state.status is MissionStatus.COMPLETED


class _BrokenAtStart:
    name = "broken-at-start"

    def initial_tasks(self, state):
        raise RuntimeError("no plan today")

    def next_tasks(self, state, task, result):
        return []


def test_a_planner_that_raises_at_start_leaves_every_host_incomplete_and_the_mission_failed():
    rig = Rig(LINUX, MAC, planner=_BrokenAtStart())
    with capture_logs() as logs:
        state = rig.start()
    assert rig.take() == []
    for host in state.hosts.values():
        assert host.outcome is HostOutcome.INCOMPLETE
        assert (
            host.outcome_detail == "nothing planned: planner failed (RuntimeError: no plan today)"
        )
    assert state.status is MissionStatus.FAILED
    assert rig.state() == state
    # Logged once the mission is stored, in order, each once.
    events = [e["event"] for e in logs]
    assert events == ["mission_started", "planner_failed", "mission_finished"]
    failed = next(e for e in logs if e["event"] == "planner_failed")
    assert isinstance(failed["exc_info"], RuntimeError)


def test_a_mission_that_cannot_be_stored_logs_nothing_about_it():
    rig = Rig(planner=_Only())  # would finish at once: nothing planned
    rig.start()
    with capture_logs() as logs, pytest.raises(ValueError, match="already exists"):
        rig.new_engine(_Only()).start_mission(rig.initial)
    assert logs == []


class _Broken:
    name = "broken"

    def initial_tasks(self, state):
        return RuleBasedPlanner().initial_tasks(state)

    def next_tasks(self, state, task, result):
        raise RuntimeError("planner exploded")


def test_a_crashing_planner_stalls_nothing():
    rig = Rig(planner=_Broken())
    rig.start()
    with capture_logs() as logs:
        assert rig.engine.process_result(rig.run(only(rig.take()))) is ApplyResult.APPLIED
    assert any(e["event"] == "planner_failed" for e in logs)
    state = rig.state()
    # Nothing more was planned, so the mission ends; a host never scanned is not "clean".
    assert state.status is MissionStatus.FAILED
    assert state.hosts["lnx"].outcome is HostOutcome.INCOMPLETE
    assert "never scanned" in state.hosts["lnx"].outcome_detail


def test_kill_budget_limits_how_many_processes_a_host_may_lose():
    rig = Rig(options=MissionOptions(kill_budget_per_host=3))
    state = rig.drain()
    host = state.hosts["lnx"]
    assert host.successful_kills == 3
    assert "kill budget" in host.outcome_detail
    reap = next(t for t in rig.published if t.action is Action.REAP)
    assert len(ReapParams.model_validate(reap.params).approved) == 3
    # The most urgent go first: the three kept are all critical.
    assert {k.priority.value for k in host.kills} == {"critical"}


def test_dry_run_is_enforced_by_the_engine_and_sends_no_signal():
    rig = Rig(options=MissionOptions(dry_run=True))
    state = rig.drain()
    assert all(t.dry_run for t in rig.published)
    host = state.hosts["lnx"]
    assert {k.outcome for k in host.kills} == {KillOutcome.DRY_RUN}
    assert host.outcome is HostOutcome.FINDINGS
    assert rig.lab.host(LINUX).signals_received == []
    assert state.counters.kills == 0
    assert Action.VERIFY not in [t.action for t in rig.published]


def test_invalid_result_data_counts_as_a_failure():
    rig = Rig()
    rig.start()
    task = only(rig.take())
    rig.engine.process_result(result_for(task, data={"hostname": 12, "nonsense": True}))
    state = rig.state()
    record = state.completed_tasks[task.task_id]
    assert (record.status, record.error_code) == (ResultStatus.ERROR, BAD_DATA_ERROR)
    assert state.hosts["lnx"].failure_count == 1


def test_cancel_withdraws_queued_tasks_and_ignores_late_results():
    rig = Rig(LINUX, MAC)
    rig.start()
    in_flight = rig.queue.consume(AgentType.LINUX, timeout=0)
    assert in_flight is not None
    state = rig.engine.cancel("operator said so")
    assert state is not None
    assert state.status is MissionStatus.CANCELLED
    assert {h.outcome for h in state.hosts.values()} == {HostOutcome.CANCELLED}
    assert rig.queue.size(AgentType.MACOS) == 0  # the queued discover was withdrawn
    # The withdrawn task left a record: its late answer is recognised and changes nothing.
    assert rig.engine.process_result(rig.run(in_flight)) is ApplyResult.DUPLICATE
    record = rig.state().completed_tasks[in_flight.task_id]
    assert record.error_code == "CANCELLED"
    assert rig.engine.cancel() == rig.state()  # cancelling twice changes nothing
    assert rig.engine.tick() == rig.state()


def test_two_engines_applying_results_concurrently_lose_nothing():
    rig = Rig(
        *(
            host_spec(f"h{i}", OS.LINUX, options={"process_table": "linux-ci"}, user="ci")
            for i in range(8)
        )
    )
    rig.start()
    results = [rig.run(t) for t in rig.take()]
    engines = [rig.engine, rig.new_engine()]
    barrier = threading.Barrier(2)
    verdicts: list[ApplyResult] = []

    def apply(engine: MissionEngine, batch: list[ResultEvent]) -> None:
        barrier.wait(timeout=5)
        verdicts.extend(engine.process_result(result) for result in batch)

    threads = [
        threading.Thread(target=apply, args=(e, results[i::2])) for i, e in enumerate(engines)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert verdicts == [ApplyResult.APPLIED] * 8
    state = rig.state()
    assert state.counters.results_applied == 8
    assert all(h.last_status is HostStatus.HEALTHY for h in state.hosts.values())
    assert len(rig.take()) == 8  # one scan per host, none lost, none doubled


def test_poison_event_is_dead_lettered_after_max_deliveries(monkeypatch):
    rig = Rig()
    rig.start()
    rig.bus.publish(rig.run(only(rig.take())))
    rig.engine.max_deliveries = 3

    def explode(event):
        raise ValueError("cannot apply")

    monkeypatch.setattr(rig.engine, "process_result", explode)
    with capture_logs():
        for expected_deliveries in (1, 2, 3):
            batch = (
                rig.bus.read("m1", timeout=0)
                if expected_deliveries == 1
                else rig.bus.claim_stale("m1", min_idle_seconds=0)
            )
            delivery = only(batch)
            assert delivery.deliveries == expected_deliveries
            rig.engine.handle_delivery(delivery)
    assert rig.bus.pending_count("m1") == 0
    dead = only(rig.bus.dead_letters("m1"))
    assert "cannot apply" in dead.error


def test_a_new_engine_resumes_a_mission_and_applies_each_result_once():
    rig = Rig(LINUX, MAC)
    rig.start()
    # The first engine dies after dispatching; agents keep working and publish results.
    for task in rig.take():
        rig.bus.publish(rig.run(task))
    # One result was read by the dead engine but never acknowledged.
    unacked = rig.bus.read("m1", timeout=0, max_count=1)
    assert len(unacked) == 1
    successor = rig.new_engine()
    stop = threading.Event()
    worker_stop = threading.Event()
    pool = [
        threading.Thread(target=a.run, args=(worker_stop, 0.5), daemon=True)
        for a in rig.agents.values()
    ]
    for t in pool:
        t.start()
    try:
        # The loop uses the real clock for waiting; the manual clock never reaches a deadline.
        final = successor.run_event_loop(stop, max_wait=0.2, resume=True)
    finally:
        worker_stop.set()
        rig.queue.interrupt()
        for t in pool:
            t.join(5)
    assert final is not None
    assert final.status is MissionStatus.COMPLETED
    assert final.counters.results_applied == len(final.completed_tasks)
    assert {h.outcome for h in final.hosts.values()} == {HostOutcome.REAPED}
    assert rig.bus.pending_count("m1") == 0


@pytest.mark.parametrize("status", [ResultStatus.SUCCESS, ResultStatus.PARTIAL])
def test_partial_results_degrade_without_counting_a_failure(status):
    rig = Rig()
    rig.start()
    task = only(rig.take())
    result = rig.run(task).model_copy(update={"status": status})
    rig.engine.process_result(result)
    host = rig.state().hosts["lnx"]
    expected = HostStatus.HEALTHY if status is ResultStatus.SUCCESS else HostStatus.DEGRADED
    assert (host.last_status, host.failure_count) == (expected, 0)


def test_a_host_marked_dry_run_is_only_rehearsed_even_in_a_real_mission():
    careful = host_spec(
        "mac", OS.MACOS, user="dana", dry_run=True, options={"process_table": "macos-dev"}
    )
    rig = Rig(LINUX, careful)
    state = rig.drain()
    assert all(t.dry_run for t in rig.published if t.host_id == "mac")
    assert not any(t.dry_run for t in rig.published if t.host_id == "lnx")
    assert state.hosts["mac"].outcome is HostOutcome.FINDINGS
    assert rig.lab.host(careful).signals_received == []
    assert state.hosts["lnx"].outcome is HostOutcome.REAPED


def _to_reap(rig: Rig) -> Task:
    """Run discover and scan; return the reap task the engine then dispatches."""
    rig.start()
    for _ in range(2):
        rig.engine.process_result(rig.run(only(rig.take())))
    reap = only(rig.take())
    assert reap.action is Action.REAP
    return reap


def test_a_reap_that_finishes_after_its_timeout_still_has_its_kills_recorded():
    rig = Rig(options=MissionOptions(task_timeout_seconds=10, max_attempts=1))
    reap = _to_reap(rig)
    result = rig.run(reap)  # the agent kills, but the answer is slow
    rig.clock.advance(11)
    rig.engine.tick()  # the engine gives up on the task: a timeout
    assert rig.state().counters.timeouts == 1
    assert rig.engine.process_result(result) is ApplyResult.LATE
    state = rig.state()
    assert state.hosts["lnx"].successful_kills == 8
    assert state.counters.kills == 8
    assert state.completed_tasks[reap.task_id].late_applied
    assert rig.engine.process_result(result) is ApplyResult.DUPLICATE  # and only once
    assert rig.state().counters.kills == 8


def test_reap_tasks_carry_the_remaining_budget_and_pending_reaps_count_against_it():
    rig = Rig(options=MissionOptions(kill_budget_per_host=10))
    reap = _to_reap(rig)
    params = ReapParams.model_validate(reap.params)
    assert params.max_kills == 10
    state = rig.state()
    # A second reap proposed while the first is pending gets nothing: the budget is in use.
    fx = _FakeEffects()
    admit(  # the admission rule itself
        state, [PlannedTask("lnx", Action.REAP, reap.params)], fx, rig.clock.now()
    )
    # Logged once the change is saved: here, only recorded.
    assert [f["reason"] for _, e, f in fx.logs if e == "planned_task_refused"] == [
        "kill budget exhausted"
    ]


def test_resume_withdraws_queued_tasks_of_a_cancelled_mission_again():
    rig = Rig(LINUX, MAC)
    rig.start()
    cancelled = rig.engine.cancel("crash test")
    assert cancelled is not None
    # As if the engine had died after saving the cancel but before discarding the queue:
    for record in cancelled.completed_tasks.values():
        task = make_task(Action.DISCOVER, host=LINUX, task_id=record.task_id)
        rig.queue.publish(task)
    assert rig.queue.size(AgentType.LINUX) == 2
    rig.new_engine().resume()
    assert rig.queue.size(AgentType.LINUX) == 0


class _FlakyBus(InMemoryEventBus):
    """Fails the first two reads, as a bus whose server restarts would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    def read(self, mission_id, *, timeout, max_count=100):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("bus down")
        return super().read(mission_id, timeout=timeout, max_count=max_count)


def test_the_event_loop_survives_bus_errors_and_finishes_the_mission():
    rig = Rig()
    rig.bus = _FlakyBus()
    rig.engine = rig.new_engine()
    rig.start()
    for task in rig.take():
        rig.bus.publish(rig.run(task))
    worker_stop, stop = threading.Event(), threading.Event()
    agent = rig.agents[AgentType.LINUX]
    agent.bus = rig.bus
    worker = threading.Thread(target=agent.run, args=(worker_stop, 0.5), daemon=True)
    worker.start()
    try:
        with capture_logs() as logs:
            final = rig.engine.run_event_loop(stop, max_wait=0.2)
    finally:
        worker_stop.set()
        rig.queue.interrupt()
        worker.join(5)
    assert final is not None
    assert final.status is MissionStatus.COMPLETED
    errors = [e for e in logs if e["event"] == "engine_loop_error"]
    # The traceback once per run of failures, then one short line per retry; then recovery.
    assert [("exc_info" in e, e["log_level"], e.get("failures")) for e in errors] == [
        (True, "error", None),
        (False, "warning", 2),
    ]
    assert [e["failures"] for e in logs if e["event"] == "engine_loop_recovered"] == [2]


def test_a_batch_is_applied_in_one_save_and_acknowledged():
    rig = Rig(LINUX, MAC)
    rig.start()
    for task in rig.take():
        rig.bus.publish(rig.run(task))
    before = rig.state().version
    batch = rig.bus.read("m1", timeout=0)
    assert len(batch) == 2
    rig.engine.handle_deliveries(batch)
    assert rig.state().version == before + 1  # one compare-and-set for the whole batch
    assert rig.state().counters.results_applied == 2
    assert rig.bus.pending_count("m1") == 0


def test_a_poison_event_in_a_batch_does_not_hold_back_the_others(monkeypatch):
    rig = Rig(LINUX, MAC)
    rig.start()
    tasks = rig.take()
    for task in tasks:
        rig.bus.publish(rig.run(task))
    poison = tasks[0].task_id
    real_apply = rig.engine._apply_event

    def apply_or_explode(state, event, fx, now):
        if event.task_id == poison:
            raise ValueError("cannot apply")
        return real_apply(state, event, fx, now)

    monkeypatch.setattr(rig.engine, "_apply_event", apply_or_explode)
    with capture_logs():
        rig.engine.handle_deliveries(rig.bus.read("m1", timeout=0))
    state = rig.state()
    assert poison in state.pending_tasks  # not applied, left for re-delivery
    assert tasks[1].task_id in state.completed_tasks
    assert rig.bus.pending_count("m1") == 1


def test_a_foreign_event_in_a_batch_is_dead_lettered_and_the_others_apply():
    rig = Rig(LINUX, MAC)
    rig.start()
    first, second = (rig.run(task) for task in rig.take())
    stray = first.model_copy(update={"mission_id": "m-other", "task_id": "t-stray"})
    rig.bus.publish(first)
    rig.bus.push_raw("m1", encode(stray))  # in m1's stream, as a bug or a forger could put it
    rig.bus.publish(second)
    batch = rig.bus.read("m1", timeout=0)
    assert len(batch) == 3
    rig.engine.handle_deliveries(batch)
    state = rig.state()
    assert {first.task_id, second.task_id} <= set(state.completed_tasks)
    assert state.counters.results_applied == 2
    assert rig.bus.pending_count("m1") == 0
    dead = only(rig.bus.dead_letters("m1"))
    assert "EVENT_FOREIGN_MISSION" in dead.error
    assert "m-other" in dead.error


class FlakyQueue(InMemoryTaskQueue):
    """Fails the next ``failures`` batch publishes, as a Redis outage would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def publish_many(self, tasks: Sequence[Task]) -> int:
        if self.failures and tasks:
            self.failures -= 1
            raise ConnectionError("backend went away")
        return super().publish_many(tasks)


def test_tasks_a_failed_publish_left_undispatched_go_out_once_the_backend_answers():
    rig = Rig(LINUX)
    queue = rig.queue = FlakyQueue()
    rig.engine = rig.new_engine()
    rig.start()
    discover = only(rig.take())
    router = TransportRouter({LINUX.transport: rig.lab})
    agent = AGENTS[discover.agent_type](rig.queue, rig.bus, router, clock=rig.clock)
    rig.queue.failures = 1  # the scan task the discover result leads to is saved, not queued
    rig.bus.publish(agent.handle(discover))
    stop = threading.Event()
    loop = threading.Thread(
        target=rig.engine.run_event_loop, args=(stop,), kwargs={"max_wait": 0.05}
    )
    loop.start()
    try:
        scan = wait_for_task(queue, AgentType.LINUX)
    finally:
        stop.set()
        rig.bus.interrupt()
        loop.join(10)
    assert not loop.is_alive()
    assert scan.action is Action.SCAN
    assert scan.task_id in rig.state().pending_tasks


def test_a_result_that_failed_to_apply_is_retried_at_once_not_after_the_redelivery_delay():
    rig = Rig(LINUX)
    rig.start()
    rig.bus.publish(rig.run(only(rig.take())))
    rig.engine.redeliver_after_seconds = 3600  # only the prompt retry can apply it in time
    real = rig.engine.process_result
    failures = [1]

    def flaky(event):
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("backend went away")
        return real(event)

    rig.engine.process_result = flaky  # type: ignore[method-assign]
    stop = threading.Event()
    loop = threading.Thread(
        target=rig.engine.run_event_loop, args=(stop,), kwargs={"max_wait": 0.05}
    )
    loop.start()
    try:
        wait_until(lambda: rig.state().counters.results_applied == 1, timeout=30, what="the retry")
    finally:
        stop.set()
        rig.bus.interrupt()
        loop.join(10)
    assert not loop.is_alive()
    assert rig.bus.pending_count("m1") == 0
    assert rig.bus.dead_letters("m1") == []


def wait_for_task(queue: InMemoryTaskQueue, agent_type: AgentType) -> Task:
    found: list[Task] = []

    def arrived() -> bool:
        task = queue.consume(agent_type, timeout=0.1)
        if task is not None:
            found.append(task)
        return bool(found)

    wait_until(arrived, timeout=30, what="the task to be queued")
    return found[0]


def test_a_task_published_after_another_process_cancelled_is_pulled_when_the_loop_ends():
    rig = Rig(LINUX, MAC)
    rig.start()
    late = rig.take()[0]
    rig.new_engine().cancel("operator")  # as `reaper mission cancel` does, in its own process
    rig.queue.publish(late)  # the engine's publish from just before the cancel lands now
    assert rig.queue.size(late.agent_type) == 1
    final = rig.engine.run_event_loop(threading.Event(), max_wait=0.05)
    assert final is not None
    assert final.status is MissionStatus.CANCELLED
    assert rig.queue.size(late.agent_type) == 0


def test_the_loop_reuses_the_state_it_saved_but_sees_another_process_change_it():
    rig = Rig(LINUX)
    rig.start()
    loads: list[str] = []
    load = rig.store.load

    def counting_load(mission_id: str):
        loads.append(mission_id)
        return load(mission_id)

    rig.store.load = counting_load  # type: ignore[method-assign]
    rig.bus.publish(rig.run(only(rig.take())))
    assert rig.engine.step(0.01)  # a tick, then the result: one load for both
    assert rig.engine.step(0.01)  # nothing new: the state it saved is current, no load
    assert loads == ["m1"]
    assert rig.state().counters.results_applied == 1
    rig.new_engine().cancel("operator")  # another process
    loads.clear()
    assert not rig.engine.step(0.01)  # the version moved: loaded again, and the loop ends
    assert loads == ["m1"]


def _conflict_first_saves(rig: Rig, conflicts: int) -> None:
    """Another process saves the mission just before each of our next ``conflicts`` saves."""
    save = rig.store.save
    left = [conflicts]

    def conflicting_save(state: MissionState) -> MissionState:
        if left[0]:
            left[0] -= 1
            stored = rig.store.load(state.mission_id)
            assert stored is not None
            save(stored)  # bumps the version: ours is now stale
        return save(state)

    rig.store.save = conflicting_save  # type: ignore[method-assign]


def test_a_change_retried_after_a_save_conflict_logs_what_it_did_once():
    rig = Rig(host_spec("lnx", OS.LINUX, max_failures=1, options={"process_table": "linux-ci"}))
    rig.start()
    task = only(rig.take())
    _conflict_first_saves(rig, 1)
    failure = result_for(task, ResultStatus.ERROR, error_code="BOOM", retriable=True)
    with capture_logs() as logs:
        assert rig.engine.process_result(failure) is ApplyResult.APPLIED
    assert [e["event"] for e in logs] == [
        "mission_save_conflict_retrying",
        "result_applied",
        "host_locked",
        "mission_finished",
    ]
    state = rig.state()
    assert (state.counters.results_applied, state.hosts["lnx"].failure_count) == (1, 1)
    assert state.status is MissionStatus.FAILED


def test_a_change_never_saved_logs_nothing_of_what_it_would_have_done():
    rig = Rig()
    rig.start()
    task = only(rig.take())
    _conflict_first_saves(rig, 100)  # always beaten to it
    with capture_logs() as logs, pytest.raises(ConcurrentUpdateError):
        rig.engine.process_result(result_for(task, ResultStatus.ERROR, retriable=False))
    assert {e["event"] for e in logs} == {"mission_save_conflict_retrying"}
    assert task.task_id in rig.state().pending_tasks


def test_a_listener_hears_every_change_in_order():
    rig = Rig(kind=MissionKind.AUDIT)
    heard: list[tuple[str, str | None, str]] = []
    rig.engine.listener = lambda notice: heard.append((notice.kind, notice.host_id, notice.detail))
    rig.drain()
    assert heard == [
        ("dispatched", "lnx", "discover (attempt 1)"),
        (
            "applied",
            "lnx",
            "discover success: dev-machine: Ubuntu 24.04 LTS (kernel 6.8), 20 processes",
        ),
        ("dispatched", "lnx", "scan (attempt 1)"),
        ("applied", "lnx", "scan success: 20 processes, 11 finding(s) (3 not killable)"),
        ("host_done", "lnx", "findings: 8 rogue processes found"),
        ("mission_finished", None, "completed"),
    ]


def test_an_engine_whose_logger_drops_info_still_logs_warnings():
    # The engine does not even build the lines its logger would drop: the others still go out.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    rig = Rig()
    rig.start()
    task = only(rig.take())
    with capture_logs() as logs:
        result = result_for(task, data={"hostname": 42})  # not DiscoverData
        assert rig.engine.process_result(result) is ApplyResult.APPLIED
    assert [(e["event"], e["log_level"]) for e in logs] == [("result_data_invalid", "warning")]
    assert rig.state().counters.results_applied == 1


def test_a_task_admitted_when_due_is_stored_dispatched_with_a_fresh_id():
    rig = Rig(LINUX, MAC)
    state = rig.start()
    now = rig.clock.now()
    assert [p.dispatched_at for p in state.pending_tasks.values()] == [now, now]
    ids = list(state.pending_tasks)
    assert re.fullmatch(r"discover-lnx-[0-9a-f]{12}", ids[0])
    assert re.fullmatch(r"discover-mac-[0-9a-f]{12}", ids[1])
    discover = next(t for t in rig.take() if t.host_id == "lnx")
    rig.engine.process_result(rig.run(discover))
    (scan_id,) = (t for t, p in rig.state().pending_tasks.items() if p.task.host_id == "lnx")
    assert rig.state().pending_tasks[scan_id].dispatched_at == now
    assert re.fullmatch(r"scan-lnx-[0-9a-f]{12}", scan_id)


def test_dispatches_are_logged_per_change_at_info_and_per_task_at_debug():
    hosts = [host_spec(f"h{i:03d}", OS.LINUX) for i in range(150)]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    rig = Rig(*hosts)
    with capture_logs() as logs:
        state = rig.start()
    lines = [e for e in logs if e["event"] == "tasks_dispatched"]
    assert [(e["count"], e["retries"], e["log_level"]) for e in lines] == [
        (100, 0, "info"),
        (50, 0, "info"),
    ]
    assert [t for e in lines for t in e["task_ids"]] == list(state.pending_tasks)
    assert not [e for e in logs if e["event"] == "task_dispatched"]

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    rig = Rig(LINUX)
    with capture_logs() as logs:
        state = rig.start()
    (task,) = state.pending_for("lnx")
    assert [
        {k: e[k] for k in ("event", "task_id", "host_id", "action", "attempt")}
        for e in logs
        if e["event"] == "task_dispatched"
    ] == [
        {
            "event": "task_dispatched",
            "task_id": task.task_id,
            "host_id": "lnx",
            "action": "discover",
            "attempt": 1,
        }
    ]


def test_a_retry_dispatched_after_its_backoff_is_counted_as_one_in_its_line():
    rig = Rig(DOWN, options=MissionOptions(retry_backoff_seconds=1.0))
    rig.start()
    assert rig.engine.process_result(rig.run(only(rig.take()))) is ApplyResult.APPLIED
    rig.clock.advance(1)
    with capture_logs() as logs:
        rig.engine.tick()
    retry = only(rig.take())
    assert retry.attempt == 2
    (line,) = [e for e in logs if e["event"] == "tasks_dispatched"]
    assert (line["count"], line["retries"], line["task_ids"]) == (1, 1, [retry.task_id])
