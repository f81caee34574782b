"""Rule evaluation: which rule, if any, selects each process, and why.

Rules are evaluated in priority order (critical first, then the order they were given); the
first rule whose every condition holds produces the finding. Regexes are compiled once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from reaper_engine.humanize import duration
from reaper_engine.models import Finding, ProcessIdentity, ProcessInfo
from reaper_engine.rules import Rule
from reaper_engine.safety import SafetyPolicy


@dataclass(frozen=True, slots=True)
class Check:
    """One predicate of a rule against one process."""

    predicate: str
    held: bool


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]


class Detector:
    def __init__(self, rules: Sequence[Rule]) -> None:
        enabled = [r for r in rules if r.enabled]
        ordered = sorted(enumerate(enabled), key=lambda ir: (ir[1].priority.rank, ir[0]))
        self.rules = tuple(r for _, r in ordered)
        self._compiled = tuple(
            _Compiled(
                rule=r,
                include=tuple(re.compile(p) for p in r.conditions.command_patterns),
                exclude=tuple(re.compile(p) for p in r.conditions.all_exclusions),
            )
            for r in self.rules
        )

    def evaluate(
        self,
        processes: Iterable[ProcessInfo],
        *,
        now: datetime,
        host_id: str,
        policy: SafetyPolicy | None = None,
    ) -> list[Finding]:
        """Findings, most urgent first; protected processes are marked, never dropped silently."""
        findings: list[Finding] = []
        now_ts = now.timestamp()
        for proc in processes:
            command = proc.command
            for compiled in self._compiled:
                if not _selects(compiled, proc, command, now_ts):
                    continue
                # Explanations cost more than the test: only the matching rule gets one.
                checks = _check(compiled, proc, now)
                protection = policy.protection_for(proc) if policy else None
                findings.append(_finding(compiled.rule, proc, checks, now, host_id, protection))
                break
        findings.sort(key=lambda f: f.priority.rank)
        return findings

    def explain(self, proc: ProcessInfo, *, now: datetime) -> list[tuple[Rule, list[Check]]]:
        """Every enabled rule with each of its predicates and whether it held."""
        return [(c.rule, _check(c, proc, now)) for c in self._compiled]


def _selects(compiled: _Compiled, proc: ProcessInfo, command: str, now_ts: float) -> bool:
    """Exactly ``all(c.held for c in _check(...))``, without building a word of text.

    Cheapest tests first, regexes last, out at the first failure: most processes fail a
    numeric condition of most rules.
    """
    cond = compiled.rule.conditions
    age = max(0.0, now_ts - proc.create_time)
    if cond.cpu_percent_min is not None:
        if proc.cpu_percent < cond.cpu_percent_min:
            return False
        if cond.duration_seconds is not None and not _sustained_holds(
            proc, cond.cpu_percent_min, cond.duration_seconds, age
        ):
            return False
    if cond.cpu_percent_max is not None and proc.cpu_percent > cond.cpu_percent_max:
        return False
    if (
        cond.lifetime_cpu_percent_min is not None or cond.lifetime_cpu_percent_max is not None
    ) and not _within(
        100.0 * proc.cpu_time / age if age > 0 else 0.0,  # ProcessInfo.lifetime_cpu_percent
        cond.lifetime_cpu_percent_min,
        cond.lifetime_cpu_percent_max,
    ):
        return False
    min_age = cond.min_age_seconds
    if min_age is not None and age < min_age:
        return False
    if not _within(proc.rss_mb, cond.memory_mb_min, cond.memory_mb_max):
        return False
    if cond.states and proc.status not in cond.states:
        return False
    if cond.users and proc.user not in cond.users:
        return False
    if cond.idle_seconds is not None and not _idle_holds(proc, cond.idle_seconds, age):
        return False
    if compiled.include and not any(p.search(command) for p in compiled.include):
        return False
    return not any(p.search(command) for p in compiled.exclude)


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _sustained_holds(proc: ProcessInfo, minimum: float, window: float, age: float) -> bool:
    measured = proc.window_cpu(window)
    if measured is not None:
        return measured[0] >= minimum
    lifetime = 100.0 * proc.cpu_time / age if age > 0 else 0.0
    return age >= window and lifetime >= minimum


def _idle_holds(proc: ProcessInfo, seconds: float, age: float) -> bool:
    measured = proc.window_cpu(seconds)
    if measured is not None:
        return measured[1] < _TICK
    return proc.cpu_time < _TICK and age >= seconds


def _check(compiled: _Compiled, proc: ProcessInfo, now: datetime) -> list[Check]:
    cond = compiled.rule.conditions
    command = proc.command
    age = proc.age_seconds(now)
    checks: list[Check] = []
    if cond.cpu_percent_min is not None:
        checks.append(
            Check(
                f"cpu {proc.cpu_percent:.1f}% >= {cond.cpu_percent_min:g}%",
                proc.cpu_percent >= cond.cpu_percent_min,
            )
        )
        if cond.duration_seconds is not None:
            checks.append(_sustained(proc, cond.cpu_percent_min, cond.duration_seconds, age, now))
    if cond.cpu_percent_max is not None:
        checks.append(
            Check(
                f"cpu {proc.cpu_percent:.1f}% <= {cond.cpu_percent_max:g}%",
                proc.cpu_percent <= cond.cpu_percent_max,
            )
        )
    if cond.lifetime_cpu_percent_min is not None or cond.lifetime_cpu_percent_max is not None:
        lifetime = proc.lifetime_cpu_percent(now)
        checks += _bounds(
            f"lifetime cpu {lifetime:.1f}%",
            lifetime,
            cond.lifetime_cpu_percent_min,
            cond.lifetime_cpu_percent_max,
            "%",
        )
    if cond.idle_seconds is not None:
        checks.append(_idle(proc, cond.idle_seconds, age))
    min_age = cond.min_age_seconds
    if min_age is not None:
        checks.append(Check(f"age {duration(age)} >= {duration(min_age)}", age >= min_age))
    checks += _bounds(
        f"memory {proc.rss_mb:.0f} MB", proc.rss_mb, cond.memory_mb_min, cond.memory_mb_max, " MB"
    )
    if cond.states:
        checks.append(
            Check(
                f"state {proc.status.value} in {[s.value for s in cond.states]}",
                proc.status in cond.states,
            )
        )
    if cond.users:
        checks.append(Check(f"user {proc.user} in {list(cond.users)}", proc.user in cond.users))
    if compiled.include:
        hit = next((p.pattern for p in compiled.include if p.search(command)), None)
        checks.append(
            Check(
                f"command matches {hit!r}" if hit else "command matches a pattern", hit is not None
            )
        )
    if compiled.exclude:
        hit = next((p.pattern for p in compiled.exclude if p.search(command)), None)
        checks.append(
            Check(f"command excluded by {hit!r}" if hit else "command not excluded", hit is None)
        )
    return checks


def _bounds(
    shown: str, value: float, low: float | None, high: float | None, unit: str
) -> list[Check]:
    """``shown >= low`` and ``shown <= high``, for the bounds that are set."""
    checks = []
    if low is not None:
        checks.append(Check(f"{shown} >= {low:g}{unit}", value >= low))
    if high is not None:
        checks.append(Check(f"{shown} <= {high:g}{unit}", value <= high))
    return checks


def _sustained(
    proc: ProcessInfo, minimum: float, window: float, age: float, now: datetime
) -> Check:
    """At least ``minimum``% CPU on average over the last ``window`` seconds.

    Measured from the agent's history when it covers the window; a one-shot scan has none and
    falls back to the lifetime average of a process at least ``window`` old.
    """
    wanted = f">= {minimum:g}% for {duration(window)}"
    measured = proc.window_cpu(window)
    if measured is not None:
        percent, _ = measured
        return Check(
            f"sustained {percent:.1f}% over the last {duration(window)} ({wanted})",
            percent >= minimum,
        )
    lifetime = proc.lifetime_cpu_percent(now)
    return Check(
        f"sustained {lifetime:.1f}% over its lifetime of {duration(age)} ({wanted})",
        age >= window and lifetime >= minimum,
    )


_TICK = 0.01  # cpu time is counted in clock ticks; less than one tick is no progress


def _idle(proc: ProcessInfo, seconds: float, age: float) -> Check:
    """No CPU progress for ``seconds`` (the inactivity shutdown of a process manager).

    Needs history covering that long, except for a process that never used any CPU at all.
    """
    measured = proc.window_cpu(seconds)
    if measured is not None:
        _, used = measured
        return Check(
            f"{used:.2f}s of CPU in the last {duration(seconds)} (idle: none)", used < _TICK
        )
    if proc.cpu_time < _TICK and age >= seconds:
        return Check(f"no CPU used in {duration(age)} (idle >= {duration(seconds)})", True)
    return Check(f"idle for {duration(seconds)}: not yet known (history too short)", False)


def _finding(
    rule: Rule,
    proc: ProcessInfo,
    checks: list[Check],
    now: datetime,
    host_id: str,
    protection: str | None,
) -> Finding:
    age = proc.age_seconds(now)
    cond = rule.conditions
    measured = proc.window_cpu(cond.duration_seconds) if cond.duration_seconds is not None else None
    if cond.cpu_percent_min is not None and measured is not None:
        # The sustained load was measured over a window of the scan history: say which.
        window = duration(cond.duration_seconds or 0)
        reason = f"CPU {measured[0]:.1f}% over the last {window} (running {duration(age)})"
    elif cond.cpu_percent_min is not None and cond.duration_seconds is not None:
        # No history: the lifetime average held, so the load did last the process's age.
        reason = f"CPU {proc.cpu_percent:.1f}% for {duration(age)}"
    elif cond.cpu_percent_min is not None:
        reason = f"CPU {proc.cpu_percent:.1f}% (running {duration(age)})"
    elif cond.lifetime_cpu_percent_min is not None or cond.lifetime_cpu_percent_max is not None:
        lifetime = proc.lifetime_cpu_percent(now)
        reason = f"CPU {lifetime:.1f}% on average since it started {duration(age)} ago"
    elif cond.memory_mb_min is not None:
        reason = f"memory {proc.rss_mb:.0f} MB (age {duration(age)})"
    else:
        reason = f"age {duration(age)}, CPU {proc.cpu_percent:.1f}%"
    return Finding(
        identity=ProcessIdentity(host_id=host_id, pid=proc.pid, create_time=proc.create_time),
        rule=rule.name,
        priority=rule.priority,
        reason=f"{rule.name}: {reason}",
        matched=tuple(c.predicate for c in checks),
        command=proc.command,
        name=proc.name,
        user=proc.user,
        cpu_percent=proc.cpu_percent,
        rss_mb=round(proc.rss_mb, 2),
        age_seconds=round(age, 1),
        protected_by=protection,
        report_only=rule.action.type == "report",
    )
