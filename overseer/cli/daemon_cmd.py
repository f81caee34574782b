"""``reaper start | stop | status | metrics``: the daemon's commands (issue 4, seeds 000/001).

``register(group)`` adds them to the ``reaper`` group. Every command takes ``--config PATH``
after its name and honours ``REAPER_CONFIG``. Heavy modules (the engine, prometheus_client)
are imported inside the commands so that ``reaper --help`` stays fast.

Exit codes:

* ``start``: 0 started (or, in the foreground, stopped cleanly); 1 another daemon is already
  running, or the daemon failed to start; 2 invalid configuration.
* ``stop``: 0 stopped, or was not running; 1 it did not stop in time, or the PID file names a
  process that is not our daemon (nothing is signalled); 2 invalid configuration.
* ``status``: 0 running; 3 not running (the LSB convention; the last persisted state is still
  shown); 2 invalid configuration.
* ``metrics``: 0; 2 invalid configuration.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from overseer.cli.output import plural

if TYPE_CHECKING:
    from infra.config_files import LoadedConfig
    from overseer.daemon.paths import DaemonPaths
    from overseer.daemon.state import DaemonState, RecentAction

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_NOT_RUNNING = 3

_RULE = "─" * 40

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="REAPER_CONFIG",
    default=None,
    help="Configuration file (replaces the user file). Env: REAPER_CONFIG.",
)


def _verbosity() -> int | None:
    """The ``reaper`` group's -q/-v (-1, 0, 1, 2 ...), or None outside it (the
    ``python -m overseer.daemon`` entry point configures logging itself)."""
    from overseer.cli.common import Settings

    ctx = click.get_current_context(silent=True)
    settings = ctx.find_object(Settings) if ctx is not None else None
    return settings.verbosity if settings is not None else None


def _setup_logging(*, daemon: bool = False, configured: str | None = None) -> None:
    """Logs to stderr at the level and format the global options chose.

    A command (stop, status ...) logs warnings by default, like every ``reaper`` command;
    the foreground daemon, whose log is its only output, logs at ``configured`` (the
    configuration's ``logging.level``; -q: errors, -v: debug). Under ``python -m
    overseer.daemon`` (how ``reaper start`` runs a detached daemon) the group has already
    configured logging: ``configured`` replaces its level unless ``--log-level`` was given.
    """
    from overseer.cli.common import Settings, setup_logging

    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    settings = ctx.find_object(Settings)
    if settings is None:
        if daemon and configured is not None:
            _standalone_daemon_level(ctx, configured)
        return
    if not daemon:
        setup_logging(ctx)
        return
    from infra.logging import configure_logging

    level = daemon_log_level(settings.verbosity, configured or "info")
    configure_logging("json" if settings.log_format == "json" else "console", level)


def daemon_log_level(verbosity: int, configured: str) -> str:
    """The daemon's log level: -q (-1) errors, no flag (0) ``logging.level``, -v debug."""
    return {-1: "error", 0: configured}.get(verbosity, "debug")


def _standalone_daemon_level(ctx: click.Context, configured: str) -> None:
    import logging

    from click.core import ParameterSource

    from infra.logging import configure_logging

    root = ctx.find_root()
    if "log_level" not in root.params:
        return
    if root.get_parameter_source("log_level") is not ParameterSource.DEFAULT:
        return  # --log-level given: it wins over the file
    configure_logging("json" if root.params.get("log_format") == "json" else "console", configured)
    # configure_logging set the stdlib root level only the first time (logging.basicConfig).
    logging.getLogger().setLevel(configured.upper())


def _log_level_option() -> list[str]:
    """The detached daemon's ``--log-level``, from the global -q/-v; none without either,
    so that the daemon logs at the configuration's ``logging.level``."""
    verbosity = _verbosity()
    if not verbosity:  # None (outside the reaper group) or 0 (no -q/-v)
        return []
    return ["--log-level", daemon_log_level(verbosity, "info")]


def _mark(symbol: str, *, err: bool = False) -> str:
    """``symbol`` and a space on a terminal; nothing when the output is piped or a file."""
    stream = sys.stderr if err else sys.stdout
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return f"{symbol} " if tty else ""


def _load(config_path: Path | None) -> tuple[LoadedConfig, DaemonPaths]:
    from infra.config_files import load_config
    from overseer.daemon.paths import DaemonPaths
    from overseer.daemon.pidfile import PidFileError, check_pid_path
    from reaper_engine.errors import ConfigError

    try:
        loaded = load_config(explicit=config_path, cwd=Path.cwd(), env=os.environ)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_CONFIG) from None
    paths = DaemonPaths.resolve(loaded.config.daemon, os.environ)
    try:
        check_pid_path(paths.pid_file)
    except PidFileError as exc:
        click.echo(f"error: {exc} (daemon.pid_file)", err=True)
        raise SystemExit(EXIT_CONFIG) from None
    return loaded, paths


