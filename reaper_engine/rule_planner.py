"""The deterministic planner. audit: discover -> scan; reap: discover -> scan -> reap -> verify."""

from __future__ import annotations

from reaper_engine.humanize import plural
from reaper_engine.models import (
    Action,
    KillOutcome,
    MissionKind,
    MissionState,
    ReapParams,
    ResultEvent,
    ResultStatus,
    Task,
    VerifyParams,
)
from reaper_engine.planner import PlannedTask


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff before attempt ``attempt + 1``: base, 2*base, 4*base ... capped."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))))


class RuleBasedPlanner:
    name = "rules"

    def initial_tasks(self, state: MissionState) -> list[PlannedTask]:
        return [
            PlannedTask(host_id, Action.DISCOVER, reason="mission start")
            for host_id, host in state.hosts.items()
            if not host.locked
        ]

    def next_tasks(self, state: MissionState, task: Task, result: ResultEvent) -> list[PlannedTask]:
        host = state.hosts.get(task.host_id)
        if host is None or host.locked:
            return []
        if result.status is ResultStatus.ERROR:
            return self._retry(state, task, result)
        return self._advance(state, task)

    def _retry(self, state: MissionState, task: Task, result: ResultEvent) -> list[PlannedTask]:
        if not result.retriable or task.attempt >= state.options.max_attempts:
            return []
        delay = backoff_seconds(
            task.attempt,
            state.options.retry_backoff_seconds,
            state.options.retry_backoff_max_seconds,
        )
        return [
            PlannedTask(
                task.host_id,
                task.action,
                dict(task.params),
                attempt=task.attempt + 1,
                delay_seconds=delay,
                reason=f"retry after {result.error_code or 'error'}",
            )
        ]

    def _advance(self, state: MissionState, task: Task) -> list[PlannedTask]:
        host = state.hosts[task.host_id]
        match task.action:
            case Action.DISCOVER:
                return [PlannedTask(host.host_id, Action.SCAN, reason="host discovered")]
            case Action.SCAN if state.kind is MissionKind.REAP:
                killable = sorted(
                    (f for f in host.findings if f.killable), key=lambda f: f.priority.rank
                )
                if not killable:
                    return []
                params = ReapParams(approved=tuple(f.identity for f in killable))
                return [
                    PlannedTask(
                        host.host_id,
                        Action.REAP,
                        params.model_dump(mode="json"),
                        reason=f"{plural(len(killable), 'rogue process', 'rogue processes')} found",
                    )
                ]
            case Action.REAP:
                approved = _approved_pids(task)  # once, not once per kill: it validates params
                signalled = [
                    k.identity
                    for k in host.kills
                    if k.outcome in (KillOutcome.TERMINATED, KillOutcome.KILLED)
                    and k.identity.pid in approved
                ]
                if not signalled:
                    return []
                verify = VerifyParams(expected_gone=tuple(signalled))
                return [
                    PlannedTask(
                        host.host_id,
                        Action.VERIFY,
                        verify.model_dump(mode="json"),
                        reason="confirm the reaped processes are gone",
                    )
                ]
            case _:
                return []


def _approved_pids(task: Task) -> set[int]:
    return {identity.pid for identity in ReapParams.model_validate(task.params).approved}
