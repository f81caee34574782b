"""Linux: a systemd *user* unit, ``$XDG_CONFIG_HOME/systemd/user/reaper.service``.

A user unit, not a system one: the reaper only ever signals its own user's processes (the
safety policy refuses others'), so it needs no root, and the user manager starts it at login
(or at boot with ``loginctl enable-linger``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from overseer.services.common import (
    EXIT_NOT_RUNNING,
    RC_NOT_FOUND,
    CommandResult,
    Runner,
    ServiceContext,
    ServiceReport,
    read_text,
    write_atomically,
)

UNIT_NAME = "reaper.service"

# Characters that need no quoting in an ExecStart= word.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")

_HEADER = """\
# Written by `reaper service install`; `reaper service uninstall` removes it (docs/service.md).
# Edits are overwritten by the next install: put local changes in a drop-in instead
# (systemctl --user edit reaper.service).
"""

_BODY = """\
[Unit]
Description=Reaper: finds and kills runaway processes
# No After=network.target: a user manager cannot order itself against system units, and the
# reaper needs no network.

[Service]
Type=simple
ExecStart={exec_start}
# The daemon reloads its configuration on SIGHUP (validated first; a bad file keeps the old one).
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=10
# SIGTERM goes to the daemon alone, which stops cleanly (and ends its health-check children);
# whatever is left gets SIGKILL after TimeoutStopSec.
KillMode=mixed
TimeoutStopSec=30
Environment=PYTHONUNBUFFERED=1
SyslogIdentifier=reaper
# Runaway processes pin every core; a high weight keeps the reaper scheduled among them.
# (Nice= below 0 is not set: it needs CAP_SYS_NICE, which a user manager lacks, and the unit
# would fail to start with status 201/NICE.)
CPUWeight=1000
# Hardening that works in a user manager without namespaces and still lets the reaper read
# /proc and signal this user's processes. Deliberately absent: PrivateTmp= (the runaway
# /tmp/test_* binaries must stay visible), ProtectProc=/ProtectSystem=/ProtectHome= (they hide
# processes or the config and state files), RestrictNamespaces= and SystemCallFilter= (health
# checks run the user's own commands, which may need them).
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
UMask=0077

