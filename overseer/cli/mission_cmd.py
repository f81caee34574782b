"""``reaper mission create|status|list|cancel``: missions on a fleet's Redis."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    setup_logging,
)

if TYPE_CHECKING:
    from overseer.fleet.setup import FleetSetup
    from overseer.service import OverseerService
    from reaper_engine.models import MissionState

from overseer.cli.fleet_common import (
    FleetArgs,
    RedisFailedError,
    connect_fleet,
    fleet_options,
    redis_errors,
    service_for,
)

# `mission status --watch` keeps watching through a Redis outage this long (a restart, a
# failover), then gives up with EXIT_UNAVAILABLE rather than hang a script for ever.
WATCH_OUTAGE_SECONDS = 60.0


# -- reaper mission ... ----------------------------------------------------------------------


@click.group()
def mission() -> None:
    """Create, follow, list and cancel fleet missions (state lives in Redis)."""


@mission.command("create")
@click.option(
    "--inventory",
    "inventory_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Inventory file (TOML; see examples/lab.toml and docs/inventory.md).",
)
@click.option(
    "--kind",
    type=click.Choice(["audit", "reap"]),
    required=True,
    help="audit: discover and scan (read-only); reap: scan, kill what was found, verify.",
)
@click.option("--dry-run", is_flag=True, help="Decide and record kills, send no signal.")
@click.option(
    "--planner", default="rules", show_default=True, help="Planner to use (known: rules)."
)
@click.option(
    "--task-timeout",
    type=click.FloatRange(min=1, max=86400),
    default=None,
    help="Seconds a task may run before it is timed out (default 60).",
)
@click.option(
    "--retry-backoff",
    type=click.FloatRange(min=0, max=3600),
    default=None,
    help="Seconds before the first retry of a failed task, doubling after (default 1).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new mission as JSON.")
@fleet_options
@click.pass_context
def mission_create(
    ctx: click.Context,
    inventory_path: Path,
    kind: str,
    dry_run: bool,
    planner: str,
    task_timeout: float | None,
    retry_backoff: float | None,
    as_json: bool,
    fleet: FleetArgs,
) -> None:
    """Create a mission and dispatch its first tasks; a running `reaper engine` drives it."""
    setup_logging(ctx)
    from overseer.inventory import load_inventory, pin_table_paths
    from overseer.service import default_planners
    from reaper_engine.errors import ConfigError
    from reaper_engine.models import MissionOptions

    try:
        default_planners(planner)  # before the secret and Redis: a typo is a usage error
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        inventory = pin_table_paths(load_inventory(inventory_path), inventory_path)
    except ConfigError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    options: dict[str, Any] = {"dry_run": dry_run, "planner": planner}
    if task_timeout is not None:
        options["task_timeout_seconds"] = task_timeout
    if retry_backoff is not None:
        options["retry_backoff_seconds"] = retry_backoff
    _, setup, ports = connect_fleet(fleet)
    try:
        service = service_for(ports)
        try:
            with redis_errors(setup):
                state = service.create_mission(kind, inventory, MissionOptions(**options))
        except ValueError as err:
            raise CliError(str(err), EXIT_USAGE) from None
    finally:
        ports.close()
    if as_json:
        click.echo(state.model_dump_json(indent=2))
        return
    click.echo(state.mission_id)


@mission.command("status")
@click.argument("mission_id")
@click.option(
    "--watch",
    is_flag=True,
    help="Refresh until the mission ends (through a Redis outage of up to "
    f"{WATCH_OUTAGE_SECONDS:.0f} s).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The whole mission state as JSON; with --watch, one line of JSON per change.",
)
@fleet_options
@click.pass_context
def mission_status(
    ctx: click.Context,
    mission_id: str,
    watch: bool,
    interval: float,
    as_json: bool,
    fleet: FleetArgs,
) -> None:
    """Show a mission: its status, counters and one line per host.

    --watch prints the mission again whenever it changes and ends by itself when the
    mission does. Through a Redis outage it keeps watching, with a warning on stderr, and
    gives up (exit 5) if Redis is still unreachable after a minute.
    """
    setup_logging(ctx)
    from overseer.mission_view import render_header, render_table

    # Reading state needs no secret: status is not an order.
    _, setup, ports = connect_fleet(fleet, read_only=True)
    try:
        service = service_for(ports)
        last: int | None = None
        outage = _Outage()
        while True:
            try:
                state = _load_mission(service, mission_id, setup)
            except RedisFailedError as err:
                if not (watch and err.outage):
                    raise
                outage.ride_out(err)
                time.sleep(interval)  # a retry pace, not synchronisation
                continue
            outage.over()
            if state.version != last:
                if as_json:
                    # One document per line while watching (a stream a program can read as
                    # it comes); pretty-printed when there is only one.
                    click.echo(state.model_dump_json(indent=None if watch else 2))
                else:
                    if last is not None:
                        click.echo()
                    click.echo(render_header(state))
                    click.echo()
                    click.echo(render_table(state))
                last = state.version
            if not watch or state.status.is_terminal:
                return
            time.sleep(interval)  # a display refresh, not synchronisation
    finally:
        ports.close()


def _load_mission(service: OverseerService, mission_id: str, setup: FleetSetup) -> MissionState:
    """The mission's state; each expected failure a CliError (RedisFailedError for Redis)."""
    with redis_errors(setup), _mission_errors(mission_id):
        return service.get_mission_status(mission_id)


