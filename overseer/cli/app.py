"""The ``reaper`` command group: global options, and where each command is registered.

Importing this module imports click and the command modules, which import nothing heavy at
module level: ``reaper --help`` never loads the engine, pydantic, structlog or Rich (a test
checks this, and ``bench/bench_startup.py`` measures it).
"""

from __future__ import annotations

import click

from overseer.cli import (
    config_cmd,
    daemon_cmd,
    explain_cmd,
    fleet_cmd,
    kill_cmd,
    rules_cmd,
    scan_cmd,
    service_cmd,
)
from overseer.cli.common import Settings

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
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
    not running / not installed — 4 no such process or protected.
    """
    if verbose and quiet:
        raise click.UsageError("--verbose and --quiet exclude each other")
    ctx.obj = Settings(verbosity=-1 if quiet else verbose, log_format=log_format)


scan_cmd.register(reaper)
kill_cmd.register(reaper)
explain_cmd.register(reaper)
rules_cmd.register(reaper)
config_cmd.register(reaper)

# --- commands owned by other modules -------------------------------------------------------
daemon_cmd.register(reaper)  # reaper start / stop / status / metrics
service_cmd.register(reaper)  # reaper service install / uninstall / status
fleet_cmd.register(reaper)  # reaper worker / engine / mission ...
# -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """The console script ``reaper``."""
    reaper.main(args=argv, prog_name="reaper")
