"""Fleet processes on Redis: ``reaper worker``, ``reaper engine`` and ``reaper health``.

redis, rq and the engine are imported inside the commands: ``reaper --help`` and
``reaper scan`` never load them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from overseer.cli.common import (
    EXIT_USAGE,
    CliError,
    setup_logging,
)

if TYPE_CHECKING:
    pass

from overseer.cli.fleet_common import (
    EXIT_WORKER_FAILED,
    FleetArgs,
    connect_fleet,
    fleet_options,
    redis_errors,
    stop_on_signals,
)

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

    loaded, setup, ports = connect_fleet(fleet)
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
    from infra.gc_tuning import tune_gc
    from overseer.fleet.engine_host import EngineHost

    _, setup, ports = connect_fleet(fleet)
    stop = threading.Event()
    stop_on_signals(stop)
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
    tune_gc()  # start-up is over: what follows is the long-running part
    try:
        with redis_errors(setup):  # run() retries its own failures; this is a last resort
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
    _, setup, ports = connect_fleet(fleet, read_only=True)
    why = ""
    try:
        with redis_errors(setup):
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


def register(group: click.Group) -> None:
    group.add_command(worker)
    group.add_command(engine)
    group.add_command(health)
