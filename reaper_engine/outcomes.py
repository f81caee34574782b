"""How a host ended a mission, decided once nothing is left to do for it."""

from __future__ import annotations

from reaper_engine.humanize import plural
from reaper_engine.models import (
    HostOutcome,
    HostState,
    KillOutcome,
    MissionKind,
    ResultStatus,
    TaskRecord,
)

_FAILED = (HostOutcome.FAILED, HostOutcome.LOCKED, HostOutcome.INCOMPLETE)
_KILL_FAILURES = (KillOutcome.FAILED, KillOutcome.DENIED)


def is_failed_outcome(outcome: HostOutcome) -> bool:
    return outcome in _FAILED


def decide_outcome(
    kind: MissionKind, host: HostState, last: TaskRecord | None, *, scanned: bool
) -> tuple[HostOutcome, str]:
    """The host's outcome and a one-line explanation; ``scanned``: a scan succeeded."""
    if host.locked:
        return HostOutcome.LOCKED, host.lock_reason or "locked"
    if last is not None and last.status is ResultStatus.ERROR:
        return HostOutcome.FAILED, f"{last.action.value} failed: {last.error_code or last.summary}"
    if not scanned:
        done = last.action.value if last is not None else "nothing"
        return HostOutcome.INCOMPLETE, f"never scanned (last step: {done})"
    killable = sum(1 for f in host.findings if f.killable)
    if kind is MissionKind.AUDIT:
        if killable:
            return (
                HostOutcome.FINDINGS,
                f"{plural(killable, 'rogue process', 'rogue processes')} found",
            )
        return HostOutcome.CLEAN, "no rogue processes"
    real = [k for k in host.kills if not k.dry_run]
    rehearsed = [k for k in host.kills if k.dry_run and k.outcome is KillOutcome.DRY_RUN]
    failed = [k for k in real if k.outcome in _KILL_FAILURES]
    reaped = [k for k in real if k.outcome.is_kill]
    gone = [k for k in real if k.outcome is KillOutcome.ALREADY_GONE]
    if failed or host.survivors:
        return HostOutcome.PARTIAL, (
            f"{len(reaped)} reaped, {len(failed)} failed, {len(host.survivors)} still alive"
        )
    if reaped or gone:
        extra = f", {len(gone)} had already exited" if gone else ""
        return HostOutcome.REAPED, f"{plural(len(reaped), 'process', 'processes')} reaped{extra}"
    if rehearsed:
        return HostOutcome.FINDINGS, f"dry run: would reap {len(rehearsed)}"
    if killable:
        return (
            HostOutcome.FINDINGS,
            f"{plural(killable, 'rogue process', 'rogue processes')} left alone",
        )
    return HostOutcome.CLEAN, "no rogue processes"
