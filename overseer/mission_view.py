"""Plain-text views of missions, shared by the demo and ``reaper mission``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reaper_engine.models import MissionState, MissionSummary

if TYPE_CHECKING:
    # Not at run time: the demo renders missions without loading the Redis adapters.
    from infra.redis.store import UnreadableSummary

UNREADABLE = "unreadable"


def render_table(state: MissionState) -> str:
    header = (
        "HOST",
        "OS",
        "STATUS",
        "OUTCOME",
        "FAILURES",
        "LOCKED",
        "FINDINGS",
        "SPARED",
        "KILLS",
    )
    rows = [header]
    for host in state.hosts.values():
        spared_count = sum(1 for f in host.findings if not f.killable)
        rows.append(
            (
                host.host_id,
                host.os.value,
                host.last_status.value,
                host.outcome.value if host.outcome else "-",
                f"{host.failure_count}/{host.max_failures}",
                "yes" if host.locked else "no",
                str(len(host.findings)),
                str(spared_count),
                str(host.successful_kills),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    details = [
        f"  {h.host_id}: {h.outcome_detail}" for h in state.hosts.values() if h.outcome_detail
    ]
    spared = [
        f"  {h.host_id} pid {f.identity.pid} ({f.name}): {f.rule} matched, "
        f"{f.protected_by or 'report-only rule'}"
        for h in state.hosts.values()
        for f in h.findings
        if not f.killable
    ]
    return "\n".join([*lines, "", *details, *(["", "Spared:", *spared] if spared else [])])


def render_header(state: MissionState) -> str:
    counters = state.counters
    finished = f", finished {state.finished_at:%Y-%m-%d %H:%M:%S} UTC" if state.finished_at else ""
    return (
        f"Mission {state.mission_id} ({state.kind.value}"
        f"{', dry run' if state.options.dry_run else ''}): {state.status.value}\n"
        f"  created {state.created_at:%Y-%m-%d %H:%M:%S} UTC{finished}\n"
        f"  tasks: {len(state.pending_tasks)} pending, {len(state.completed_tasks)} done; "
        f"findings {counters.findings}, kills {counters.kills}"
    )


def render_summaries(summaries: Sequence[MissionSummary | UnreadableSummary]) -> str:
    """One line per mission; one whose summary cannot be read says so, not the whole list."""
    header = (
        "MISSION",
        "KIND",
        "STATUS",
        "HOSTS",
        "LOCKED",
        "PENDING",
        "FINDINGS",
        "KILLS",
        "CREATED",
    )
    rows = [header]
    for s in summaries:
        if not isinstance(s, MissionSummary):
            rows.append((s.mission_id, "-", UNREADABLE, "-", "-", "-", "-", "-", "-"))
            continue
        rows.append(
            (
                s.mission_id,
                s.kind.value + (" (dry run)" if s.dry_run else ""),
                s.status.value,
                str(s.hosts),
                str(s.hosts_locked),
                str(s.pending_tasks),
                str(s.findings),
                str(s.kills),
                f"{s.created_at:%Y-%m-%d %H:%M:%S}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