@contextlib.contextmanager
def _mission_errors(mission_id: str) -> Iterator[None]:
    """No such mission, or one this build cannot read: exit 4, one line."""
    from reaper_engine.errors import MessageDecodeError, MissionNotFoundError

    try:
        yield
    except MissionNotFoundError as err:
        raise CliError(str(err), EXIT_REFUSED) from None
    except MessageDecodeError as err:
        # Corrupt, or written by a newer Reaper: as good as absent for this one.
        raise CliError(f"mission '{mission_id}' is unreadable: {err}", EXIT_REFUSED) from None


@dataclass
class _Outage:
    """``--watch`` through a Redis outage: say so once, say when it is over, and give up
    once it has lasted WATCH_OUTAGE_SECONDS."""

    since: float | None = None

    def ride_out(self, err: RedisFailedError) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            click.echo(f"warning: {err.message.rstrip('.')}; still watching", err=True)
        elif now - self.since > WATCH_OUTAGE_SECONDS:
            raise RedisFailedError(
                f"{err.message.rstrip('.')} (for over {WATCH_OUTAGE_SECONDS:.0f} s; "
                "stopped watching)",
                outage=True,
            ) from None

    def over(self) -> None:
        if self.since is not None:
            click.echo("warning: Redis answers again; still watching", err=True)
            self.since = None


@mission.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the missions as JSON.")
@fleet_options
@click.pass_context
def mission_list(
    ctx: click.Context,
    as_json: bool,
    fleet: FleetArgs,
) -> None:
    """List missions, oldest first. A mission whose summary cannot be read (corrupt, or
    written by a newer Reaper) is listed as unreadable, and the error logged."""
    setup_logging(ctx)
    from overseer.mission_view import UNREADABLE, render_summaries
    from reaper_engine.models import MissionSummary

    _, setup, ports = connect_fleet(fleet, read_only=True)
    try:
        with redis_errors(setup):
            rows = ports.store.summary_rows()
    finally:
        ports.close()
    if as_json:
        docs = [
            row.model_dump(mode="json")
            if isinstance(row, MissionSummary)
            else {"mission_id": row.mission_id, "status": UNREADABLE, "error": row.error}
            for row in rows
        ]
        click.echo(json.dumps(docs, indent=2))
        return
    if not rows:
        click.echo("No missions.")
        return
    click.echo(render_summaries(rows))


@mission.command("cancel")
@click.argument("mission_id")
@click.option("--reason", default="cancelled by operator", show_default=True)
@fleet_options
@click.pass_context
def mission_cancel(
    ctx: click.Context,
    mission_id: str,
    reason: str,
    fleet: FleetArgs,
) -> None:
    """Cancel a mission: queued tasks are withdrawn, no new ones are scheduled.

    The engine running it stops within about a second. A mission that has already ended
    is left as it is (exit 0, saying so); an unknown one is exit 4.
    """
    setup_logging(ctx)
    from reaper_engine.models import MissionStatus

    # Cancelling orders nothing to run: like status, it needs no secret.
    _, setup, ports = connect_fleet(fleet, read_only=True)
    try:
        service = service_for(ports)
        before = state = _load_mission(service, mission_id, setup)
        if not before.status.is_terminal:
            with redis_errors(setup), _mission_errors(mission_id):
                state = service.cancel_mission(mission_id, reason)
    finally:
        ports.close()
    if before.status.is_terminal or state.status is not MissionStatus.CANCELLED:
        # It ended before (or while) we asked: nothing was cancelled.
        click.echo(f"{state.mission_id}: already {state.status.value}, nothing to cancel")
        return
    click.echo(f"{state.mission_id}: {state.status.value}")


def register(group: click.Group) -> None:
    group.add_command(mission)
