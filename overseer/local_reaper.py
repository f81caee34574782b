"""The local reaper: scan, explain and kill on this machine, for the ``reaper`` command line.

A facade over the pieces the fleet uses, so one machine is judged exactly as an agent would
judge it: the local transport lists processes (CPU% sampled), ``BaseAgent.look`` applies the
safety policy and the rules to that one table, and every signal goes through the
:class:`~agents.terminator.Terminator` with the configured audit log.

Explicit requests (``reaper kill PID``). An operator may name a process that no rule selects,
or one that a report-only rule lists. Such a request is honoured the way ``kill`` would be, but
never around the safety net: the process gets a synthetic finding with rule ``manual`` and is
passed to the terminator like any other, so every protection (self, ancestors, own session,
root, other users, whitelist, scope, min_pid ...) and the PID + start-time identity check
still apply. Its action is :data:`MANUAL_ACTION` (SIGTERM, 5 s, then SIGKILL) unless the
operator chose a signal.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

from agents.base import BaseAgent
from agents.cpu_probe import CpuProbe
from agents.os_agents import AGENTS
from agents.platform.priority import boosted_cpu_share
from agents.terminator import Terminator
from agents.transports.base import ProcessListing, Transport
from agents.transports.local import LocalTransportFactory, this_os
from infra.audit_log import JsonLinesAuditSink
from infra.config_files import LoadedConfig
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.audit import AuditRecord, AuditSink
from reaper_engine.clock import Clock
from reaper_engine.config import ReaperConfig
from reaper_engine.detector import Check
from reaper_engine.humanize import duration
from reaper_engine.models import (
    Finding,
    HostSpec,
    KillOutcome,
    KillRecord,
    Priority,
    ProcessIdentity,
    ProcessInfo,
    TransportKind,
)
from reaper_engine.rules import Rule, RuleAction
from reaper_engine.safety import SafetyPolicy
from reaper_engine.signals import Signal

MANUAL_RULE = "manual"
"""The rule name of a finding made for an explicit ``reaper kill PID`` (see the module doc)."""

MANUAL_ACTION = RuleAction(signal=Signal.SIGTERM, timeout_seconds=5.0, log_level="warning")
"""What an explicit kill of a process no kill-rule selects does: SIGTERM, 5 s, SIGKILL."""

_HOST_ID = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True, slots=True)
class ScanReport:
    """One look at this machine: every finding (protected ones too, with their protection)."""

    host_id: str
    scanned_at: datetime
    findings: tuple[Finding, ...]
    processes_scanned: int
    skipped: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0

    @property
    def killable(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.killable)

    @property
    def protected(self) -> tuple[Finding, ...]:
        """Findings a protection covers: reported, never signalled."""
        return tuple(f for f in self.findings if f.protected_by is not None)

    @property
    def rogue(self) -> tuple[Finding, ...]:
        """What the report counts as rogue: every unprotected finding (report-only included)."""
        return tuple(f for f in self.findings if f.protected_by is None)

    @property
    def estimated_cpu_recovery(self) -> float:
        """CPU% (100 = one core) the killable findings use now: what ``kill --all`` frees."""
        return round(sum(f.cpu_percent for f in self.killable), 1)


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    rule: Rule
    checks: tuple[Check, ...]

    @property
    def matched(self) -> bool:
        return all(c.held for c in self.checks)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a process is (not) selected, and whether anything protects it."""

    process: ProcessInfo
    verdicts: tuple[RuleVerdict, ...]  # enabled rules, in evaluation order
    disabled: tuple[str, ...]  # names of rules the configuration disables
    finding: Finding | None  # what the first matching rule makes of it
    protection: str | None  # the protection that applies now, if any
    age_seconds: float

    @property
    def selected_by(self) -> str | None:
        return self.finding.rule if self.finding is not None else None


