"""The audit trail: one record per kill decision (seed 000's fields + outcome, start time)."""

from __future__ import annotations

from typing import Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict

from reaper_engine.models import Finding, KillOutcome, KillRecord

_ACTIONS = {
    KillOutcome.PROTECTED: "refuse",  # a protection or the budget said no
    KillOutcome.DRY_RUN: "dry_run",
    KillOutcome.DENIED: "kill",  # we tried; the OS refused (outcome says so)
    KillOutcome.ALREADY_GONE: "skip",  # nothing left to signal
}
"""What the reaper did, by outcome; otherwise "kill" if it signalled, else "skip"."""


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    timestamp: AwareDatetime
    action: str  # kill | dry_run | refuse | skip
    pid: int
    start_time: float
    command: str
    rule: str
    priority: str
    reason: str
    signal: str | None
    cpu_percent: float
    memory_mb: float
    age_hours: float
    user: str | None
    hostname: str
    config_file: str | None = None
    dry_run: bool
    outcome: str
    detail: str = ""
    mission_id: str | None = None
    task_id: str | None = None

    @classmethod
    def of(
        cls,
        finding: Finding,
        record: KillRecord,
        *,
        timestamp: AwareDatetime,
        hostname: str,
        config_file: str | None = None,
        mission_id: str | None = None,
        task_id: str | None = None,
    ) -> AuditRecord:
        action = _ACTIONS.get(record.outcome, "kill" if record.signals else "skip")
        return cls(
            timestamp=timestamp,
            action=action,
            pid=finding.identity.pid,
            start_time=finding.identity.create_time,
            command=finding.command,
            rule=finding.rule,
            priority=finding.priority.value,
            reason=finding.reason,
            signal=record.signals[-1] if record.signals else None,
            cpu_percent=finding.cpu_percent,
            memory_mb=round(finding.rss_mb, 2),
            age_hours=round(finding.age_seconds / 3600, 2),
            user=finding.user,
            hostname=hostname,
            config_file=config_file,
            dry_run=record.dry_run,
            outcome=record.outcome.value,
            detail=record.detail,
            mission_id=mission_id,
            task_id=task_id,
        )


class AuditSink(Protocol):
    def record(self, entry: AuditRecord) -> None: ...
