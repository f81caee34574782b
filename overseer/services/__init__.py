"""Installing the daemon as a per-user service: systemd (Linux), launchd (macOS), Task Scheduler.

One backend per platform, all with the same small interface (:class:`ServiceBackend`); the
click commands in ``overseer/cli/service_cmd.py`` only pick one and print its report.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Protocol

from overseer.services.common import (
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    PLACEHOLDER_HOME,
    PLACEHOLDER_USER,
    PLATFORMS,
    CommandResult,
    Platform,
    ReportLine,
    Runner,
    ServiceContext,
    ServiceReport,
    current_platform,
    resolve_program,
    run_command,
    target_path,
)
from overseer.services.launchd import LaunchdAgent
from overseer.services.systemd import SystemdUserService, UnitError
from overseer.services.windows_task import WindowsLogonTask

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "PLATFORMS",
    "CommandResult",
    "LaunchdAgent",
    "Platform",
    "ReportLine",
    "Runner",
    "ServiceBackend",
    "ServiceContext",
    "ServiceReport",
    "SystemdUserService",
    "UnitError",
    "WindowsLogonTask",
    "backend_for",
    "build_context",
    "current_platform",
    "run_command",
]


class ServiceBackend(Protocol):
    platform: str
    ctx: ServiceContext
    path: PurePath  # the file install writes (a concrete Path when ctx.local)

    def render(self) -> str: ...
    def render_for_print(self) -> bytes: ...
    def install(self) -> ServiceReport: ...
    def uninstall(self) -> ServiceReport: ...
    def status(self) -> ServiceReport: ...


def build_context(
    platform: Platform | None = None,
    *,
    executable: str | None = None,
    config: str | Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceContext:
    """Gather what the service file depends on from this process and its environment.

    HOME comes from the environment (not the password database) so that tests, and anyone
    installing for a sandboxed home, control where files go. Raises ValueError when
    ``executable`` or ``config`` is not an absolute path of another ``platform``.
    """
    env = dict(os.environ if env is None else env)
    target = platform or current_platform()
    local = target == current_platform()
    program, placeholder = resolve_program(target, executable)
    home: PurePath
    if not local:
        # Another platform's file, for reading or copying: nothing of this machine (home,
        # user, XDG variables) applies there.
        env = {}
        home = PLACEHOLDER_HOME[target]
        user = PLACEHOLDER_USER
    else:
        home = Path(env.get("HOME") or env.get("USERPROFILE") or Path.home())
        user = _user_name()
    return ServiceContext(
        platform=target,
        home=home,
        program=program,
        # Absolute: the service manager starts the daemon from another working directory.
        config=target_path(target, config, "--config") if config is not None else None,
        uid=os.getuid() if hasattr(os, "getuid") else 0,
        user=user,
        env=env,
        placeholder=placeholder,
        local=local,
    )


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers running an arbitrary uid)
        return ""


def backend_for(ctx: ServiceContext, runner: Runner = run_command) -> ServiceBackend:
    if ctx.platform == "macos":
        return LaunchdAgent(ctx, runner)
    if ctx.platform == "windows":
        return WindowsLogonTask(ctx, runner)
    return SystemdUserService(ctx, runner)
