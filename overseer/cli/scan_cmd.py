"""``reaper scan``: one look at this machine, findings grouped by priority (seed 000)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.common import config_option, open_reaper, setup_logging
from overseer.cli.output import (
    PRIORITY_STYLE,
    Output,
    finding_row,
    percent,
    plural,
    short_command,
)

if TYPE_CHECKING:
    from overseer.local_reaper import ScanReport
    from reaper_engine.models import Finding

PRIORITIES = ("critical", "high", "medium", "low")


@click.command("scan")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--dry-run", is_flag=True, help="Say so in the output (a scan never kills).")
@config_option
@click.pass_context
def scan(ctx: click.Context, as_json: bool, dry_run: bool, config_path: Path | None) -> None:
    """Scan this machine once and list the rogue processes (nothing is signalled).

    Findings are grouped by priority with PID, command, CPU, age and rule; processes a rule
    matched but a protection covers are listed separately with the protection.
    """
    # First look at CPU times before logging, the engine and the config load (the console
    # script took it before importing click, else now): that loading becomes the CPU
    # sampling window instead of a sleep after it.
    from agents.cpu_probe import take_probe

    probe = take_probe()
    setup_logging(ctx, deferred=True)
    with open_reaper(config_path, cpu_probe=probe) as reaper:
        report = reaper.scan()
    out = Output()
    if as_json:
        out.json(scan_document(report, dry_run=dry_run))
        return
    show_scan(out, report, dry_run=dry_run)


def show_scan(out: Output, report: ScanReport, *, dry_run: bool) -> None:
    if dry_run:
        out.line("[Dry Run Mode - No processes will be killed]", "bold")
    out.line("Scanning for rogue processes...")
    rogue = report.rogue
    for priority in PRIORITIES:
        group = [f for f in rogue if f.priority.value == priority]
        if not group:
            continue
        out.line()
        out.line(
            f"{out.icon(priority)}{priority.capitalize()} ({len(group)}):", PRIORITY_STYLE[priority]
        )
        for finding in group:
            note = "  (report only)" if finding.report_only else ""
            out.line(row(finding) + note)
    out.line()
    if rogue:
        out.line(
            f"Total: {plural(len(rogue), 'rogue process', 'rogue processes')} detected", "bold"
        )
        out.line(f"Estimated CPU recovery: {percent(report.estimated_cpu_recovery)}")
        if report.killable:
            out.line("Run 'reaper kill --all' to terminate")
    else:
        out.line(f"{out.icon('ok')}No rogue processes detected", "green")
    protected = report.protected
    if protected:
        out.line()
        out.line(f"Protected ({len(protected)}): matched a rule, will not be signalled", "dim")
        for finding in protected:
            out.line(f"{row(finding)}  Protected: {finding.protected_by}", "dim")
    out.line()
    skipped = sum(report.skipped.values())
    note = ""
    if skipped:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
        note = f" ({skipped} unreadable: {reasons})"
    out.line(
        f"Scanned {plural(report.processes_scanned, 'process', 'processes')} "
        f"in {report.duration_seconds:.2f}s{note}",
        "dim",
    )


def row(finding: Finding) -> str:
    from reaper_engine.humanize import duration

    return finding_row(
        finding.identity.pid,
        short_command(finding.command, finding.name),
        finding.cpu_percent,
        duration(finding.age_seconds),
        finding.rule,
    )


def finding_document(finding: Finding) -> dict[str, Any]:
    from overseer.local_reaper import started_at

    return {
        "pid": finding.identity.pid,
        "start_time": started_at(finding).isoformat(),
        "create_time": finding.identity.create_time,
        "command": finding.command,
        "name": finding.name,
        "user": finding.user,
        "rule": finding.rule,
        "priority": finding.priority.value,
        "reason": finding.reason,
        "matched": list(finding.matched),
        "cpu_percent": finding.cpu_percent,
        "memory_mb": finding.rss_mb,
        "age_seconds": finding.age_seconds,
        "protected_by": finding.protected_by,
        "report_only": finding.report_only,
        "killable": finding.killable,
    }


def scan_document(report: ScanReport, *, dry_run: bool) -> dict[str, Any]:
    return {
        "host": report.host_id,
        "scanned_at": report.scanned_at.isoformat(),
        "dry_run": dry_run,
        "processes_scanned": report.processes_scanned,
        "skipped": report.skipped,
        "duration_seconds": report.duration_seconds,
        "total": len(report.rogue),
        "killable": len(report.killable),
        "protected": len(report.protected),
        "estimated_cpu_recovery_percent": report.estimated_cpu_recovery,
        "findings": [finding_document(f) for f in report.findings],
    }


def register(group: click.Group) -> None:
    group.add_command(scan)
