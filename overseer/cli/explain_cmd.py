"""``reaper explain PID``: each rule's predicates against one process, and its protection."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from overseer.cli.common import EXIT_REFUSED, config_option, fail, open_reaper, setup_logging
from overseer.cli.output import Output


@click.command("explain")
@click.argument("pid", type=click.IntRange(min=0))
@config_option
@click.pass_context
def explain(ctx: click.Context, pid: int, config_path: Path | None) -> None:
    """Show which rules' conditions hold for PID and which fail, and what protects it."""
    setup_logging(ctx)
    from reaper_engine.humanize import duration

    with open_reaper(config_path) as reaper:
        found = reaper.explain(pid)
        if found is None:
            fail(f"no such process: PID {pid}", EXIT_REFUSED)
        action = reaper.action_for(found.finding) if found.finding is not None else None
    proc = found.process
    out = Output()
    started = datetime.fromtimestamp(proc.create_time, tz=UTC).astimezone()
    out.line(f"PID {proc.pid}  {proc.command}", "bold")
    out.line(
        f"  user {proc.user or '?'}, state {proc.status.value}, CPU {proc.cpu_percent:.1f}%, "
        f"memory {proc.rss_mb:.0f} MB, age {duration(found.age_seconds)} "
        f"(started {started:%Y-%m-%d %H:%M:%S})"
    )
    out.line()
    out.line("Rules, in evaluation order (the first one whose every check holds selects it):")
    for verdict in found.verdicts:
        rule = verdict.rule
        mark, style = ("MATCH", "bold green") if verdict.matched else ("no", "dim")
        out.line(f"  {mark:<5} {rule.name} ({rule.priority.value})", style)
        for check in verdict.checks:
            word, check_style = ("held", "green") if check.held else ("failed", "red")
            out.line(f"          {word:<6}  {check.predicate}", check_style)
    for name in found.disabled:
        out.line(f"  off   {name} (disabled in the configuration)", "dim")
    out.line()
    selected = found.selected_by
    out.line(f"Selected by: {selected or 'no rule'}")
    out.line(f"Protection:  {found.protection or 'none'}")
    if selected is None:
        verdict_text = "not a rogue process; `reaper kill PID` would still apply every protection"
    elif found.protection is not None:
        verdict_text = f"protected ({found.protection}): never signalled"
    elif action is not None and action.type == "report":
        verdict_text = f"rule '{selected}' only reports it: never signalled by `kill --all`"
    elif action is not None:
        verdict_text = f"`reaper kill --all` would send {action.signal.value}"
    else:  # pragma: no cover - a finding always has a rule
        verdict_text = "selected"
    out.line(f"Verdict:     {verdict_text}", "bold")


def register(group: click.Group) -> None:
    group.add_command(explain)
