"""Reading and recording what became of a mission's tasks.

Small functions over a MissionState that the engine's changes share: moving a task from
pending to completed, what a host's kill budget has used, whether a host was scanned or
ever had a task, and the result that stands for a task that never reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from reaper_engine.effects import Effects
from reaper_engine.models import (
    Action,
    Finding,
    HostState,
    MissionState,
    ReapParams,
    ResultEvent,
    ResultStatus,
    Task,
    TaskRecord,
)

TIMEOUT_ERROR = "TASK_TIMEOUT"
CANCELLED_ERROR = "CANCELLED"
LOCKED_ERROR = "HOST_LOCKED"
# A task ended by the engine rather than by its result. It may still be running somewhere:
# its queue entry is discarded (again on resume), and its real result, if a reap's, is folded
# in late so that no kill goes unrecorded.
WITHDRAWN = frozenset({TIMEOUT_ERROR, CANCELLED_ERROR, LOCKED_ERROR})


def complete_task(
    state: MissionState,
    task: Task,
    status: ResultStatus,
    error_code: str | None,
    summary: str,
    now: datetime,
    fx: Effects,
) -> None:
    """Move a task from pending to completed, keeping the record that makes replays no-ops."""
    del state.pending_tasks[task.task_id]
    fx.pending_removed(state, task)
    state.completed_tasks[task.task_id] = TaskRecord(
        task_id=task.task_id,
        host_id=task.host_id,
        action=task.action,
        attempt=task.attempt,
        status=status,
        error_code=error_code,
        summary=summary,
        finished_at=now,
    )


def budget_used(state: MissionState, host: HostState, fx: Effects) -> int:
    """Kills made or rehearsed, plus what pending reaps may still use."""
    used = sum(1 for k in host.kills if k.outcome.uses_budget)
    # The host's pending tasks only, not every pending task of the mission.
    for task_id in fx.pending_of(state, host.host_id):
        task = state.pending_tasks[task_id].task
        if task.action is Action.REAP:
            params = ReapParams.model_validate(task.params)
            used += params.max_kills if params.max_kills is not None else len(params.approved)
    return used


def is_late_reap(record: TaskRecord, event: ResultEvent) -> bool:
    return (
        record.error_code in WITHDRAWN
        and not record.late_applied
        and record.action is Action.REAP
        and event.action is Action.REAP
        and event.status is not ResultStatus.ERROR
    )


def protected_count(findings: Sequence[Finding]) -> int:
    return sum(1 for f in findings if not f.killable)


def scanned(state: MissionState, host: HostState) -> bool:
    """Whether a scan of ``host`` succeeded: its recent tasks first, then the whole record."""

    def ok(record: TaskRecord | None) -> bool:
        return (
            record is not None
            and record.host_id == host.host_id
            and record.action is Action.SCAN
            and record.status is not ResultStatus.ERROR
        )

    if any(ok(state.completed_tasks.get(t)) for t in host.last_tasks):
        return True
    return any(ok(r) for r in state.completed_tasks.values())


def never_tasked(state: MissionState, host: HostState, fx: Effects) -> bool:
    """Whether ``host`` has had no task in this mission: none finished, none pending."""
    return not host.last_tasks and not host.locked and not fx.has_pending(state, host.host_id)


def last_record(state: MissionState, host: HostState) -> TaskRecord | None:
    for task_id in reversed(host.last_tasks):
        record = state.completed_tasks.get(task_id)
        if record is not None:
            return record
    return None


def timeout_result(task: Task, now: datetime) -> ResultEvent:
    return ResultEvent.for_task(
        task,
        ResultStatus.ERROR,
        error_code=TIMEOUT_ERROR,
        retriable=True,
        ts=now,
        summary=f"no result before the deadline ({task.deadline.isoformat()})",
    )