class LocalReaper:
    """Scan, explain and kill on this machine with one loaded configuration."""

    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        env: Mapping[str, str],
        transports: LocalTransportFactory | None = None,
        audit: AuditSink | None = None,
        clock: Clock | None = None,
        boost: bool = True,
        cpu_probe: CpuProbe | None = None,
    ) -> None:
        self.loaded = loaded
        self.config: ReaperConfig = loaded.config
        self._env = env
        self._transports = transports or LocalTransportFactory.from_settings(
            self.config.scanner, cpu_probe=cpu_probe
        )
        self._audit = audit
        self._boost = boost and self.config.scanner.boost_cpu_share
        os_ = this_os()
        self.spec = HostSpec(host_id=local_host_id(), os=os_, transport=TransportKind.LOCAL)
        # The agent is used for its judgement only (look); it never consumes a queue here.
        self._agent: BaseAgent = AGENTS[os_.agent_type](
            InMemoryTaskQueue(),
            InMemoryEventBus(),
            self._transports,
            rules=self.config.rules,
            safety=self.config.safety,
            clock=clock,
            config_file=self.config_file,
        )
        self._rules = {r.name: r for r in self.config.rules}
        self._transport: Transport | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def config_file(self) -> str | None:
        """The user-level (or explicit) file, named in every audit record."""
        return str(self.loaded.user_file) if self.loaded.user_file is not None else None

    @property
    def clock(self) -> Clock:
        return self._agent.clock

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transports.close()

    def __enter__(self) -> LocalReaper:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- scanning ---------------------------------------------------------------------------

    def scan(self) -> ScanReport:
        started = time.monotonic()
        listing, _, findings = self._look()
        return ScanReport(
            host_id=self.spec.host_id,
            scanned_at=self.clock.now(),
            findings=tuple(findings),
            processes_scanned=len(listing.processes),
            skipped=dict(listing.skipped),
            duration_seconds=round(time.monotonic() - started, 3),
        )

    def plan_kill_all(
        self, rule: str | None = None, *, report: ScanReport | None = None
    ) -> list[Finding]:
        """The killable findings (not protected, not report-only), most urgent first.

        ``rule`` narrows them to one rule; an unknown name is a ValueError (a typo must not
        silently mean "nothing to do").
        """
        if rule is not None and rule not in self._rules:
            known = ", ".join(sorted(self._rules))
            raise ValueError(f"no rule named '{rule}' (rules: {known})")
        report = report or self.scan()
        return [f for f in report.killable if rule is None or f.rule == rule]

    def find(self, pid: int) -> Finding | None:
        """What an explicit request for ``pid`` acts on, or None if there is no such process.

        The finding of the rule that selects it when that rule kills; otherwise a ``manual``
        finding (see the module doc). Either carries the protection that applies now.
        """
        listing, policy, findings = self._look()
        return self._target(pid, listing, policy, findings)

    def explain(self, pid: int) -> Explanation | None:
        listing, policy, findings = self._look()
        proc = next((p for p in listing.processes if p.pid == pid), None)
        if proc is None:
            return None
        now = self.clock.now()
        verdicts = tuple(
            RuleVerdict(rule, tuple(checks))
            for rule, checks in self._agent.detector.explain(proc, now=now)
        )
        return Explanation(
            process=proc,
            verdicts=verdicts,
            disabled=tuple(r.name for r in self.config.rules if not r.enabled),
            finding=next((f for f in findings if f.identity.pid == pid), None),
            protection=policy.protection_for(proc),
            age_seconds=proc.age_seconds(now),
        )

    # -- killing ----------------------------------------------------------------------------

    def kill(
        self,
        findings: Sequence[Finding],
        *,
        dry_run: bool,
        signal_override: Signal | None = None,
        require_match: bool = True,
    ) -> list[KillRecord]:
        """End each finding's process through the terminator; one record per decision.

        The machine is looked at again first, and each process judged as it is *now*:
        with ``require_match`` (``kill --all``) a rule finding is acted on only if the same
        rule still selects the same process; otherwise (an explicit PID) only its identity
        (PID and start time) must still hold. The terminator re-checks identity and every
        protection immediately before each signal.
        """
        # Boosted for the look only: the kill loop waits on rule timeouts, and the boost is
        # session-wide (the caller's terminal) until restored.
        listing, policy, current = self._look()
        terminator = Terminator(
            self._open(),
            policy,
            clock=self.clock,
            audit=self._audit_sink(),
            config_file=self.config_file,
        )
        by_pid = {f.identity.pid: f for f in current}
        records: list[KillRecord] = []
        for wanted in findings:
            records.extend(
                self._kill_one(
                    wanted,
                    terminator,
                    listing,
                    policy,
                    by_pid,
                    dry_run=dry_run,
                    signal_override=signal_override,
                    require_match=require_match,
                )
            )
        return records

    def _kill_one(
        self,
        wanted: Finding,
        terminator: Terminator,
        listing: ProcessListing,
        policy: SafetyPolicy,
        by_pid: Mapping[int, Finding],
        *,
        dry_run: bool,
        signal_override: Signal | None,
        require_match: bool,
    ) -> list[KillRecord]:
        pid = wanted.identity.pid
        proc = next((p for p in listing.processes if p.pid == pid), None)
        same = proc is not None and wanted.identity.same_process(proc.pid, proc.create_time)
        target = wanted
        if same and require_match and wanted.rule != MANUAL_RULE:
            now = by_pid.get(pid)
            if now is None or now.rule != wanted.rule:
                # Changed between the plan and the kill (CPU dropped, a rule was edited ...):
                # what the operator approved no longer holds, so nothing is signalled.
                record = KillRecord(
                    identity=wanted.identity,
                    rule=wanted.rule,
                    priority=wanted.priority,
                    command=wanted.command,
                    outcome=KillOutcome.PROTECTED,
                    detail=f"no longer matches rule '{wanted.rule}'",
                    dry_run=dry_run,
                    cpu_percent=wanted.cpu_percent,
                )
                self._audit_sink().record(self._audit_record(wanted, record))
                return [record]
            target = now
        elif same and proc is not None:
            # Fresh figures for the audit; protections are the terminator's to re-check.
            fresh = self._target(pid, listing, policy, list(by_pid.values()))
            if fresh is not None and fresh.rule == wanted.rule:
                target = fresh
        # A process that is gone or was replaced still goes to the terminator: it records
        # (and audits) already_gone without signalling anything.
        action = self._action(target, signal_override)
        try:
            return terminator.terminate_scope(
                target, action, dry_run=dry_run, processes=listing.processes
            )
        except Exception as err:  # noqa: BLE001 - one failure must not lose the other kills
            return [
                terminator.failed(
                    target, action, dry_run=dry_run, detail=f"{type(err).__name__}: {err}"
                )
            ]

    def action_for(self, finding: Finding, signal_override: Signal | None = None) -> RuleAction:
        """The action a kill of ``finding`` uses (its rule's, or MANUAL_ACTION), with the
        operator's signal if one was given."""
        return self._action(finding, signal_override)

    def _action(self, finding: Finding, signal_override: Signal | None) -> RuleAction:
        rule = self._rules.get(finding.rule)
        action = rule.action if rule is not None else MANUAL_ACTION
        if signal_override is None:
            return action
        # SIGKILL cannot be caught: a fallback after it would only repeat it.
        fallback = None if signal_override is Signal.SIGKILL else action.fallback_signal
        return action.model_copy(update={"signal": signal_override, "fallback_signal": fallback})

    # -- internals --------------------------------------------------------------------------

    def _target(
        self,
        pid: int,
        listing: ProcessListing,
        policy: SafetyPolicy,
        findings: Iterable[Finding],
    ) -> Finding | None:
        proc = next((p for p in listing.processes if p.pid == pid), None)
        if proc is None:
            return None
        found = next((f for f in findings if f.identity.pid == pid), None)
        if found is not None and not found.report_only:
            return found
        return self._manual(proc, policy, matched=found)

    def _manual(
        self, proc: ProcessInfo, policy: SafetyPolicy, *, matched: Finding | None
    ) -> Finding:
        now = self.clock.now()
        age = proc.age_seconds(now)
        why = (
            f"{matched.rule} (report only) matched; killed on explicit request"
            if matched is not None
            else "no rule matches; killed on explicit request"
        )
        return Finding(
            identity=ProcessIdentity(
                host_id=self.spec.host_id, pid=proc.pid, create_time=proc.create_time
            ),
            rule=MANUAL_RULE,
            priority=Priority.HIGH,
            reason=f"{MANUAL_RULE}: {why} (age {duration(age)}, CPU {proc.cpu_percent:.1f}%)",
            command=proc.command,
            name=proc.name,
            user=proc.user,
            cpu_percent=proc.cpu_percent,
            rss_mb=round(proc.rss_mb, 2),
            age_seconds=round(age, 1),
            protected_by=policy.protection_for(proc),
        )

    def _look(self) -> tuple[ProcessListing, SafetyPolicy, list[Finding]]:
        with self._boosted():
            return self._look_unboosted()

    def _look_unboosted(self) -> tuple[ProcessListing, SafetyPolicy, list[Finding]]:
        look = self._agent.look(self._open(), host_id=self.spec.host_id)
        return look.listing, look.policy, look.findings

    def _boosted(self) -> contextlib.AbstractContextManager[object]:
        # A one-shot scan competes with the very loops it looks for: the boost (nice and
        # autogroup, where permitted) keeps it quick under load, and is undone afterwards.
        return boosted_cpu_share() if self._boost else contextlib.nullcontext()

    def _open(self) -> Transport:
        # One transport for the reaper's life: the CPU history and pidfds are the factory's,
        # and a second scan in the same process then measures over a real window.
        if self._transport is None:
            self._transport = self._transports.open(self.spec)
        return self._transport

    def _audit_sink(self) -> AuditSink:
        # Opened on the first kill decision only: a scan or explain writes nothing.
        if self._audit is None:
            settings = self.config.logging
            self._audit = JsonLinesAuditSink.from_settings(
                self._env,
                file=settings.file,
                max_size_mb=settings.max_size_mb,
                rotate_count=settings.rotate_count,
            )
        return self._audit

    def _audit_record(self, finding: Finding, record: KillRecord) -> AuditRecord:
        return AuditRecord.of(
            finding,
            record,
            timestamp=self.clock.now(),
            hostname=self.spec.host_id,
            config_file=self.config_file,
        )


def local_host_id() -> str:
    """This machine's name as a host id (the audit log's ``hostname``): first label of the
    hostname, reduced to the characters a host id allows."""
    name = _HOST_ID.sub("-", socket.gethostname().split(".")[0]).strip("-._")
    return name[:63] or "localhost"


def started_at(finding: Finding) -> datetime:
    return datetime.fromtimestamp(finding.identity.create_time, tz=UTC)
