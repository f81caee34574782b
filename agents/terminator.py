"""The one path through which every signal is sent.

For each finding: look the PID up again and compare start times (PID reuse is real), apply
the safety policy to what is running *now*, then the rule's signal, a bounded wait, and the
fallback signal; the identity is re-checked by the transport immediately before each signal.
Dry-run goes through every step but the signal. Every decision is audited.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime

import structlog

from agents.transports.base import SignalDelivery, Transport
from reaper_engine.audit import AuditRecord, AuditSink
from reaper_engine.clock import Clock
from reaper_engine.models import Finding, KillOutcome, KillRecord, ProcessIdentity, ProcessInfo
from reaper_engine.rules import RuleAction
from reaper_engine.safety import SafetyPolicy
from reaper_engine.signals import Signal

log = structlog.get_logger(__name__)

_FALLBACK_WAIT_SECONDS = 2.0


class LogAuditSink:
    """Audit records as structured log events (``audit``); the file sink lives in infra."""

    def record(self, entry: AuditRecord) -> None:
        log.info("audit", **entry.model_dump(mode="json"))


class Terminator:
    def __init__(
        self,
        transport: Transport,
        policy: SafetyPolicy,
        *,
        clock: Clock,
        audit: AuditSink | None = None,
        mission_id: str | None = None,
        task_id: str | None = None,
        config_file: str | None = None,
    ) -> None:
        self.config_file = config_file
        self.transport = transport
        self.policy = policy
        self.clock = clock
        self.audit: AuditSink = audit or LogAuditSink()
        self.mission_id = mission_id
        self.task_id = task_id

    def terminate_scope(
        self,
        finding: Finding,
        action: RuleAction,
        *,
        dry_run: bool,
        processes: Sequence[ProcessInfo],
    ) -> list[KillRecord]:
        """End the finding's process and, for group or tree scope, its members first.

        Members are taken deepest first so no child is orphaned and re-parented mid-way; each
        goes through the same checks as the process itself (a protected member is spared).
        """
        if action.scope == "process":
            return [self.terminate(finding, action, dry_run=dry_run)]
        members = scope_members(finding.identity.pid, action.scope, processes)
        now = self.clock.now()
        records = [
            self.terminate(
                _member_finding(finding, member, action.scope, now), action, dry_run=dry_run
            )
            for member in members
        ]
        records.append(self.terminate(finding, action, dry_run=dry_run))
        return records

    def terminate(self, finding: Finding, action: RuleAction, *, dry_run: bool) -> KillRecord:
        started = time.monotonic()
        record = self._terminate(finding, action, dry_run=dry_run)
        record = record.model_copy(update={"elapsed_seconds": round(time.monotonic() - started, 3)})
        self.audit.record(
            AuditRecord.of(
                finding,
                record,
                timestamp=self.clock.now(),
                hostname=self.transport.spec.host_id,
                mission_id=self.mission_id,
                task_id=self.task_id,
                config_file=self.config_file,
            )
        )
        return record

    def _terminate(self, finding: Finding, action: RuleAction, *, dry_run: bool) -> KillRecord:
        identity = finding.identity

        def outcome(result: KillOutcome, detail: str, signals: tuple[str, ...] = ()) -> KillRecord:
            return KillRecord(
                identity=identity,
                rule=finding.rule,
                priority=finding.priority,
                command=finding.command,
                outcome=result,
                signals=signals,
                detail=detail,
                dry_run=dry_run,
                cpu_percent=finding.cpu_percent,
            )

        current = self.transport.get_process(identity.pid)
        if current is None:
            return outcome(KillOutcome.ALREADY_GONE, "no such process")
        if not identity.same_process(current.pid, current.create_time):
            return outcome(KillOutcome.ALREADY_GONE, "PID now belongs to another process")
        protection = self.policy.protection_for(current)
        if protection is not None:
            return outcome(KillOutcome.PROTECTED, protection)
        if action.type != "kill":
            return outcome(KillOutcome.PROTECTED, f"rule '{finding.rule}' only reports")
        if dry_run:
            return outcome(KillOutcome.DRY_RUN, f"would send {action.signal.value}")

        sent: list[str] = []
        delivery = self._signal(identity.pid, identity.create_time, action.signal, sent)
        if delivery is not None:
            return outcome(*delivery, tuple(sent))
        wait = (
            action.timeout_seconds
            if action.fallback_signal
            else max(action.timeout_seconds, _FALLBACK_WAIT_SECONDS)
        )
        if self.transport.wait_gone(identity.pid, identity.create_time, wait):
            return outcome(
                KillOutcome.TERMINATED, f"exited after {action.signal.value}", tuple(sent)
            )
        if action.fallback_signal is None:
            return outcome(
                KillOutcome.FAILED,
                f"still alive {wait:g}s after {action.signal.value}",
                tuple(sent),
            )
        delivery = self._signal(identity.pid, identity.create_time, action.fallback_signal, sent)
        if delivery is not None:
            if delivery[0] is KillOutcome.ALREADY_GONE:  # exited between the wait and the signal
                return outcome(
                    KillOutcome.TERMINATED, f"exited after {action.signal.value}", tuple(sent)
                )
            return outcome(*delivery, tuple(sent))
        if self.transport.wait_gone(identity.pid, identity.create_time, _FALLBACK_WAIT_SECONDS):
            return outcome(
                KillOutcome.KILLED, f"needed {action.fallback_signal.value}", tuple(sent)
            )
        return outcome(KillOutcome.FAILED, "still alive after every signal", tuple(sent))

    def _signal(
        self, pid: int, create_time: float, signal: Signal, sent: list[str]
    ) -> tuple[KillOutcome, str] | None:
        """Send one signal; None if it was delivered, else the outcome that ends the attempt."""
        delivery = self.transport.send_signal(pid, create_time, signal)
        if delivery is SignalDelivery.SENT:
            sent.append(signal.value)
            log.info("signal_sent", pid=pid, signal=signal.value)
            return None
        if delivery is SignalDelivery.GONE:
            return KillOutcome.ALREADY_GONE, "exited before the signal"
        return KillOutcome.DENIED, f"the OS refused {signal.value}"


def scope_members(leader: int, scope: str, processes: Sequence[ProcessInfo]) -> list[ProcessInfo]:
    """The other processes a group or tree kill covers, deepest in the tree first."""
    by_pid = {p.pid: p for p in processes}
    children: dict[int, list[int]] = {}
    for proc in processes:
        if proc.pid != proc.ppid:
            children.setdefault(proc.ppid, []).append(proc.pid)

    def depth(pid: int) -> int:
        seen, d = set(), 0
        while pid in by_pid and pid not in seen:
            seen.add(pid)
            pid = by_pid[pid].ppid
            d += 1
        return d

    if scope == "tree":
        found: list[int] = []
        stack = list(children.get(leader, ()))
        while stack:
            pid = stack.pop()
            if pid not in found:
                found.append(pid)
                stack.extend(children.get(pid, ()))
        members = [by_pid[pid] for pid in found if pid in by_pid]
    elif scope == "group":
        head = by_pid.get(leader)
        group = head.pgid if head is not None else None
        members = [
            p for p in processes if group is not None and p.pgid == group and p.pid != leader
        ]
    else:
        return []
    return sorted(members, key=lambda p: -depth(p.pid))


def _member_finding(leader: Finding, proc: ProcessInfo, scope: str, now: datetime) -> Finding:
    return leader.model_copy(
        update={
            "identity": ProcessIdentity(
                host_id=leader.identity.host_id, pid=proc.pid, create_time=proc.create_time
            ),
            "reason": f"{leader.reason} ({scope} of pid {leader.identity.pid})",
            "matched": (f"{scope} member of pid {leader.identity.pid}",),
            "command": proc.command,
            "name": proc.name,
            "user": proc.user,
            "cpu_percent": proc.cpu_percent,
            "rss_mb": round(proc.rss_mb, 2),
            "age_seconds": round(proc.age_seconds(now), 1),
            "protected_by": None,
        }
    )
