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
from collections.abc import Callable, Iterator
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
    from reaper_engine.models import MissionState

EXIT_UNAVAILABLE = 5  # Redis unreachable at start, or failing during the command
EXIT_WORKER_FAILED = 6  # reaper worker: its work loop ended on an error a reconnect cannot fix
# `mission status --watch` keeps watching through a Redis outage this long (a restart, a
# failover), then gives up with EXIT_UNAVAILABLE rather than hang a script for ever.
WATCH_OUTAGE_SECONDS = 60.0


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
    import secrets

    from infra.redis.connection import RedisUnavailableError
    from infra.signing import SECRET_ENV
    from overseer.fleet.setup import open_redis_ports, resolve
    from reaper_engine.errors import ConfigError
    from reaper_engine.signing import SecretError

    loaded = load(fleet.config_path)
    env: dict[str, str] = dict(os.environ)
    insecure = fleet.insecure
    if read_only:
        # No secret needed, but resolve() would warn that tasks are unsigned, which is
        # noise for a command that sends none. A throwaway key instead: no warning, and a
        # task published by mistake would carry a signature no worker accepts.
        env[SECRET_ENV] = secrets.token_hex(32)
        insecure = False
    try:
        setup = resolve(
            loaded.config.fleet,
            redis_url=fleet.redis_url,
            secret_file=fleet.secret_file,
            insecure=insecure,
            env=env,
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


def _redis_failure(url: str, err: Exception, *, outage: bool) -> str:
    """One line naming the (redacted) URL and the cause, worded as at start-up."""
    import urllib.parse

    from infra.redis.connection import redact

    cause = str(err) or type(err).__name__
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    if password:  # should a library ever echo it
        cause = cause.replace(password, "***").replace(urllib.parse.unquote(password), "***")
    what = "is unavailable" if outage else "answered with an error"
    return f"Redis at {redact(url)} {what}: {type(err).__name__}: {cause}"


class RedisFailedError(CliError):
    """Redis failed in the middle of a command; ``outage``: unreachable or timed out (it may
    come back), rather than answering with an error."""

    def __init__(self, message: str, *, outage: bool) -> None:
        super().__init__(message, EXIT_UNAVAILABLE)
        self.outage = outage


@contextlib.contextmanager
def _redis_errors(setup: FleetSetup) -> Iterator[None]:
    """A Redis failure in the middle of a command: ``error: ...`` and exit 5, no traceback.

    The client has already retried with backoff (seconds) before an error gets here.
    """
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except RedisError as err:
        outage = isinstance(err, RedisConnectionError | RedisTimeoutError)
        message = _redis_failure(setup.redis_url, err, outage=outage)
        raise RedisFailedError(message, outage=outage) from None


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
@click.option(
    "--name",
    default=None,
    help="Worker name shown by RQ (default: unique). A fixed name survives a crash: a "
    "restarted worker takes over a registration whose holder is gone.",
)
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
    from overseer.fleet.worker import WorkerFailedError, run_worker
    from overseer.fleet.worker_names import WorkerNameTakenError
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
    except WorkerNameTakenError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    except WorkerFailedError as err:
        raise CliError(str(err), EXIT_WORKER_FAILED) from None
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

    _, setup, ports = _connect(fleet)
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
        with _redis_errors(setup):  # run() retries its own failures; this is a last resort
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
    """Exit 0 if the named engine or worker is alive, else 1 (5 if Redis is unreachable).

    An engine is alive while its heartbeat key exists (it beat within the last 10 s, or 3 x
    --poll-seconds). A worker is alive while RQ has it registered, not stopped, and its
    last heartbeat is not overdue by more than 10 s. For container healthchecks; with
    neither option, checks only that Redis answers.
    """
    setup_logging(ctx)
    if engine_name and worker_name:
        raise click.UsageError("give --engine or --worker, not both")
    _, setup, ports = _connect(fleet, read_only=True)
    why = ""
    try:
        with _redis_errors(setup):
            if engine_name:
                info = ports.heartbeats.last("engine", engine_name)
                alive, what = info is not None, f"engine {engine_name}"
            elif worker_name:
                beat = ports.heartbeats.worker_beat(worker_name)
                alive, what = beat is not None and beat.alive, f"worker {worker_name}"
                if beat is None:
                    why = " (no such worker registered)"
                elif beat.stopped:
                    why = " (stopped)"
                elif beat.expires_in is None:
                    why = " (its record never expires: no worker keeps it)"
                elif not alive:
                    why = f" (heartbeat {beat.overdue_by:.0f} s overdue)"
            else:
                alive, what = True, "redis"
    finally:
        ports.close()
    click.echo(f"{what}: {'alive' if alive else 'not alive' + why}")
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
    _, setup, ports = _connect(fleet)
    try:
        service = _service(ports)
        try:
            with _redis_errors(setup):
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
    _, setup, ports = _connect(fleet, read_only=True)
    try:
        service = _service(ports)
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
    with _redis_errors(setup), _mission_errors(mission_id):
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
            click.echo(f"warning: {err.message}; still watching", err=True)
        elif now - self.since > WATCH_OUTAGE_SECONDS:
            raise RedisFailedError(
                f"{err.message} (for over {WATCH_OUTAGE_SECONDS:.0f} s; stopped watching)",
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

    _, setup, ports = _connect(fleet, read_only=True)
    try:
        with _redis_errors(setup):
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
    _, setup, ports = _connect(fleet, read_only=True)
    try:
        service = _service(ports)
        before = state = _load_mission(service, mission_id, setup)
        if not before.status.is_terminal:
            with _redis_errors(setup), _mission_errors(mission_id):
                state = service.cancel_mission(mission_id, reason)
    finally:
        ports.close()
    if before.status.is_terminal or state.status is not MissionStatus.CANCELLED:
        # It ended before (or while) we asked: nothing was cancelled.
        click.echo(f"{state.mission_id}: already {state.status.value}, nothing to cancel")
        return
    click.echo(f"{state.mission_id}: {state.status.value}")


def register(group: click.Group) -> None:
    group.add_command(worker)
    group.add_command(engine)
    group.add_command(health)
    group.add_command(mission)
