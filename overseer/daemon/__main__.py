"""``python -m overseer.daemon start|stop|status|metrics``: the daemon's commands on their own.

The ``reaper`` group registers the same commands (``overseer.cli.daemon_cmd.register``); this
entry point stays, because ``reaper start`` spawns the detached daemon through it.
"""

from __future__ import annotations

import click

from infra.logging import LogFormat, configure_logging
from overseer.cli.daemon_cmd import register


@click.group()
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="How the daemon writes its log (to stderr).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    help="Log level [default: info; `start` uses the configuration's logging.level].",
)
def main(log_format: LogFormat, log_level: str) -> None:
    """Reaper's daemon commands."""
    configure_logging(log_format, log_level)


register(main)

if __name__ == "__main__":
    main()
