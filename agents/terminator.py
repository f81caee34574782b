"""The one path through which every signal is sent.

For each process: look the PID up again and compare start times (PID reuse is real), apply
the safety policy to what is running *now*, then the rule's signal, a bounded wait, and the
fallback signal; the transport re-checks identity immediately before each signal. Nothing is
signalled after the task's deadline or beyond the kill budget. Dry-run goes through every
step but the signal. Every decision is audited, including failures.

Group and tree scope: the leader is checked first, and if it may not be touched nothing is;
members are ended deepest first, each through the same checks, and nothing below a protected
member is touched (a whitelisted editor's language server is the editor's business).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from agents.transports.base import SignalDelivery, Transport
from reaper_engine.audit import AuditRecord, AuditSink
from reaper_engine.clock import Clock
from reaper_engine.log import get_logger
from reaper_engine.models import Finding, KillOutcome, KillRecord, ProcessIdentity, ProcessInfo
from reaper_engine.rules import RuleAction
from reaper_engine.safety import SafetyPolicy
from reaper_engine.signals import Signal

log = get_logger(__name__)

_FALLBACK_WAIT_SECONDS = 2.0
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}  # a rule's log_level


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
        deadline: datetime | None = None,
    ) -> None:
        self.transport = transport
        self.policy = policy
        self.clock = clock
        self.audit: AuditSink = audit or LogAuditSink()
        self.mission_id = mission_id
        self.task_id = task_id
        self.config_file = config_file
        self.deadline = deadline

    # -- entry points -----------------------------------------------------------------------

    def terminate_scope(
        self,
        finding: Finding,
        action: RuleAction,
        *,
        dry_run: bool,
        processes: Sequence[ProcessInfo],
        budget: int | None = None,
    ) -> list[KillRecord]:
        """End the finding's process and, for group or tree scope, its members first.

        ``budget`` caps how many processes may be signalled (or rehearsed); a scope that
        does not fit is refused whole rather than half-done.
        """
        members: list[ProcessInfo] = []
        if action.scope != "process":
            # The leader first: if it may not be touched, neither may its group or tree.
            # (A dry run goes on: it must show everything the real kill would end.)
            refusal = self._refusal(finding, action, dry_run=dry_run)
            if refusal is not None and refusal.outcome is not KillOutcome.DRY_RUN:
                return [self._audited(finding, action, refusal)]
            members = scope_members(
                finding.identity.pid,
                action.scope,
                processes,
                blocked=lambda p: self.policy.protection_for(p) is not None,
            )
        if budget is not None and len(members) + 1 > budget:
            record = self._record(
                finding,
                KillOutcome.PROTECTED,
                dry_run,
                f"kill_budget: {len(members) + 1} processes, {budget} left",
            )
            return [self._audited(finding, action, record)]
        now = self.clock.now()
        records = [
            self.terminate(_member_finding(finding, m, action.scope, now), action, dry_run=dry_run)
            for m in members
        ]
        records.append(self.terminate(finding, action, dry_run=dry_run))
        return records

    def terminate(self, finding: Finding, action: RuleAction, *, dry_run: bool) -> KillRecord:
        """End one process (every check, every signal), and audit the decision."""
        started = time.monotonic()
        record = self._refusal(finding, action, dry_run=dry_run)
        if record is None:
            record = self._signal_until_gone(finding, action, dry_run=dry_run)
        record = record.model_copy(update={"elapsed_seconds": round(time.monotonic() - started, 3)})
        return self._audited(finding, action, record)

    def failed(
        self, finding: Finding, action: RuleAction, *, dry_run: bool, detail: str
    ) -> KillRecord:
        """Record (and audit) an attempt that broke off with an error."""
        return self._audited(
            finding, action, self._record(finding, KillOutcome.FAILED, dry_run, detail)
        )

    # -- the steps --------------------------------------------------------------------------

    def _refusal(self, finding: Finding, action: RuleAction, *, dry_run: bool) -> KillRecord | None:
        """Why this process may not be signalled now, or None if it may."""
        identity = finding.identity
        current = self.transport.get_process(identity.pid)
        if current is None:
            return self._record(finding, KillOutcome.ALREADY_GONE, dry_run, "no such process")
        if not identity.same_process(current.pid, current.create_time):
            return self._record(
                finding, KillOutcome.ALREADY_GONE, dry_run, "PID now belongs to another process"
            )
        protection = self.policy.protection_for(current)
        if protection is not None:
            return self._record(finding, KillOutcome.PROTECTED, dry_run, protection)
        if action.type != "kill":
            return self._record(
                finding, KillOutcome.PROTECTED, dry_run, f"rule '{finding.rule}' only reports"
            )
        if dry_run:
            return self._record(
                finding, KillOutcome.DRY_RUN, dry_run, f"would send {action.signal.value}"
            )
        return None

    def _signal_until_gone(
        self, finding: Finding, action: RuleAction, *, dry_run: bool
    ) -> KillRecord:
        identity = finding.identity
        sent: list[str] = []

        def outcome(result: KillOutcome, detail: str) -> KillRecord:
            return self._record(finding, result, dry_run, detail, tuple(sent))

        stop = self._signal(identity.pid, identity.create_time, action.signal, sent)
        if stop is not None:
            return outcome(*stop)
        wait = (
            action.timeout_seconds
            if action.fallback_signal
            else max(action.timeout_seconds, _FALLBACK_WAIT_SECONDS)
        )
        if self.transport.wait_gone(identity.pid, identity.create_time, self._bounded(wait)):
            return outcome(KillOutcome.TERMINATED, f"exited after {action.signal.value}")
        if action.fallback_signal is None:
            return outcome(KillOutcome.FAILED, f"still alive {wait:g}s after {action.signal.value}")
        stop = self._signal(identity.pid, identity.create_time, action.fallback_signal, sent)
        if stop is not None:
            if stop[0] is KillOutcome.ALREADY_GONE:  # exited between the wait and the signal
                return outcome(KillOutcome.TERMINATED, f"exited after {action.signal.value}")
            return outcome(*stop)
        if self.transport.wait_gone(
            identity.pid, identity.create_time, self._bounded(_FALLBACK_WAIT_SECONDS)
        ):
            return outcome(KillOutcome.KILLED, f"needed {action.fallback_signal.value}")
        return outcome(KillOutcome.FAILED, "still alive after every signal")

    def _signal(
        self, pid: int, create_time: float, signal: Signal, sent: list[str]
    ) -> tuple[KillOutcome, str] | None:
        """Send one signal; None if it was delivered, else the outcome that ends the attempt."""
        if self.deadline is not None and self.clock.now() >= self.deadline:
            # A stale kill must never fire late, not even the fallback.
            return KillOutcome.FAILED, f"task deadline passed before {signal.value}"
        delivery = self.transport.send_signal(pid, create_time, signal)
        if delivery is SignalDelivery.SENT:
            sent.append(signal.value)
            log.info("signal_sent", pid=pid, signal=signal.value)
            return None
        if delivery is SignalDelivery.GONE:
            return KillOutcome.ALREADY_GONE, "exited before the signal"
        return KillOutcome.DENIED, f"the OS refused {signal.value}"

    def _bounded(self, seconds: float) -> float:
        """A wait that does not outlast the deadline."""
        if self.deadline is None:
            return seconds
        left = (self.deadline - self.clock.now()).total_seconds()
        return max(0.0, min(seconds, left))

    def _record(
        self,
        finding: Finding,
        result: KillOutcome,
        dry_run: bool,
        detail: str,
        signals: tuple[str, ...] = (),
    ) -> KillRecord:
        return KillRecord(
            identity=finding.identity,
            rule=finding.rule,
            priority=finding.priority,
            command=finding.command,
            outcome=result,
            signals=signals,
            detail=detail,
            dry_run=dry_run,
            cpu_percent=finding.cpu_percent,
        )

    def _audited(self, finding: Finding, action: RuleAction, record: KillRecord) -> KillRecord:
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
        log.log(
            _LEVELS[action.log_level],
            "kill_decision",
            pid=finding.identity.pid,
            rule=finding.rule,
            outcome=record.outcome.value,
            signals=list(record.signals),
            dry_run=record.dry_run,
            detail=record.detail,
        )
        return record


def scope_members(
    leader: int,
    scope: str,
    processes: Sequence[ProcessInfo],
    *,
    blocked: Callable[[ProcessInfo], bool] = lambda _: False,
) -> list[ProcessInfo]:
    """The other processes a group or tree kill covers, deepest in the tree first.

    A ``blocked`` process is left out, and in a tree so is everything below it.
    """
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

    members: list[ProcessInfo] = []
    if scope == "tree":
        stack = list(children.get(leader, ()))
        seen: set[int] = set()
        while stack:
            pid = stack.pop()
            member = by_pid.get(pid)
            if pid in seen or member is None or blocked(member):
                continue
            seen.add(pid)
            members.append(member)
            stack.extend(children.get(pid, ()))
    elif scope == "group":
        head = by_pid.get(leader)
        group = head.pgid if head is not None else None
        members = [
            p
            for p in processes
            if group is not None and p.pgid == group and p.pid != leader and not blocked(p)
        ]
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
