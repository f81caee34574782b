"""Windows: a Task Scheduler task, ``\\Reaper``, started at logon, registered from an XML file.

A per-user logon task rather than a Windows service: services run in session 0, outside the
user's desktop, and need an administrator to install; the reaper needs neither.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
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

TASK_NAME = "Reaper"
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
# schtasks reads the file in the encoding its declaration names; UTF-16 with a BOM is what
# Task Scheduler itself exports, and the form schtasks /XML accepts everywhere.
FILE_ENCODING = "utf-16"
# `--print` writes UTF-8 (a terminal cannot show UTF-16, and a redirect to a file must match the
# declaration inside it); schtasks /XML reads UTF-8 as well when the declaration says so.
PRINT_ENCODING = "utf-8"

_SETTINGS: tuple[tuple[str, str], ...] = (
    # One daemon: a second logon (fast user switching, RDP) must not start another.
    ("MultipleInstancesPolicy", "IgnoreNew"),
    ("DisallowStartIfOnBatteries", "false"),
    ("StopIfGoingOnBatteries", "false"),
    ("AllowHardTerminate", "true"),
    ("StartWhenAvailable", "true"),
    ("RunOnlyIfNetworkAvailable", "false"),
    ("AllowStartOnDemand", "true"),
    ("Enabled", "true"),
    # Listed in Task Scheduler, so it can be found and removed; the *window* is what is hidden
    # (pythonw has none).
    ("Hidden", "false"),
    ("RunOnlyIfIdle", "false"),
    ("WakeToRun", "false"),
    # The default limit is 72 hours, after which Task Scheduler would kill the daemon.
    ("ExecutionTimeLimit", "PT0S"),
    # The default, 7, is below normal: the reaper would lose the CPU to the runaways it hunts.
    ("Priority", "5"),
)


def task_user(ctx: ServiceContext) -> str:
    domain = ctx.env.get("USERDOMAIN", "")
    name = ctx.env.get("USERNAME", "") or ctx.user
    return f"{domain}\\{name}" if domain and name else name


def task_file(ctx: ServiceContext) -> PurePath:
    local = ctx.env.get("LOCALAPPDATA", "")
    base: PurePath = Path(local) if local else ctx.home / "AppData" / "Local"
    return base / "Reaper" / "reaper-task.xml"


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{TASK_NS}}}{tag}")
    if text is not None:
        element.text = text
    return element


def render_task_xml(ctx: ServiceContext, encoding: str = FILE_ENCODING) -> str:
    """The task definition, declaring ``encoding``: the text must be written in that encoding."""
    argv = ctx.daemon_argv
    user = task_user(ctx)
    task = ET.Element(f"{{{TASK_NS}}}Task", {"version": "1.2"})
    info = _sub(task, "RegistrationInfo")
    _sub(info, "Description", "Reaper: finds and kills runaway processes (docs/service.md).")
    _sub(info, "URI", f"\\{TASK_NAME}")
    trigger = _sub(_sub(task, "Triggers"), "LogonTrigger")
    _sub(trigger, "Enabled", "true")
    if user:
        _sub(trigger, "UserId", user)  # this user's logon only, not anyone's
    principal = _sub(_sub(task, "Principals"), "Principal")
    principal.set("id", "Author")
    if user:
        _sub(principal, "UserId", user)
    # Runs in the user's session with their ordinary (not elevated) token.
    _sub(principal, "LogonType", "InteractiveToken")
    _sub(principal, "RunLevel", "LeastPrivilege")
    settings = _sub(task, "Settings")
    for tag, value in _SETTINGS:
        _sub(settings, tag, value)
    idle = _sub(settings, "IdleSettings")
    _sub(idle, "StopOnIdleEnd", "false")
    _sub(idle, "RestartOnIdle", "false")
    restart = _sub(settings, "RestartOnFailure")
    _sub(restart, "Interval", "PT1M")  # the shortest interval Task Scheduler accepts
    _sub(restart, "Count", "999")  # and the largest count
    actions = _sub(task, "Actions")
    actions.set("Context", "Author")
    exec_ = _sub(actions, "Exec")
    _sub(exec_, "Command", argv[0])
    # CreateProcess takes one argument string; list2cmdline applies the MS C runtime's quoting.
    _sub(exec_, "Arguments", subprocess.list2cmdline(argv[1:]))
    ET.register_namespace("", TASK_NS)
    ET.indent(task)
    body = ET.tostring(task, encoding="unicode")
    return f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n{body}\n'


class WindowsLogonTask:
    platform = "windows"

    def __init__(self, ctx: ServiceContext, runner: Runner) -> None:
        self.ctx = ctx
        self.runner = runner
        self.path = task_file(ctx)

    def render(self) -> str:
        return render_task_xml(self.ctx)

    def render_for_print(self) -> bytes:
        return render_task_xml(self.ctx, PRINT_ENCODING).encode(PRINT_ENCODING)

    def _schtasks(self, *args: str) -> CommandResult:
        return self.runner(["schtasks", *args])

    def install(self) -> ServiceReport:
        report = ServiceReport()
        changed = write_atomically(Path(self.path), self.render().encode(FILE_ENCODING))
        report.say(f"wrote {self.path}" if changed else f"{self.path} is up to date")
        # /F replaces an existing task of that name, so install is repeatable.
        create = self._schtasks("/Create", "/TN", TASK_NAME, "/XML", str(self.path), "/F")
        if not create.ok:
            self._failed(report, create)
            return report
        report.say(f"registered task {TASK_NAME} (runs at logon)")
        # The logon trigger fires at the next logon; start it now too.
        run = self._schtasks("/Run", "/TN", TASK_NAME)
        if not run.ok:
            self._failed(report, run)
            return report
        report.say(f"started task {TASK_NAME}")
        return report

    def uninstall(self) -> ServiceReport:
        report = ServiceReport()
        query = self._schtasks("/Query", "/TN", TASK_NAME)
        if query.returncode == RC_NOT_FOUND:
            self._failed(report, query)
            return report
        if query.ok:
            self._schtasks("/End", "/TN", TASK_NAME)  # failure: it was not running
            delete = self._schtasks("/Delete", "/TN", TASK_NAME, "/F")
            if not delete.ok:
                self._failed(report, delete)
                return report
            report.say(f"stopped and deleted task {TASK_NAME}")
        else:
            report.say(f"no task {TASK_NAME} is registered")
        file = Path(self.path)
        if file.exists():
            file.unlink()
            report.say(f"removed {self.path}")
        return report

    def status(self) -> ServiceReport:
        report = ServiceReport()
        current = read_text(Path(self.path), FILE_ENCODING)
        if current is None:
            report.say(f"task file: {self.path} (absent)")
        else:
            report.say(f"task file: {self.path}")
            if current != self.render():
                report.say("  differs from what `reaper service install` writes now: re-run it")
        query = self._schtasks("/Query", "/TN", TASK_NAME, "/FO", "LIST", "/V")
        if query.returncode == RC_NOT_FOUND:
            self._failed(report, query)
            return report
        if not query.ok:
            # What Task Scheduler knows decides, not the XML file (it is only read at install):
            # a state, not an error.
            report.say(f"not installed (no task {TASK_NAME} is registered)", EXIT_NOT_RUNNING)
            return report
        status = next(
            (
                line.split(":", 1)[1].strip()
                for line in query.stdout.splitlines()
                if line.strip().startswith("Status:")
            ),
            "unknown",
        )
        report.say(f"task {TASK_NAME}: registered, status {status}")
        if status != "Running":
            report.fail("the daemon is not running", EXIT_NOT_RUNNING)
        return report

    @staticmethod
    def _failed(report: ServiceReport, result: CommandResult) -> None:
        if result.returncode == RC_NOT_FOUND:
            report.fail("schtasks not found: this is not Windows")
        else:
            report.fail(f"schtasks {result.argv[1]} failed: {result.why()}")