def _explicit(config_path: Path | None) -> Path | None:
    # Absolute, so a detached daemon and every reload read the same file whatever the cwd.
    return config_path.absolute() if config_path is not None else None


@click.command()
@click.option("--foreground", is_flag=True, help="Run in this process; do not daemonise.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Rehearse: decide, log and audit every kill, signal nothing "
    "(as [daemon] dry_run = true; this flag wins over the files, reloads included).",
)
@config_option
def start(foreground: bool, dry_run: bool, config_path: Path | None) -> None:
    """Start the daemon: a scan of this machine every daemon.scan_interval_seconds."""
    loaded, paths = _load(config_path)  # first: the log level is the configuration's
    _setup_logging(daemon=foreground, configured=loaded.config.logging.level)
    if foreground:
        _run_foreground(loaded, _explicit(config_path), dry_run=dry_run)
        return
    _start_detached(loaded, paths, _explicit(config_path), dry_run=dry_run)


def _run_foreground(loaded: LoadedConfig, explicit: Path | None, *, dry_run: bool) -> None:
    from overseer.daemon.pidfile import DaemonAlreadyRunningError
    from overseer.daemon.runner import run_daemon

    try:
        code = run_daemon(
            loaded, explicit=explicit, cwd=Path.cwd(), env=os.environ, dry_run=dry_run
        )
    except DaemonAlreadyRunningError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from None
    except OSError as exc:  # the PID file's directory cannot be created or written ...
        click.echo(f"error: cannot create the PID file: {exc}", err=True)
        raise SystemExit(EXIT_CONFIG) from None
    raise SystemExit(code)


def _start_detached(
    loaded: LoadedConfig, paths: DaemonPaths, explicit: Path | None, *, dry_run: bool
) -> None:
    from overseer.daemon.control import (
        daemon_command,
        spawn_detached,
        wait_for_start,
    )
    from overseer.daemon.pidfile import live_record
    from overseer.daemon.state import read_state

    running = live_record(paths.pid_file)
    if running is not None:
        click.echo(
            f"error: another reaper daemon is already running (PID {running.pid}, "
            f"PID file {paths.pid_file})",
            err=True,
        )
        raise SystemExit(EXIT_FAILED)
    started_at = datetime.now(UTC)
    argv = daemon_command(explicit, extra=_log_level_option(), dry_run=dry_run)
    child = spawn_detached(argv, log_file=paths.log_file, cwd=Path.cwd(), env=os.environ)
    record = wait_for_start(child, paths.pid_file)
    if record is None:
        click.echo(
            f"{_mark('❌', err=True)}Reaper daemon failed to start; see {paths.log_file}",
            err=True,
        )
        for line in _tail(paths.log_file, 10):
            click.echo(f"   {line}", err=True)
        raise SystemExit(EXIT_FAILED)
    click.echo(f"{_mark('✅')}Reaper daemon started (PID {record.pid})")
    state = _wait_first_scan(paths.state_file, started_at, read_state)
    if state is not None:
        monitored = plural(state.processes_monitored, "process", "processes")
        click.echo(f"{_mark('📊')}Monitoring {monitored}")
    else:
        click.echo(f"{_mark('📊')}First scan still running")
    interval = loaded.config.daemon.scan_interval_seconds
    click.echo(f"{_mark('⏱ ')}Scan interval: {interval:g} seconds")
    if dry_run or loaded.config.daemon.dry_run:
        click.echo(f"{_mark('🧪')}Dry run: nothing will be signalled")
    click.echo(f"{_mark('📝')}Log: {paths.log_file}")


