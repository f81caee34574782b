"""Desktop notifications: ``notify-send`` on Linux, ``osascript`` on macOS; best effort.

A notification is a courtesy, never a reason for the daemon to stop: :func:`notify` never
raises, and when it cannot notify (no tool, no desktop session, Windows, a failing or hanging
tool) it logs at debug level and returns False.

Untrusted text (process command lines end up in bodies) is only ever passed as separate argv
items: no shell, and never spliced into AppleScript source.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Iterable, Mapping
from typing import Protocol

import structlog

from reaper_engine.config import NotificationSettings
from reaper_engine.humanize import plural
from reaper_engine.models import KillOutcome

log = structlog.get_logger(__name__)

APP_NAME = "Reaper"
URGENCIES = ("low", "normal", "critical")
# notify-send blocks on D-Bus; a wedged notification daemon must not stall a scan.
SUBPROCESS_TIMEOUT = 5.0
# Environment variables that say a desktop session can be reached. notify-send talks to the
# session bus; DISPLAY/WAYLAND_DISPLAY alone usually mean one exists too.
_SESSION_VARS = ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")

# The AppleScript is constant; the text arrives as `argv` of its run handler. The first
# argument is a fixed word so that a title starting with "-" cannot be read as an osascript
# option (option parsing stops at the first non-option).
_APPLESCRIPT = (
    "on run argv",
    "display notification (item 3 of argv) with title (item 2 of argv)",
    "end run",
)
_OSASCRIPT_FIRST_ARG = "reaper"


def notify_send_argv(title: str, body: str, *, urgency: str, timeout_ms: int) -> list[str]:
    # Notification servers may render the body as Pango/HTML markup: a command line holding
    # "<" or "&" would be garbled or dropped, so escape it (the title is never markup).
    return [
        "notify-send",
        "-a",
        APP_NAME,
        "-u",
        urgency if urgency in URGENCIES else "normal",
        "-t",
        str(max(0, timeout_ms)),
        "--",  # a title starting with "-" is text, not an option
        title,
        html.escape(body, quote=False),
    ]


def osascript_argv(title: str, body: str) -> list[str]:
    argv = ["osascript"]
    for line in _APPLESCRIPT:
        argv += ["-e", line]
    return [*argv, _OSASCRIPT_FIRST_ARG, title, body]


def _platform(platform: str | None) -> str:
    name = platform or sys.platform
    if name.startswith("linux"):
        return "linux"
    return {"darwin": "macos", "macos": "macos", "win32": "windows"}.get(name, name)


def notify(
    title: str,
    body: str,
    *,
    urgency: str = "normal",
    timeout_ms: int = 5000,
    env: Mapping[str, str] | None = None,
    platform: str | None = None,
) -> bool:
    """Show a desktop notification; True if the tool accepted it. Never raises.

    ``env`` (default ``os.environ``) supplies PATH and the session variables; ``platform``
    (default ``sys.platform``) picks the tool. Both exist for tests. macOS's ``display
    notification`` has no urgency or timeout: they are ignored there.
    """
    try:
        return _notify(
            title, body, urgency, timeout_ms, os.environ if env is None else env, platform
        )
    except Exception as exc:  # noqa: BLE001 - a notification must never take the caller down
        log.debug("notify_failed", error=repr(exc))
        return False


def _notify(
    title: str,
    body: str,
    urgency: str,
    timeout_ms: int,
    env: Mapping[str, str],
    platform: str | None,
) -> bool:
    system = _platform(platform)
    if system == "linux":
        if not any(env.get(var) for var in _SESSION_VARS):
            log.debug("notify_skipped", reason="no desktop session")
            return False
        tool = "notify-send"
        argv = notify_send_argv(title, body, urgency=urgency, timeout_ms=timeout_ms)
    elif system == "macos":
        tool = "osascript"
        argv = osascript_argv(title, body)
    else:
        log.debug("notify_skipped", reason=f"no notification tool on {system}")
        return False
    path = shutil.which(tool, path=env.get("PATH", os.defpath))
    if path is None:
        log.debug("notify_skipped", reason=f"{tool} not found")
        return False
    argv[0] = path
    try:
        done = subprocess.run(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("notify_failed", tool=tool, error=repr(exc))
        return False
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()
        log.debug("notify_failed", tool=tool, returncode=done.returncode, stderr=stderr[:200])
        return False
    return True


class KillLike(Protocol):
    """What a kill summary reads: a terminator's KillRecord or an AuditRecord."""

    @property
    def outcome(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def cpu_percent(self) -> float: ...
    @property
    def dry_run(self) -> bool: ...


class NotifyFn(Protocol):
    def __call__(
        self, title: str, body: str, *, urgency: str = ..., timeout_ms: int = ...
    ) -> bool: ...


def kill_summary(records: Iterable[KillLike]) -> str | None:
    """One line for a batch of kills: "Killed 3 processes (CPU recovered 299%)", or None.

    Dry runs are left out: a dry-run daemon finds the same processes every scan, and a
    notification a minute about nothing done is noise. Failed kills are mentioned — those
    runaways are still there.
    """
    killed = failed = 0
    recovered = 0.0
    for record in records:
        if record.dry_run:
            continue
        outcome = KillOutcome(str(record.outcome))
        if outcome.is_kill:
            killed += 1
            recovered += record.cpu_percent
        elif outcome in (KillOutcome.FAILED, KillOutcome.DENIED):
            failed += 1
    if not killed and not failed:
        return None
    parts = []
    if killed:
        parts.append(
            f"Killed {plural(killed, 'process', 'processes')} (CPU recovered {recovered:.0f}%)"
        )
    if failed:
        parts.append(f"could not kill {plural(failed, 'process', 'processes')}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:]


class Notifier:
    """Notifications as configured by ``[notifications]``: one per batch of kills."""

    def __init__(self, settings: NotificationSettings, *, send: NotifyFn = notify) -> None:
        self.settings = settings
        self._send = send

    def notify(self, title: str, body: str) -> bool:
        if not self.settings.enabled:
            return False
        return self._send(
            title, body, urgency=self.settings.urgency, timeout_ms=self.settings.timeout_ms
        )

    def kill_report(
        self, records: Iterable[KillLike], *, rules: Collection[str] | None = None
    ) -> bool:
        """Notify about these kills, if any; ``rules`` limits it to rules with ``notify = true``.

        One notification for the whole batch, not one per process: a scan that kills twenty
        runaway test binaries should not bury the desktop in twenty bubbles.
        """
        wanted = [r for r in records if rules is None or r.rule in rules]
        summary = kill_summary(wanted)
        if summary is None:
            return False
        return self.notify(APP_NAME, summary)
