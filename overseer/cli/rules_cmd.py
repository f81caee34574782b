"""``reaper rules``: the loaded rules with priority, enabled state and action."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from overseer.cli.common import config_option, load, setup_logging
from overseer.cli.output import Output

if TYPE_CHECKING:
    from reaper_engine.rules import Rule


@click.command("rules")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as JSON.")
@config_option
@click.pass_context
def rules(ctx: click.Context, as_json: bool, config_path: Path | None) -> None:
    """List the loaded rules (defaults merged with your files) in evaluation order."""
    setup_logging(ctx)
    loaded = load(config_path)
    ordered = sorted(
        enumerate(loaded.config.rules),
        key=lambda ir: (not ir[1].enabled, ir[1].priority.rank, ir[0]),
    )
    out = Output()
    if as_json:
        out.json([r.model_dump(mode="json") for _, r in ordered])
        return
    out.line("Loaded Rules:", "bold")
    out.line("─" * 78 if out.fancy else "-" * 78)
    for _, rule in ordered:
        icon = out.icon("ok" if rule.enabled else "off")
        state = "Enabled" if rule.enabled else "Disabled"
        priority = rule.priority.value.capitalize()
        out.line(
            f"{icon}{rule.name:<21} Priority: {priority:<9} {state:<9} {action_text(rule)}",
            None if rule.enabled else "dim",
        )
    sources = ", ".join(str(p) for p in loaded.sources) or "none"
    out.line()
    out.line(f"Built-in defaults merged with: {sources}", "dim")


def action_text(rule: Rule) -> str:
    action = rule.action
    if action.type == "report":
        return "report only"
    text = f"kill: {action.signal.value}"
    if action.fallback_signal is not None:
        text += f", {action.fallback_signal.value} after {action.timeout_seconds:g}s"
    if action.scope != "process":
        text += f" ({action.scope})"
    return text


def register(group: click.Group) -> None:
    group.add_command(rules)