def _wait_first_scan(state_file: Path, since: datetime, read_state: Any) -> DaemonState | None:
    import time

    deadline = time.monotonic() + 5.0
    pause = 0.05
    while time.monotonic() < deadline:
        state = read_state(state_file)
        if state is not None and state.last_scan_at is not None and state.last_scan_at >= since:
            result: DaemonState = state
            return result
        time.sleep(pause)  # the daemon's progress, seen through its state file
        pause = min(pause * 2, 0.25)
    return None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@click.command()
@config_option
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait.")
def stop(config_path: Path | None, timeout: float) -> None:
    """Stop the daemon (SIGTERM to the PID in the PID file, once verified to be ours)."""
    from overseer.daemon.control import NOT_RUNNING, signal_our_daemon

    _setup_logging()
    _, paths = _load(config_path)
    result = signal_our_daemon(paths.pid_file, timeout=timeout)
    if result.stopped:
        click.echo(f"{_mark('✅')}{result.message}")
        return
    if result.message.startswith(NOT_RUNNING):
        click.echo(result.message)
        return
    click.echo(f"{_mark('❌', err=True)}{result.message}", err=True)
    raise SystemExit(EXIT_FAILED)


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Show whether the daemon runs, its last scan, totals, health checks and resources."""
    from overseer.daemon.control import find_daemon
    from overseer.daemon.state import read_state

    _setup_logging()
    _, paths = _load(config_path)
    found = find_daemon(paths.pid_file)
    record = found.record if found.proc is not None else None
    stale = found.record is not None and record is None
    state = read_state(paths.state_file)
    running = record is not None
    if found.problem is not None:
        click.echo(f"warning: {found.problem}", err=True)
    if as_json:
        doc = {
            "running": running,
            "pid": record.pid if record else None,
            "stale_pid_file": stale,
            "pid_file": str(paths.pid_file),
            "state_file": str(paths.state_file),
            "state": state.model_dump(mode="json") if state else None,
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        emoji = bool(_mark("x"))
        pid = record.pid if record else None
        for line in render_status(running, pid, state, stale=stale, emoji=emoji):
            click.echo(line)
    raise SystemExit(EXIT_OK if running else EXIT_NOT_RUNNING)


def render_status(
    running: bool,
    pid: int | None,
    state: DaemonState | None,
    *,
    stale: bool = False,
    emoji: bool = True,
) -> list[str]:
    """Seed 000's status view, plus seed 001's resources and health checks."""
    now = datetime.now(UTC)
    lines = ["Reaper Daemon Status", _RULE]
    if running:
        lines.append(_row("Status", f"Running (PID {pid})"))
    elif stale:
        lines.append(_row("Status", "Not running (stale PID file)"))
    elif state is not None and state.stopped_at is not None:
        lines.append(_row("Status", f"Not running (stopped {_ago(now, state.stopped_at)})"))
    else:
        lines.append(_row("Status", "Not running"))
    if state is None:
        lines.append("No state recorded yet: the daemon has never run with this configuration.")
        return lines
    lines += _summary_rows(running, state, now)
    lines += _resource_rows(state)
    lines += _health_lines(state, now, emoji)
    lines += ["", "Recent Actions:"]
    if not state.recent_actions:
        lines.append("  (none)")
    lines += ["  " + _action_line(a) for a in reversed(state.recent_actions[-10:])]
    return lines


def _row(label: str, value: str) -> str:
    return f"{label + ':':<17}{value}"


def _summary_rows(running: bool, state: DaemonState, now: datetime) -> list[str]:
    from reaper_engine.humanize import duration

    rows: list[str] = []
    if running and state.started_at is not None:
        rows.append(_row("Uptime", duration((now - state.started_at).total_seconds())))
    last = _ago(now, state.last_scan_at) if state.last_scan_at else "never"
    rows.append(_row("Last scan", last))
    rows.append(_row("Processes", f"{state.processes_monitored} monitored"))
    by = state.rogue_by_priority
    detail = ", ".join(f"{by[p]} {p}" for p in ("critical", "high", "medium", "low") if by.get(p))
    rogue = plural(sum(by.values()), "process", "processes") + (f" ({detail})" if detail else "")
    rows.append(_row("Rogue detected", rogue))
    rows.append(_row("Killed (total)", plural(state.killed_total, "process", "processes")))
    rows.append(_row("CPU recovered", f"{state.cpu_recovered_total:g}% (total)"))
    config = ", ".join(_home_abbrev(p) for p in state.config_files) or "built-in defaults"
    rows.append(_row("Config", config))
    rows.append(_row("Dry run", "Enabled" if state.dry_run else "Disabled"))
    if state.last_reload_error:
        rows.append(_row("Last reload", f"FAILED, old config kept: {state.last_reload_error}"))
    if state.last_error:
        rows.append(_row("Last error", state.last_error))
    return rows


def _resource_rows(state: DaemonState) -> list[str]:
    res = state.resources
    if res is None:
        return []
    rows: list[str] = []
    if res.load_average is not None:
        rows.append(_row("Load average", " ".join(f"{v:.2f}" for v in res.load_average)))
    if res.cpu_idle_percent is not None:
        rows.append(_row("CPU idle", f"{res.cpu_idle_percent:.1f}%"))
    if res.memory_available_bytes is not None and res.memory_total_bytes:
        free = f"{_gib(res.memory_available_bytes)} of {_gib(res.memory_total_bytes)}"
        rows.append(_row("Free memory", free))
    return rows


def _health_lines(state: DaemonState, now: datetime, emoji: bool) -> list[str]:
    if not state.health:
        return []
    lines = ["", "Health Checks:"]
    for name, result in sorted(state.health.items()):
        if result.ok:
            what = "passed"
        elif result.timed_out:
            what = "timed out"
        elif result.error:
            what = f"failed ({result.error})"
        else:
            what = f"failed (exit {result.exit_code})"
        marks = ("✅", "❌") if emoji else ("ok", "FAIL")
        mark = marks[0] if result.ok else marks[1]
        lines.append(
            f"  {mark} {name:<20} {what} {_ago(now, result.started_at)}"
            f" ({result.duration_seconds:.1f}s)"
        )
    return lines


def _action_line(action: RecentAction) -> str:
    when = action.timestamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if action.action == "kill" and action.outcome in ("terminated", "killed"):
        verb = "KILLED"
    elif action.action == "dry_run":
        verb = "DRY RUN"
    elif action.action == "refuse":
        verb = "REFUSED"
    elif action.action == "skip":
        verb = "GONE"
    else:
        verb = action.outcome.upper()
    program = os.path.basename(action.command.split(" ", 1)[0]) or action.command
    return (
        f"[{when}] {verb} PID {action.pid} ({program}) - {action.rule} - "
        f"CPU {action.cpu_percent:.1f}%"
    )


def _ago(now: datetime, then: datetime) -> str:
    from reaper_engine.humanize import duration

    seconds = max(0.0, (now - then).total_seconds())
    if seconds < 60:
        return f"{int(seconds)} seconds ago"
    return f"{duration(seconds)} ago"


def _home_abbrev(path: str) -> str:
    home = os.environ.get("HOME", "")
    return "~" + path[len(home) :] if home and path.startswith(home + os.sep) else path


def _gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


@click.command()
@config_option
def metrics(config_path: Path | None) -> None:
    """Print the Prometheus metrics from the daemon's persisted state (works while stopped)."""
    from infra.metrics import MetricsSnapshot, exposition
    from overseer.daemon.state import read_state

    _setup_logging()
    _, paths = _load(config_path)
    state = read_state(paths.state_file)
    snapshot = state.metrics() if state is not None else MetricsSnapshot()
    sys.stdout.write(exposition(snapshot).decode("utf-8"))


def register(group: click.Group) -> None:
    """Add start, stop, status and metrics to ``group`` (the ``reaper`` command)."""
    for command in (start, stop, status, metrics):
        group.add_command(command)
