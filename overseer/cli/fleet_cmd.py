"""Fleet mode on Redis: ``reaper worker``, ``reaper engine`` and ``reaper mission ...``.

redis, rq and the engine are imported inside the commands: ``reaper --help`` and
``reaper scan`` never load them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    config_option,
    load,
    setup_logging,
)

if TYPE_CHECKING:
    from infra.config_files import LoadedConfig
    from overseer.fleet.setup import FleetSetup, RedisPorts
    from overseer.service import OverseerService

EXIT_UNAVAILABLE = 5  # Redis unreachable at start


@dataclass(frozen=True, slots=True)
class FleetArgs:
    """The options every fleet command takes, gathered by :func:`fleet_options`."""

    config_path: Path | None
    redis_url: str | None
    secret_file: Path | None
    insecure: bool


def fleet_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--redis-url``, ``--secret-file``, ``--insecure`` and ``--config``, handed to the
    command as one ``fleet: FleetArgs`` argument."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        fleet = FleetArgs(
            config_path=kwargs.pop("config_path"),
            redis_url=kwargs.pop("redis_url"),
            secret_file=kwargs.pop("secret_file"),
            insecure=kwargs.pop("insecure"),
        )
        return func(*args, fleet=fleet, **kwargs)

    wrapped: Callable[..., Any] = click.option(
        "--insecure",
        is_flag=True,
        help="Run without a task-signing secret (unsigned tasks; a warning is logged).",
    )(wrapper)
    wrapped = click.option(
        "--secret-file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="File holding the task-signing secret (default: $REAPER_SECRET, "
        "[fleet] secret_file, $REAPER_SECRET_FILE).",
    )(wrapped)
    wrapped = click.option(
        "--redis-url",
        default=None,
        metavar="URL",
        help="Redis to use (default: $REDIS_URL, [fleet] redis_url, redis://localhost:6379/0).",
    )(wrapped)
    return config_option(wrapped)


def _connect(
    fleet: FleetArgs, *, read_only: bool = False
) -> tuple[LoadedConfig, FleetSetup, RedisPorts]:
    """Load the config, resolve Redis and the secret, connect. ``read_only`` commands order
    no work, so they need no secret."""
    from infra.redis.connection import RedisUnavailableError
    from overseer.fleet.setup import open_redis_ports, resolve
    from reaper_engine.errors import ConfigError
    from reaper_engine.signing import SecretError

    loaded = load(fleet.config_path)
    try:
        setup = resolve(
            loaded.config.fleet,
            redis_url=fleet.redis_url,
            secret_file=fleet.secret_file,
            insecure=fleet.insecure or read_only,
            env=os.environ,
        )
    except SecretError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        ports = open_redis_ports(setup)
    except RedisUnavailableError as err:
        raise CliError(str(err), EXIT_UNAVAILABLE) from None
    except ConfigError as err:  # a malformed URL is a usage error, not an outage
        raise CliError(str(err), EXIT_USAGE) from None
    return loaded, setup, ports


def _service(ports: RedisPorts) -> OverseerService:
    from overseer.bootstrap import bootstrap

    return bootstrap(store=ports.store, queue=ports.queue, bus=ports.bus, run_loops=False)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- reaper worker ---------------------------------------------------------------------------


@click.command()
@click.option(
    "--agent",
    "agent_name",
    type=click.Choice(["linux", "macos", "windows"]),
    required=True,
    help="Which queue to serve (reaper-<agent>).",
)
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.option("--name", default=None, help="Worker name shown by RQ (default: unique).")
@click.option(
    "--lab-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where simulated hosts' relative process_table paths are resolved.",
)
@fleet_options
@click.pass_context
def worker(
    ctx: click.Context,
    agent_name: str,
    burst: bool,
    name: str | None,
    lab_dir: Path | None,
    fleet: FleetArgs,
) -> None:
    """Run tasks from one agent type's queue and publish their results.

    SIGTERM or Ctrl-C lets the current task finish, then exits; a second one exits at once.
    """
    setup_logging(ctx, default_level="info")
    from overseer.fleet.worker import run_worker
    from reaper_engine.models import AgentType

    loaded, setup, ports = _connect(fleet)
    try:
        run_worker(
            AgentType(f"reaper-{agent_name}"),
            setup,
            ports,
            loaded,
            env=os.environ,
            burst=burst,
            name=name,
            lab_dir=lab_dir,
        )
    finally:
        ports.close()


# -- reaper engine ---------------------------------------------------------------------------


@click.command()
@click.option(
    "--poll-seconds",
    type=click.FloatRange(min=0.05),
    default=1.0,
    show_default=True,
    help="How often to look for missions without an engine.",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=1),
    default=15.0,
    show_default=True,
    help="How long a mission stays ours without renewal; a dead engine's missions are "
    "adopted by a peer after this.",
)
@click.option("--name", default=None, help="Engine id in leases and logs (default: unique).")
@fleet_options
@click.pass_context
def engine(
    ctx: click.Context,
    poll_seconds: float,
    lease_seconds: float,
    name: str | None,
    fleet: FleetArgs,
) -> None:
    """Run the mission engines of every active mission, resuming any left by a dead engine.

    Run one or more; each mission is owned by one engine at a time (a lease in Redis).
    SIGTERM or Ctrl-C stops cleanly and releases the missions for a peer.
    """
    setup_logging(ctx, default_level="info")
    from overseer.fleet.engine_host import EngineHost

    _, _, ports = _connect(fleet)
    stop = threading.Event()
    _stop_on_signals(stop)
    beats = ports.heartbeats
    ttl = max(10.0, 3 * poll_seconds)

    def heartbeat(host: EngineHost) -> None:
        beats.beat("engine", host.engine_id, ttl, {"pid": os.getpid(), "missions": host.missions})

    try:
        host = EngineHost(
            store=ports.store,
            queue=ports.queue,
            bus=ports.bus,
            leases=ports.leases,
            engine_id=name,
            poll_seconds=poll_seconds,
            lease_seconds=lease_seconds,
            heartbeat=heartbeat,
        )
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    try:
        host.run(stop)
    finally:
        with contextlib.suppress(Exception):  # Redis may be the reason we are stopping
            beats.forget("engine", host.engine_id)
        ports.close()


# -- reaper health ---------------------------------------------------------------------------


@click.command()
@click.option("--engine", "engine_name", default=None, help="Check the engine of this --name.")
@click.option("--worker", "worker_name", default=None, help="Check the worker of this --name.")
@fleet_options
@click.pass_context
def health(
    ctx: click.Context,
    engine_name: str | None,
    worker_name: str | None,
    fleet: FleetArgs,
) -> None:
    """Exit 0 if the named engine or worker is alive (it beat recently), else 1.

    For container healthchecks; with neither option, checks only that Redis answers.
    """
    setup_logging(ctx)
    if engine_name and worker_name:
        raise click.UsageError("give --engine or --worker, not both")
    _, _, ports = _connect(fleet, read_only=True)
    try:
        if engine_name:
            info = ports.heartbeats.last("engine", engine_name)
            alive, what = info is not None, f"engine {engine_name}"
        elif worker_name:
            alive, what = ports.worker_alive(worker_name), f"worker {worker_name}"
        else:
            alive, what = True, "redis"
    finally:
        ports.close()
    click.echo(f"{what}: {'alive' if alive else 'not alive'}")
    if not alive:
        raise SystemExit(1)


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
@click.option("--planner", default="rules", show_default=True, help="Planner to use.")
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
    from reaper_engine.errors import ConfigError
    from reaper_engine.models import MissionOptions

    try:
        inventory = pin_table_paths(load_inventory(inventory_path), inventory_path)
    except ConfigError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    options: dict[str, Any] = {"dry_run": dry_run, "planner": planner}
    if task_timeout is not None:
        options["task_timeout_seconds"] = task_timeout
    if retry_backoff is not None:
        options["retry_backoff_seconds"] = retry_backoff
    _, _, ports = _connect(fleet)
    try:
        service = _service(ports)
        try:
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
@click.option("--watch", is_flag=True, help="Refresh until the mission ends.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@click.option("--json", "as_json", is_flag=True, help="The whole mission state as JSON.")
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
    """Show a mission: its status, counters and one line per host."""
    setup_logging(ctx)
    from overseer.mission_view import render_header, render_table
    from reaper_engine.errors import MissionNotFoundError

    # Reading state needs no secret: status is not an order.
    _, _, ports = _connect(fleet, read_only=True)
    try:
        service = _service(ports)
        last = None
        while True:
            try:
                state = service.get_mission_status(mission_id)
            except MissionNotFoundError as err:
                raise CliError(str(err), EXIT_REFUSED) from None
            if as_json:
                if not watch or state.status.is_terminal:
                    click.echo(state.model_dump_json(indent=2))
            elif state.version != last:
                if watch and last is not None:
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


@mission.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the missions as JSON.")
@fleet_options
@click.pass_context
def mission_list(
    ctx: click.Context,
    as_json: bool,
    fleet: FleetArgs,
) -> None:
    """List missions, oldest first."""
    setup_logging(ctx)
    from overseer.mission_view import render_summaries

    _, _, ports = _connect(fleet, read_only=True)
    try:
        summaries = ports.store.summaries()
    finally:
        ports.close()
    if as_json:
        click.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
        return
    if not summaries:
        click.echo("No missions.")
        return
    click.echo(render_summaries(summaries))


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
    """Cancel a mission: queued tasks are withdrawn, no new ones are scheduled."""
    setup_logging(ctx)
    from reaper_engine.errors import MissionNotFoundError

    # Cancelling orders nothing to run: like status, it needs no secret.
    _, _, ports = _connect(fleet, read_only=True)
    try:
        try:
            state = _service(ports).cancel_mission(mission_id, reason)
        except MissionNotFoundError as err:
            raise CliError(str(err), EXIT_REFUSED) from None
    finally:
        ports.close()
    click.echo(f"{state.mission_id}: {state.status.value}")


def register(group: click.Group) -> None:
    group.add_command(worker)
    group.add_command(engine)
    group.add_command(health)
    group.add_command(mission)
