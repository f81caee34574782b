"""What every ``reaper`` command shares: exit codes, ``--config``, loading, logging, errors.

Only click is imported at module level: ``reaper --help`` must start fast, so configuration,
the engine and Rich are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from agents.cpu_probe import CpuProbe
    from infra.config_files import LoadedConfig
    from overseer.local_reaper import LocalReaper

# Exit codes (documented in docs/cli.md).
EXIT_OK = 0
EXIT_KILL_FAILED = 1  # at least one kill failed or the OS denied it
EXIT_USAGE = 2  # bad usage or invalid/missing configuration (click uses 2 for usage too)
EXIT_NOT_CONFIRMED = 3  # needed a confirmation: no terminal without --yes, or answered no
EXIT_REFUSED = 4  # no such process, or the process is protected

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """An expected failure: one line ``error: <message>`` on stderr and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar, yet reads it from the instance when exiting.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options, kept on the click context for the subcommands."""

    verbosity: int = 0  # -v: info, -vv: debug; -q: errors only (-1)
    log_format: str = "console"


def config_option(func: F) -> F:
    """``--config PATH``, declared once: every command that reads configuration takes it."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        metavar="PATH",
        help="Configuration file to use instead of the user file "
        "(default: $REAPER_CONFIG, else ~/.config/reaper/reaper.toml).",
    )(func)


def environment() -> Mapping[str, str]:
    return os.environ


def load(config_path: Path | None) -> LoadedConfig:
    """The merged configuration; an invalid or missing file is one line and exit code 2."""
    from infra.config_files import load_config
    from reaper_engine.errors import ConfigError

    try:
        return load_config(explicit=config_path, cwd=Path.cwd(), env=environment())
    except ConfigError as err:
        raise CliError(str(err), EXIT_USAGE) from None


def open_reaper(config_path: Path | None, cpu_probe: CpuProbe | None = None) -> LocalReaper:
    loaded = load(config_path)
    from overseer.local_reaper import LocalReaper

    return LocalReaper(loaded, env=environment(), cpu_probe=cpu_probe)


def fail(message: str, exit_code: int) -> NoReturn:
    raise CliError(message, exit_code)


def stdin_is_tty() -> bool:
    """Whether a person can answer a prompt (a function, so tests can stand in for one)."""
    return sys.stdin.isatty()


# Events the command line reports itself, or that are expected for a one-shot command (an
# ordinary user cannot raise its CPU share): noise on the terminal unless asked for with -v.
_CLI_QUIET_EVENTS = frozenset(
    {"kill_decision", "signal_sent", "cpu_boost", "cpu_boost_unavailable", "audit"}
)
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}  # logging's numbers


def setup_logging(
    ctx: click.Context, *, default_level: str = "warning", deferred: bool = False
) -> None:
    """Configure structlog on first use (not in the group callback: ``reaper scan --help``
    must not pay for importing it). Long-running commands, whose log is their output, pass
    ``default_level="info"``.

    ``deferred``: configure (and import structlog) only when the command logs an event this
    configuration prints, for commands whose modules log through ``reaper_engine.log``
    (``reaper scan``: usually nothing is logged, and importing structlog is ~90 ms). The
    output is the same; the deferral ends with the command.
    """
    settings = ctx.find_object(Settings) or Settings()
    level = {-1: "error", 0: default_level, 1: "info"}.get(settings.verbosity, "debug")
    quiet = settings.verbosity < 1

    def configure() -> None:
        import structlog

        from infra.logging import configure_logging

        configure_logging("json" if settings.log_format == "json" else "console", level)
        if quiet:

            def drop_quiet(_logger: object, _name: str, event: Any) -> Any:
                if event.get("event") in _CLI_QUIET_EVENTS:
                    raise structlog.DropEvent
                return event

            processors = list(structlog.get_config()["processors"])
            structlog.configure(processors=[drop_quiet, *processors])

    if not deferred:
        configure()
        return
    from reaper_engine.log import cancel_deferred, defer_configuration

    threshold = _LEVELS.get(level, 0)  # unknown: let everything through to structlog

    def gate(event_level: int, event: str) -> bool:  # what configure() would print
        return event_level >= threshold and not (quiet and event in _CLI_QUIET_EVENTS)

    defer_configuration(configure, gate)
    ctx.call_on_close(cancel_deferred)