[Install]
WantedBy=default.target
"""


class UnitError(ValueError):
    """The unit cannot express this command line."""


def quote_word(word: str, *, executable: bool = False) -> str:
    """One ExecStart= word, quoted if needed.

    ``%`` is doubled everywhere (specifiers). ``$`` is doubled only in arguments: systemd
    expands variables in arguments, never in the executable's path, where ``$$`` would stay
    two dollars.
    """
    escaped = word.replace("%", "%%")
    if not executable:
        escaped = escaped.replace("$", "$$")
    if _PLAIN.fullmatch(escaped):
        return escaped
    inner = (
        escaped.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    )
    return f'"{inner}"'


def render_unit(ctx: ServiceContext) -> str:
    program, *args = ctx.daemon_argv
    # systemd refuses these in an executable's path ("Executable name contains special
    # characters"), however they are quoted.
    if any(c in program for c in "\"'\\") or any(ord(c) < 32 for c in program):
        raise UnitError(
            f"systemd cannot run a program whose path contains quotes, backslashes or control "
            f"characters: {program!r}; pass --executable with another path (a symlink will do)"
        )
    words = [quote_word(program, executable=True), *(quote_word(arg) for arg in args)]
    exec_start = " ".join(words)
    return _HEADER + _BODY.format(exec_start=exec_start)


def unit_path(ctx: ServiceContext) -> PurePath:
    """Where the user manager looks: ``$XDG_CONFIG_HOME/systemd/user`` (default ``~/.config``)."""
    xdg = ctx.env.get("XDG_CONFIG_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else ctx.home / ".config"
    return base / "systemd" / "user" / UNIT_NAME


_BY_HAND = (
    "  systemctl --user daemon-reload && systemctl --user enable --now reaper.service",
    "(the user manager runs in a login session; `loginctl enable-linger` keeps it running "
    "without one)",
)


# How systemctl says it could not reach the manager at all (bus_log_connect_full() in
# systemd ≥ 248, "Failed to connect to bus" before, "Failed to get D-Bus connection" before 221).
# Other failures are not this, e.g. "Failed to get unit file state for reaper.service: No such
# file or directory" only means that there is no such unit file.
_UNREACHABLE = ("Failed to connect to ", "Failed to get D-Bus connection")

# is-active states in which a process of the unit may be running.
_RUNNING_STATES = frozenset({"active", "activating", "deactivating", "reloading", "refreshing"})


class SystemdUserService:
    platform = "linux"

    def __init__(self, ctx: ServiceContext, runner: Runner) -> None:
        self.ctx = ctx
        self.runner = runner
        self.path = unit_path(ctx)

    def render(self) -> str:
        return render_unit(self.ctx)

    def render_for_print(self) -> bytes:
        return self.render().encode()  # the bytes install writes

    def _render_or_none(self) -> str | None:
        try:
            return self.render()
        except UnitError:
            return None

    def _systemctl(self, *args: str) -> CommandResult:
        return self.runner(["systemctl", "--user", *args])

    def install(self) -> ServiceReport:
        report = ServiceReport()
        file = Path(self.path)
        existed = file.exists()
        changed = write_atomically(file, self.render().encode())
        report.say(f"wrote {self.path}" if changed else f"{self.path} is up to date")
        reload = self._systemctl("daemon-reload")
        if not reload.ok:
            self._systemctl_failed(report, reload)
            report.say("the unit file is in place; to enable and start it by hand:")
            for line in _BY_HAND:
                report.say(line)
            return report
        enable = self._systemctl("enable", "--now", UNIT_NAME)
        if not enable.ok:
            report.fail(f"systemctl --user enable --now {UNIT_NAME} failed: {enable.why()}")
            return report
        if existed and changed:
            # enable --now leaves an already running daemon on the old command line.
            restart = self._systemctl("try-restart", UNIT_NAME)
            if not restart.ok:
                report.fail(f"restarting with the new unit failed: {restart.why()}")
                return report
        report.say(f"enabled and started {UNIT_NAME} (systemctl --user status {UNIT_NAME})")
        return report

    def uninstall(self) -> ServiceReport:
        report = ServiceReport()
        file = Path(self.path)
        if not file.exists():
            report.say(f"not installed: no {self.path}")
            return report
        disable = self._systemctl("disable", "--now", UNIT_NAME)
        if disable.ok:
            report.say(f"stopped and disabled {UNIT_NAME}")
        else:
            self._systemctl_failed(report, disable)
            if disable.returncode != RC_NOT_FOUND:
                report.say(f"if it is running, it keeps running: systemctl --user stop {UNIT_NAME}")
        file.unlink()
        report.say(f"removed {self.path}")
        if disable.ok:
            reload = self._systemctl("daemon-reload")
            if not reload.ok:
                report.fail(f"systemctl --user daemon-reload failed: {reload.why()}")
        return report

    def status(self) -> ServiceReport:
        report = ServiceReport()
        current = read_text(Path(self.path))
        if current is None:
            # A state, not an error: nothing here to ask systemctl about, and its answers for
            # a unit without a file ("Failed to get unit file state … No such file or
            # directory") would read as failures.
            report.say(f"not installed (no unit file at {self.path})", EXIT_NOT_RUNNING)
            self._note_orphan(report)
            return report
        report.say(f"unit file: {self.path}")
        if current != self._render_or_none():
            report.say("  differs from what `reaper service install` writes now: re-run it")
        enabled = self._systemctl("is-enabled", UNIT_NAME)
        active = self._systemctl("is-active", UNIT_NAME)
        # is-enabled/is-active exit non-zero for "disabled"/"inactive", with the state on
        # stdout; no stdout at all means systemctl could not answer (see _systemctl_failed).
        for label, result in (("enabled", enabled), ("active", active)):
            state = result.stdout.strip()
            if not state:
                self._systemctl_failed(report, result)
                return report
            report.say(f"{label}: {state}")
        if active.stdout.strip() != "active":
            report.fail("the daemon is not running", EXIT_NOT_RUNNING)
        return report

    def _note_orphan(self, report: ServiceReport) -> None:
        """A unit whose file was deleted by hand stays loaded, and its daemon running, until
        stopped: "not installed" alone would hide that daemon."""
        active = self._systemctl("is-active", UNIT_NAME)
        state = active.stdout.strip()
        if state in _RUNNING_STATES:  # anything else, an unreachable manager included: nothing
            report.say(
                f"  but {UNIT_NAME} is still {state} in the user manager: "
                f"systemctl --user stop {UNIT_NAME}"
            )

    @staticmethod
    def _systemctl_failed(report: ServiceReport, result: CommandResult) -> None:
        why = result.why()
        if result.returncode == RC_NOT_FOUND:
            report.fail("systemctl not found: this system does not run systemd")
        elif any(marker in result.stderr + result.stdout for marker in _UNREACHABLE):
            report.fail(f"the systemd user manager is not reachable: {why}")
        else:
            report.fail(f"{' '.join(result.argv)} failed: {why}")
