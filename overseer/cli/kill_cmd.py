"""``reaper kill PID`` and ``reaper kill --all``: show the plan, confirm, kill, report.

Every signal goes through the terminator (``LocalReaper.kill``): a protected process is
refused with the protection's name whatever was asked. Confirmation is required unless
``--yes`` or ``--dry-run``; when nobody can answer (stdin is not a terminal) the command
refuses instead of prompting, so a script never hangs on, or silently skips, a prompt.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.common import (
    EXIT_KILL_FAILED,
    EXIT_NOT_CONFIRMED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    config_option,
    fail,
    open_reaper,
    setup_logging,
    stdin_is_tty,
)
from overseer.cli.output import Output, percent, plural, short_command
from overseer.cli.scan_cmd import PRIORITIES, finding_document, row

if TYPE_CHECKING:
    from overseer.local_reaper import LocalReaper
    from reaper_engine.models import Finding, KillRecord
    from reaper_engine.rules import RuleAction
    from reaper_engine.signals import Signal


def _signal(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Signal | None:
    if value is None:
        return None
    from reaper_engine.signals import Signal

    try:
        return Signal.parse(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@click.command("kill")
@click.argument("pid", type=click.IntRange(min=0), required=False)
@click.option("--all", "kill_all", is_flag=True, help="Kill every killable finding of a scan.")
@click.option("--rule", metavar="NAME", help="With --all: only the findings of this rule.")
@click.option(
    "--signal",
    "signal",
    metavar="SIG",
    callback=_signal,
    help="With PID: first signal to send (SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGQUIT, or 15 ...).",
)
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Decide and audit everything, signal nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcomes as JSON.")
@config_option
@click.pass_context
def kill(
    ctx: click.Context,
    pid: int | None,
    kill_all: bool,
    rule: str | None,
    signal: Signal | None,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    config_path: Path | None,
) -> None:
    """Kill one process (PID) or every rogue process (--all), safely.

    Shows what is about to happen and asks for confirmation unless --yes. Protected
    processes are refused with the reason. A PID that no rule selects may still be killed on
    request (rule "manual": SIGTERM, then SIGKILL after 5 s), with every protection applied.
    """
    if (pid is None) == (not kill_all):
        raise click.UsageError("give either a PID or --all")
    if rule is not None and not kill_all:
        raise click.UsageError("--rule goes with --all")
    if signal is not None and kill_all:
        raise click.UsageError("--signal goes with a PID (--all uses each rule's signal)")
    setup_logging(ctx)
    out = Output()
    with open_reaper(config_path) as reaper:
        if pid is not None:
            code = _kill_pid(reaper, out, pid, signal, yes=yes, dry_run=dry_run, as_json=as_json)
        else:
            code = _kill_all(reaper, out, rule, yes=yes, dry_run=dry_run, as_json=as_json)
    ctx.exit(code)


def _kill_pid(
    reaper: LocalReaper,
    out: Output,
    pid: int,
    signal: Signal | None,
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> int:
    target = reaper.find(pid)
    if target is None:
        fail(f"no such process: PID {pid}", EXIT_REFUSED)
    name = target.name or short_command(target.command)
    if target.protected_by is not None:
        # Through the terminator all the same: the refusal is audited like any decision.
        records = reaper.kill([target], dry_run=dry_run, require_match=False)
        if as_json:
            out.json(_document([target], records, dry_run=dry_run))
        fail(f"PID {pid} ({name}) is protected ({target.protected_by}): not killed", EXIT_REFUSED)
    action = reaper.action_for(target, signal)
    if not as_json:
        verb = "Would kill" if dry_run else "About to kill"
        out.line(f"{out.icon('warn')}{verb} PID {pid} ({name})", "bold yellow")
        out.line(f"    Command: {target.command}")
        out.line(f"    Reason: {target.reason}")
        out.line(f"    Signal: {_signals(action.signal.value, action)}")
    _confirm(out, yes=yes or dry_run, as_json=as_json)
    records = reaper.kill([target], dry_run=dry_run, signal_override=signal, require_match=False)
    return _report(out, [target], records, dry_run=dry_run, as_json=as_json, summary=False)


def _kill_all(
    reaper: LocalReaper,
    out: Output,
    rule: str | None,
    *,
    yes: bool,
    dry_run: bool,
    as_json: bool,
) -> int:
    report = reaper.scan()
    try:
        plan = reaper.plan_kill_all(rule, report=report)
    except ValueError as err:
        fail(str(err), EXIT_USAGE)
    spared = [f for f in report.findings if not f.killable and (rule is None or f.rule == rule)]
    if not plan:
        if as_json:
            out.json(_document([], [], dry_run=dry_run))
        else:
            what = f"rule '{rule}'" if rule else "any rule"
            out.line(f"{out.icon('ok')}Nothing to kill: no killable process matches {what}")
            _show_spared(out, spared)
        return EXIT_OK
    if not as_json:
        verb = "Would kill" if dry_run else "About to kill"
        count = plural(len(plan), "rogue process", "rogue processes")
        out.line(f"{out.icon('warn')}{verb} {count}", "bold yellow")
        by_priority = Counter(f.priority.value for f in plan)
        for priority in PRIORITIES:
            if by_priority[priority]:
                out.line(
                    f"    {priority.capitalize()}: "
                    f"{plural(by_priority[priority], 'process', 'processes')}"
                )
        out.line()
        for finding in plan:
            out.line(row(finding))
        _show_spared(out, spared)
        out.line()
    _confirm(out, yes=yes or dry_run, as_json=as_json)
    records = reaper.kill(plan, dry_run=dry_run, require_match=True)
    return _report(out, plan, records, dry_run=dry_run, as_json=as_json, summary=True)


def _show_spared(out: Output, spared: list[Finding]) -> None:
    if not spared:
        return
    out.line()
    out.line(f"Not killed ({len(spared)}):", "dim")
    for finding in spared:
        why = finding.protected_by or f"rule '{finding.rule}' only reports"
        out.line(f"{row(finding)}  Protected: {why}", "dim")


def _confirm(out: Output, *, yes: bool, as_json: bool) -> None:
    if yes:
        return
    if not stdin_is_tty():
        fail(
            "confirmation needed but stdin is not a terminal: pass --yes to kill "
            "(or --dry-run to see what would happen)",
            EXIT_NOT_CONFIRMED,
        )
    # The prompt goes to stderr under --json so that stdout stays one JSON document.
    if not click.confirm("    Proceed?", default=False, err=as_json or out.err):
        fail("cancelled: nothing was killed", EXIT_NOT_CONFIRMED)


def _report(
    out: Output,
    plan: list[Finding],
    records: list[KillRecord],
    *,
    dry_run: bool,
    as_json: bool,
    summary: bool,
) -> int:
    from reaper_engine.models import KillOutcome

    failed = [r for r in records if r.outcome in (KillOutcome.FAILED, KillOutcome.DENIED)]
    refused = [r for r in records if r.outcome is KillOutcome.PROTECTED]
    if as_json:
        out.json(_document(plan, records, dry_run=dry_run))
    else:
        for record in records:
            _outcome_line(out, record)
        if summary:
            _summary(out, records, failed, dry_run=dry_run)
    if failed:
        return EXIT_KILL_FAILED
    if refused and not summary:
        return EXIT_REFUSED  # the one process asked for was refused at the last check
    return EXIT_OK


def _outcome_line(out: Output, record: KillRecord) -> None:
    from reaper_engine.models import KillOutcome

    pid = record.identity.pid
    signals = ", ".join(record.signals)
    match record.outcome:
        case KillOutcome.TERMINATED:
            out.line(f"{out.icon('ok')}Process {pid} terminated ({signals})", "green")
        case KillOutcome.KILLED:
            out.line(f"{out.icon('ok')}Process {pid} killed ({signals})", "green")
        case KillOutcome.ALREADY_GONE:
            out.line(f"{out.icon('ok')}Process {pid} already gone ({record.detail})", "green")
        case KillOutcome.DRY_RUN:
            out.line(f"[dry run] Process {pid}: {record.detail}", "cyan")
        case KillOutcome.PROTECTED:
            out.line(f"{out.icon('bad')}Process {pid} refused: {record.detail}", "yellow")
        case _:
            out.line(
                f"{out.icon('bad')}Process {pid} {record.outcome.value}: {record.detail}", "red"
            )


def _summary(
    out: Output, records: list[KillRecord], failed: list[KillRecord], *, dry_run: bool
) -> None:
    from reaper_engine.models import KillOutcome

    if dry_run:
        would = sum(1 for r in records if r.outcome is KillOutcome.DRY_RUN)
        out.line(
            f"Dry run: would kill {plural(would, 'process', 'processes')}; nothing was signalled"
        )
        return
    ended = [r for r in records if r.outcome.is_kill]
    counts = Counter(r.outcome.value for r in records if not r.outcome.is_kill and r not in failed)
    others = "".join(f", {n} {what.replace('_', ' ')}" for what, n in sorted(counts.items()))
    icon, style = ("bad", "red") if failed else ("ok", "green")
    out.line(
        f"{out.icon(icon)}Killed {plural(len(ended), 'process', 'processes')} "
        f"({plural(len(failed), 'failure')}{others})",
        f"bold {style}",
    )
    out.line(f"{out.icon('stats')}CPU recovered: {percent(sum(r.cpu_percent for r in ended))}")


def _signals(first: str, action: RuleAction) -> str:
    if action.fallback_signal is None:
        return first
    return f"{first}, then {action.fallback_signal.value} after {action.timeout_seconds:g}s"


def _document(plan: list[Finding], records: list[KillRecord], *, dry_run: bool) -> dict[str, Any]:
    from datetime import UTC, datetime

    from reaper_engine.models import KillOutcome

    counts = Counter(r.outcome.value for r in records)
    return {
        "dry_run": dry_run,
        "requested": [finding_document(f) for f in plan],
        "results": [
            {
                "pid": r.identity.pid,
                "start_time": datetime.fromtimestamp(r.identity.create_time, tz=UTC).isoformat(),
                "create_time": r.identity.create_time,
                "command": r.command,
                "rule": r.rule,
                "priority": r.priority.value,
                "outcome": r.outcome.value,
                "signals": list(r.signals),
                "detail": r.detail,
                "dry_run": r.dry_run,
                "cpu_percent": r.cpu_percent,
                "elapsed_seconds": r.elapsed_seconds,
            }
            for r in records
        ],
        "summary": {
            "killed": sum(1 for r in records if r.outcome.is_kill),
            "failed": counts[KillOutcome.FAILED.value] + counts[KillOutcome.DENIED.value],
            "refused": counts[KillOutcome.PROTECTED.value],
            "already_gone": counts[KillOutcome.ALREADY_GONE.value],
            "dry_run": counts[KillOutcome.DRY_RUN.value],
            "cpu_recovered_percent": round(
                sum(r.cpu_percent for r in records if r.outcome.is_kill), 1
            ),
        },
    }


def register(group: click.Group) -> None:
    group.add_command(kill)
