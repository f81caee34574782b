"""The ``reaper`` command group: global options, and where each command is registered.

Importing this module imports click only; a command's module is imported when that command
runs, or when ``--help`` lists it. Command modules import nothing heavy at module level:
``reaper --help`` never loads the engine, pydantic, structlog or Rich (a test checks this, and
``bench/bench_startup.py`` measures it).
"""

from __future__ import annotations

import importlib

import click

from overseer.cli.common import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Each command's module, imported only when that command runs (or --help lists it): a
# command line that loads every module to run one of them pays ~10 ms for the others. Each
# module's ``register(group)`` adds its commands; a test checks this map against them.
COMMAND_MODULES: dict[str, str] = {
    "scan": "scan_cmd",
    "kill": "kill_cmd",
    "explain": "explain_cmd",
    "rules": "rules_cmd",
    "config": "config_cmd",
    "start": "daemon_cmd",
    "stop": "daemon_cmd",
    "status": "daemon_cmd",
    "metrics": "daemon_cmd",
    "service": "service_cmd",
    "worker": "fleet_cmd",
    "engine": "fleet_cmd",
    "health": "fleet_cmd",
    "mission": "mission_cmd",
}


class LazyGroup(click.Group):
    """A group whose commands are registered by their module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMAND_MODULES, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if cmd_name not in self.commands and module is not None:
            importlib.import_module(f"overseer.cli.{module}").register(self)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT)
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Log errors only.")
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Log lines on stderr for people (console) or machines (json).",
)
@click.version_option(package_name="reaper", prog_name="reaper", message="%(prog)s %(version)s")
@click.pass_context
def reaper(ctx: click.Context, verbose: int, quiet: bool, log_format: str) -> None:
    """Find runaway processes by rules and kill them safely.

    Every signal goes through one guarded path that re-checks the process's identity and
    refuses protected processes (PID 1, root's and other users' processes, whitelisted
    programs, the reaper's own process tree), whatever was asked.

    Exit codes: 0 ok, 1 a kill failed, 2 usage or configuration error, 3 not confirmed
    (no terminal without --yes, or answered no) — or, for `status` and `service status`,
    not running / not installed — 4 no such process or protected, or no such mission;
    fleet commands: 5 Redis unreachable or failing, 6 a worker's loop ended on an error.
    """
    if verbose and quiet:
        raise click.UsageError("--verbose and --quiet exclude each other")
    ctx.obj = Settings(verbosity=-1 if quiet else verbose, log_format=log_format)


def main(argv: list[str] | None = None) -> None:
    """The console script ``reaper``."""
    reaper.main(args=argv, prog_name="reaper")
