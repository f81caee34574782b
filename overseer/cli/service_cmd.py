"""``reaper service install | uninstall | status``: run the daemon under the OS's service manager.

Linux: a systemd user unit; macOS: a launchd agent; Windows: a Task Scheduler logon task
(docs/service.md). The work is done by ``overseer.services``, imported inside the commands:
``reaper --help`` must not pay for it (nor for structlog, which it logs with).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from overseer.cli.common import CliError, config_option, load, setup_logging

if TYPE_CHECKING:
    from overseer.services import Platform, Runner, ServiceBackend, ServiceReport

PLATFORM_NAMES = ("linux", "macos", "windows")


def register(group: click.Group, *, runner: Runner | None = None) -> None:
    """Add ``service`` and its subcommands to ``group`` (the ``reaper`` group).

    ``runner`` runs systemctl/launchctl/schtasks; tests pass a recording one, and the default
    is :func:`overseer.services.run_command`.
    """
    group.add_command(make_service_group(runner))


def _backend(
    runner: Runner | None,
    *,
    platform: str | None = None,
    config_path: Path | None = None,
    executable: str | None = None,
) -> ServiceBackend:
    from overseer.services import (
        PLATFORMS,
        backend_for,
        build_context,
        current_platform,
        run_command,
    )

    env = dict(os.environ)
    target: Platform | None = next((p for p in PLATFORMS if p == platform), None)
    local = target in (None, current_platform())
    if config_path is None and env.get("REAPER_CONFIG") and local:
        # The service manager does not see this shell's environment: bake the file in, or the
        # daemon would silently read a different configuration than this CLI does. (Not into
        # another platform's file: this machine's path means nothing there.)
        config_path = Path(env["REAPER_CONFIG"])
    try:
        ctx = build_context(target, executable=executable, config=config_path, env=env)
    except ValueError as err:  # a relative path for another platform's file
        raise CliError(str(err)) from None
    return backend_for(ctx, runner or run_command)


def _show(report: ServiceReport) -> None:
    for line in report.lines:
        if line.error:
            click.echo(f"error: {line.text}", err=True)
        else:
            click.echo(line.text)
    if report.exit_code:
        raise SystemExit(report.exit_code)


def make_service_group(runner: Runner | None = None) -> click.Group:
    @click.group()
    def service() -> None:
        """Run the daemon (`reaper start --foreground`) as a per-user service.

        Linux: a systemd user unit; macOS: a launchd agent; Windows: a Task Scheduler task
        started at logon (docs/service.md).

        Exit codes: 0 ok, 1 the service manager is missing, unreachable or refused a command,
        2 usage or invalid configuration, 3 (status) not installed or not running.
        """

    @service.command()
    @config_option
    @click.option(
        "--print",
        "print_only",
        is_flag=True,
        help="Check the configuration, print the file that would be written (UTF-8; its "
        "path on stderr); install nothing.",
    )
    @click.option(
        "--platform",
        type=click.Choice(PLATFORM_NAMES),
        default=None,
        help="With --print: the file for this platform instead of the one this runs on.",
    )
    @click.option(
        "--executable",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="PATH",
        help="The program the service runs: a `reaper` script, or a Python interpreter, "
        "which then gets -m overseer.cli (default: the `reaper` script of this "
        "installation, else this Python). With --platform, an absolute path on that platform.",
    )
    @click.pass_context
    def install(
        ctx: click.Context,
        config_path: Path | None,
        print_only: bool,
        platform: str | None,
        executable: str | None,
    ) -> None:
        """Write the service file, then enable and start the service.

        The file is written even when the service manager cannot be reached; the error then
        says how to enable it by hand.
        """
        setup_logging(ctx)
        if platform is not None and not print_only:
            raise CliError("--platform only goes with --print: a service installs on its own OS")
        backend = _backend(
            runner, platform=platform, config_path=config_path, executable=executable
        )
        try:
            # First, so that a path the service file cannot express is the one error shown.
            data = backend.render_for_print()
        except ValueError as err:  # a path the service file cannot express
            raise CliError(str(err)) from None
        service_ctx = backend.ctx
        if service_ctx.local:
            # A daemon that cannot load its configuration would restart every 10 seconds
            # forever: refuse now, naming the file and key, instead. --print too, as it is how
            # to look before installing, and a printed file may be installed by hand.
            # (Another platform's file names a configuration on that machine: not read here.)
            load(Path(service_ctx.config) if service_ctx.config is not None else None)
        if print_only:
            click.echo(f"# {backend.path}", err=True)
            if not service_ctx.local:
                stand_ins = (
                    "the program path (--executable sets it), home and user"
                    if service_ctx.placeholder
                    else "home and user"
                )
                click.echo(
                    f"# a template for another machine: {stand_ins} are placeholders; "
                    "the configuration is that machine's, not checked here",
                    err=True,
                )
            # Bytes, as they would be in the file: stdout's encoding (the locale's, on
            # Windows a code page) must not re-encode a file that declares UTF-8.
            click.echo(data, nl=False)
            return
        try:
            report = backend.install()
        except OSError as err:  # e.g. a home directory that cannot be written
            raise CliError(f"cannot write {backend.path}: {err.strerror}") from None
        _show(report)

    @service.command()
    @click.pass_context
    def uninstall(ctx: click.Context) -> None:
        """Stop and disable the service, and remove its file."""
        setup_logging(ctx)
        _show(_backend(runner).uninstall())

    @service.command()
    @click.pass_context
    def status(ctx: click.Context) -> None:
        """Whether the service file is installed, and what the service manager says of it."""
        setup_logging(ctx)
        _show(_backend(runner).status())

    return service


__all__ = ["make_service_group", "register"]
