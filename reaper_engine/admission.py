"""Admission: turning a planner's proposals into tasks, within limits no planner overrides.

Nothing for unknown or locked hosts, no reap in an audit mission, no attempt beyond
``max_attempts``, a reap's approved list cut to the host's remaining kill budget (the rest
sent along as ``max_kills``, which the agent enforces over group and tree members too), and
the mission's and the host's dry run copied onto every task. What is admitted and due is
dispatched: marked so in the state, counted, and published once the change is saved.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from pydantic import ValidationError

from reaper_engine.effects import Effects
from reaper_engine.mission_records import budget_used, never_tasked
from reaper_engine.models import (
    Action,
    HostState,
    HostStatus,
    MissionKind,
    MissionState,
    PendingTask,
    ReapParams,
    Task,
)
from reaper_engine.planner import PlannedTask

# The outcome detail of a host that has had no task yet, while every proposal for it is refused.
NOT_ADMITTED = "no task admitted: "


def admit(
    state: MissionState,
    planned: list[PlannedTask],
    fx: Effects,
    now: datetime,
    *,
    dispatch: bool = False,
) -> None:
    """Turn proposals into tasks, enforcing the limits the planner cannot override;
    ``dispatch``: those already due are dispatched at once.

    A refusal for a host that has had no task yet is kept as its outcome detail: if it
    never gets one, that is why it ends the mission incomplete (``MissionEngine._settle``)."""
    for proposal in planned:
        host = state.hosts.get(proposal.host_id)
        refusal = refused_because(state, host, proposal)
        params = proposal.params
        if refusal is None and host is not None:
            if host.outcome_detail.startswith(NOT_ADMITTED):
                host.outcome_detail = ""  # it gets a task after all
            if proposal.action is Action.REAP:
                params, refusal = within_budget(state, host, proposal.params, fx)
        if refusal is not None or host is None:
            fx.log(
                logging.WARNING,
                "planned_task_refused",
                host_id=proposal.host_id,
                action=proposal.action.value,
                reason=refusal,
            )
            if host is not None and never_tasked(state, host, fx):
                why = f"{proposal.action.value} refused ({refusal})"
                host.outcome_detail = (
                    f"{host.outcome_detail}; {why}"
                    if host.outcome_detail.startswith(NOT_ADMITTED)
                    else f"{NOT_ADMITTED}{why}"
                )
            continue
        if proposal.attempt > 1:
            state.counters.retries += 1
        task = materialise(state, host, proposal, params, now)
        if dispatch and task.is_due(now):
            # One PendingTask, born dispatched, rather than one pending and its copy.
            entry = PendingTask(task=task, dispatched_at=now)
            dispatched(state, task, fx)
        else:
            entry = PendingTask(task=task)
        state.pending_tasks[task.task_id] = entry
        fx.pending_added(state, entry)
        if host.outcome is not None:
            host.outcome = None
        if host.last_status is HostStatus.ERROR:
            host.last_status = HostStatus.DEGRADED  # no longer failed for good


def refused_because(
    state: MissionState, host: HostState | None, proposal: PlannedTask
) -> str | None:
    """Why ``proposal`` may not become a task, or None."""
    if host is None:
        return "unknown host"
    if host.locked:
        return "host locked"
    if state.kind is MissionKind.AUDIT and proposal.action is Action.REAP:
        return "audit missions are read-only"
    if proposal.attempt > state.options.max_attempts:
        return f"attempt {proposal.attempt} exceeds max_attempts"
    return None


def within_budget(
    state: MissionState, host: HostState, params: dict[str, object], fx: Effects
) -> tuple[dict[str, object], str | None]:
    """A reap's params cut to the host's remaining kill budget (the rest as ``max_kills``),
    and why it is refused, if it is: invalid params, or no budget left."""
    try:
        approved = ReapParams.model_validate(params).approved
    except ValidationError as err:
        return params, f"invalid reap params: {err.error_count()} error(s)"
    remaining = state.options.kill_budget_per_host - budget_used(state, host, fx)
    if remaining <= 0:
        host.outcome_detail = "kill budget exhausted"
        return params, "kill budget exhausted"
    if len(approved) > remaining:
        fx.log(
            logging.WARNING,
            "kill_budget_truncated",
            host_id=host.host_id,
            asked=len(approved),
            allowed=remaining,
        )
        host.outcome_detail = f"kill budget allowed {remaining} of {len(approved)}"
    # max_kills also bounds group and tree members, which the engine cannot foresee.
    capped = ReapParams(approved=approved[:remaining], max_kills=remaining)
    return capped.model_dump(mode="json"), None


def materialise(
    state: MissionState,
    host: HostState,
    proposal: PlannedTask,
    params: dict[str, object],
    now: datetime,
) -> Task:
    not_before = now + timedelta(seconds=proposal.delay_seconds) if proposal.delay_seconds else None
    start = not_before or now
    return Task(
        task_id=f"{proposal.action.value}-{host.host_id}-{random_suffix()}",
        mission_id=state.mission_id,
        host_id=host.host_id,
        agent_type=host.spec.agent_type,
        action=proposal.action,
        params=params,
        attempt=proposal.attempt,
        created_at=now,
        not_before=not_before,
        deadline=start + timedelta(seconds=state.options.task_timeout_seconds),
        # The mission's and the host's dry-run win over any planner.
        dry_run=state.options.dry_run or host.spec.dry_run,
        target=host.spec,
    )


def dispatch_due(state: MissionState, fx: Effects, now: datetime) -> bool:
    """Dispatch the pending tasks that are due."""
    due = [
        p.task
        for p in state.pending_tasks.values()
        if p.dispatched_at is None and p.task.is_due(now)
    ]
    for task in due:
        state.pending_tasks[task.task_id] = PendingTask(task=task, dispatched_at=now)
        dispatched(state, task, fx)
    return bool(due)


def dispatched(state: MissionState, task: Task, fx: Effects) -> None:
    """The bookkeeping of a task just marked dispatched: count it, publish it once saved."""
    state.counters.tasks_dispatched += 1
    fx.publish.append(task)
    if fx.notify:
        fx.note("dispatched", task.host_id, f"{task.action.value} (attempt {task.attempt})")


def random_suffix() -> str:
    """48 random bits in hex, as the first 12 hex digits of a uuid4 were, for a third of
    the cost (no UUID object): what keeps task ids unique across engines and restarts."""
    return os.urandom(6).hex()
