"""macOS: a launchd agent, ``~/Library/LaunchAgents/io.reaper.daemon.plist`` (seed 001).

An agent (per user, in the GUI session) rather than a daemon: the reaper only signals its own
user's processes, and desktop notifications need the user's session.
"""

from __future__ import annotations

import plistlib
import re
from pathlib import Path, PurePath
from typing import Any

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

LABEL = "io.reaper.daemon"
# Seconds launchd waits before starting it again after an exit: systemd's RestartSec=10.
THROTTLE_SECONDS = 10


def plist_path(ctx: ServiceContext) -> PurePath:
    return ctx.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def log_dir(ctx: ServiceContext) -> PurePath:
    return ctx.home / "Library" / "Logs" / "reaper"


def plist_document(ctx: ServiceContext) -> dict[str, Any]:
    logs = log_dir(ctx)
    return {
        "Label": LABEL,
        # Absolute paths: launchd's PATH is /usr/bin:/bin:/usr/sbin:/sbin, no shell, no ~.
        "ProgramArguments": list(ctx.daemon_argv),
        "RunAtLoad": True,
        # Restart when it exits with a failure (or is killed), not after a clean `reaper stop`.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_SECONDS,
        # "Background" would let macOS throttle CPU and I/O — exactly when a runaway process
        # has the machine pinned and the reaper most needs to run.
        "ProcessType": "Standard",
        "WorkingDirectory": str(ctx.home),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(logs / "reaper.out.log"),
        "StandardErrorPath": str(logs / "reaper.err.log"),
    }


def render_plist(ctx: ServiceContext) -> str:
    return plistlib.dumps(plist_document(ctx), sort_keys=False).decode()


_STATE = re.compile(r"^\s*state = (.+)$", re.MULTILINE)
_PID = re.compile(r"^\s*pid = (\d+)$", re.MULTILINE)


class LaunchdAgent:
    platform = "macos"

    def __init__(self, ctx: ServiceContext, runner: Runner) -> None:
        self.ctx = ctx
        self.runner = runner
        self.path = plist_path(ctx)
        self.domain = f"gui/{ctx.uid}"
        self.target = f"{self.domain}/{LABEL}"

    def render(self) -> str:
        return render_plist(self.ctx)

    def render_for_print(self) -> bytes:
        return self.render().encode()  # the bytes install writes; the plist declares UTF-8

    def _launchctl(self, *args: str) -> CommandResult:
        return self.runner(["launchctl", *args])

    def install(self) -> ServiceReport:
        report = ServiceReport()
        # launchd does not create the log directory, and an agent whose log paths cannot be
        # opened fails to start without saying why.
        Path(log_dir(self.ctx)).mkdir(parents=True, exist_ok=True)
        changed = write_atomically(Path(self.path), self.render().encode())
        report.say(f"wrote {self.path}" if changed else f"{self.path} is up to date")
        # bootstrap refuses a label that is already loaded (error 5), so unload any old copy
        # first; failure here just means it was not loaded.
        self._launchctl("bootout", self.target)
        # Clears a `launchctl disable` (or `unload -w`) override, which would make bootstrap
        # fail with "service is disabled".
        self._launchctl("enable", self.target)
        boot = self._launchctl("bootstrap", self.domain, str(self.path))
        if not boot.ok:
            self._failed(report, boot)
            report.say(
                f"the plist is in place; by hand: launchctl bootstrap {self.domain} {self.path}"
            )
            return report
        report.say(f"loaded {LABEL} into {self.domain} (launchctl print {self.target})")
        return report

    def uninstall(self) -> ServiceReport:
        report = ServiceReport()
        file = Path(self.path)
        if not file.exists():
            report.say(f"not installed: no {self.path}")
            return report
        out = self._launchctl("bootout", self.target)
        if out.returncode == RC_NOT_FOUND:
            self._failed(report, out)
        elif out.ok:
            report.say(f"stopped and unloaded {LABEL}")
        else:
            report.say(f"{LABEL} was not loaded ({out.why()})")
        file.unlink()
        report.say(f"removed {self.path}")
        return report

    def status(self) -> ServiceReport:
        report = ServiceReport()
        current = read_text(Path(self.path))
        if current is None:
            # A state, not an error; launchctl is asked only whether an agent whose plist was
            # deleted by hand is still loaded (and its daemon running), which "not installed"
            # alone would hide.
            report.say(f"not installed (no plist at {self.path})", EXIT_NOT_RUNNING)
            if self._launchctl("print", self.target).ok:
                report.say(
                    f"  but {LABEL} is still loaded in {self.domain}: "
                    f"launchctl bootout {self.target}"
                )
            return report
        report.say(f"plist: {self.path}")
        if current != self.render():
            report.say("  differs from what `reaper service install` writes now: re-run it")
        info = self._launchctl("print", self.target)
        if info.returncode == RC_NOT_FOUND:
            self._failed(report, info)
            return report
        if not info.ok:
            report.fail(f"loaded: no ({LABEL} is not in {self.domain})", EXIT_NOT_RUNNING)
            return report
        state = _STATE.search(info.stdout)
        pid = _PID.search(info.stdout)
        report.say("loaded: yes")
        report.say(f"state: {state.group(1).strip() if state else 'unknown'}")
        if pid:
            report.say(f"pid: {pid.group(1)}")
        if not (state and state.group(1).strip() == "running"):
            report.fail("the daemon is not running", EXIT_NOT_RUNNING)
        return report

    @staticmethod
    def _failed(report: ServiceReport, result: CommandResult) -> None:
        if result.returncode == RC_NOT_FOUND:
            report.fail("launchctl not found: this is not macOS")
        else:
            report.fail(f"{' '.join(result.argv[:2])} failed: {result.why()}")
