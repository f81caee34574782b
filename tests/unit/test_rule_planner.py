"""RuleBasedPlanner decisions, one state transition at a time."""

from __future__ import annotations

import pytest

from reaper_engine.models import (
    Action,
    Finding,
    KillOutcome,
    KillRecord,
    MissionKind,
    MissionOptions,
    Priority,
    ProcessIdentity,
    ReapParams,
    ResultStatus,
    VerifyParams,
)
from reaper_engine.rule_planner import RuleBasedPlanner, backoff_seconds
from tests.factories import host_spec, make_state, make_task, result_for

planner = RuleBasedPlanner()
HOST = host_spec("h1")


def finding(pid: int, priority: Priority, protected_by: str | None = None) -> Finding:
    return Finding(
        identity=ProcessIdentity(host_id="h1", pid=pid, create_time=1000.0 + pid),
        rule="r",
        priority=priority,
        reason="because",
        protected_by=protected_by,
    )


def kill(pid: int, outcome: KillOutcome) -> KillRecord:
    return KillRecord(
        identity=ProcessIdentity(host_id="h1", pid=pid, create_time=1000.0 + pid),
        rule="r",
        priority=Priority.HIGH,
        outcome=outcome,
    )


def test_initial_tasks_discover_every_unlocked_host():
    state = make_state(host_spec("a"), host_spec("b"), host_spec("c"))
    state.hosts["b"].locked = True
    planned = planner.initial_tasks(state)
    assert [(p.host_id, p.action) for p in planned] == [
        ("a", Action.DISCOVER),
        ("c", Action.DISCOVER),
    ]


def test_discover_is_followed_by_scan():
    state = make_state(HOST)
    task = make_task(Action.DISCOVER, host=HOST)
    [nxt] = planner.next_tasks(state, task, result_for(task))
    assert (nxt.host_id, nxt.action, nxt.attempt) == ("h1", Action.SCAN, 1)


def test_audit_stops_after_scan_even_with_findings():
    state = make_state(HOST, kind=MissionKind.AUDIT)
    state.hosts["h1"].findings = [finding(5000, Priority.CRITICAL)]
    task = make_task(Action.SCAN, host=HOST)
    assert planner.next_tasks(state, task, result_for(task)) == []


def test_reap_approves_killable_findings_most_urgent_first():
    state = make_state(HOST)
    state.hosts["h1"].findings = [
        finding(5001, Priority.LOW),
        finding(5002, Priority.CRITICAL),
        finding(5003, Priority.HIGH, protected_by="whitelisted:vim"),
        finding(5004, Priority.HIGH),
    ]
    task = make_task(Action.SCAN, host=HOST)
    [reap] = planner.next_tasks(state, task, result_for(task))
    assert reap.action is Action.REAP
    approved = ReapParams.model_validate(reap.params).approved
    assert [i.pid for i in approved] == [5002, 5004, 5001]


def test_no_reap_when_nothing_is_killable():
    state = make_state(HOST)
    state.hosts["h1"].findings = [finding(5003, Priority.HIGH, protected_by="root_owned")]
    task = make_task(Action.SCAN, host=HOST)
    assert planner.next_tasks(state, task, result_for(task)) == []


def test_verify_checks_only_processes_that_were_signalled():
    state = make_state(HOST)
    state.hosts["h1"].kills = [
        kill(5001, KillOutcome.TERMINATED),
        kill(5002, KillOutcome.KILLED),
        kill(5003, KillOutcome.ALREADY_GONE),
        kill(5004, KillOutcome.PROTECTED),
        kill(5005, KillOutcome.FAILED),
    ]
    approved = ReapParams(approved=tuple(k.identity for k in state.hosts["h1"].kills))
    task = make_task(Action.REAP, host=HOST, params=approved.model_dump(mode="json"))
    [verify] = planner.next_tasks(state, task, result_for(task))
    assert verify.action is Action.VERIFY
    expected = VerifyParams.model_validate(verify.params).expected_gone
    assert [i.pid for i in expected] == [5001, 5002]


def test_no_verify_after_a_dry_run_reap():
    state = make_state(HOST)
    state.hosts["h1"].kills = [kill(5001, KillOutcome.DRY_RUN)]
    approved = ReapParams(approved=(state.hosts["h1"].kills[0].identity,))
    task = make_task(Action.REAP, host=HOST, params=approved.model_dump(mode="json"))
    assert planner.next_tasks(state, task, result_for(task)) == []


def test_verify_ends_the_host():
    state = make_state(HOST)
    task = make_task(Action.VERIFY, host=HOST)
    assert planner.next_tasks(state, task, result_for(task)) == []


def test_retriable_error_is_retried_with_exponential_backoff():
    state = make_state(HOST, options=MissionOptions(max_attempts=4, retry_backoff_seconds=0.5))
    delays = []
    for attempt in (1, 2, 3):
        task = make_task(Action.SCAN, host=HOST, attempt=attempt, params={"x": 1})
        [retry] = planner.next_tasks(
            state, task, result_for(task, ResultStatus.ERROR, retriable=True)
        )
        assert (retry.action, retry.attempt, retry.params) == (Action.SCAN, attempt + 1, {"x": 1})
        delays.append(retry.delay_seconds)
    assert delays == [0.5, 1.0, 2.0]


def test_retries_stop_at_max_attempts():
    state = make_state(HOST, options=MissionOptions(max_attempts=3))
    task = make_task(Action.SCAN, host=HOST, attempt=3)
    assert (
        planner.next_tasks(state, task, result_for(task, ResultStatus.ERROR, retriable=True)) == []
    )


def test_non_retriable_errors_are_not_retried():
    state = make_state(HOST)
    task = make_task(Action.SCAN, host=HOST)
    assert (
        planner.next_tasks(state, task, result_for(task, ResultStatus.ERROR, retriable=False)) == []
    )


def test_locked_host_gets_nothing():
    state = make_state(HOST)
    state.hosts["h1"].locked = True
    task = make_task(Action.DISCOVER, host=HOST)
    assert planner.next_tasks(state, task, result_for(task)) == []
    assert (
        planner.next_tasks(state, task, result_for(task, ResultStatus.ERROR, retriable=True)) == []
    )


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0)])
def test_backoff_doubles_and_is_capped(attempt, expected):
    assert backoff_seconds(attempt, base=1.0, cap=30.0) == expected
