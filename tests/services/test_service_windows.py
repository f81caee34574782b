"""The Task Scheduler task: its XML (parsed with xml.etree) and the schtasks command lines."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from overseer.services import EXIT_FAILED, EXIT_NOT_RUNNING, WindowsLogonTask, build_context
from overseer.services.common import RC_NOT_FOUND, ServiceContext
from overseer.services.windows_task import TASK_NAME, render_task_xml

NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
PYTHONW = "C:\\Program Files\\Python311\\pythonw.exe"


@pytest.fixture
def ctx(home: Path) -> ServiceContext:
    return ServiceContext(
        platform="windows",
        home=home,
        program=(PYTHONW, "-m", "overseer.cli"),
        config=Path("C:/Users/dev/reaper config.toml"),
        user="dev",
        env={"USERDOMAIN": "LAB", "USERNAME": "dev", "LOCALAPPDATA": str(home / "AppData/Local")},
    )


def text(root: ET.Element, path: str) -> str | None:
    return root.findtext(path, namespaces=NS)


def test_task_starts_the_daemon_at_this_users_logon_and_restarts_it(ctx):
    root = ET.fromstring(render_task_xml(ctx).split("\n", 1)[1])
    assert root.tag == f"{{{NS['t']}}}Task"
    assert text(root, "t:Triggers/t:LogonTrigger/t:UserId") == "LAB\\dev"
    assert text(root, "t:Triggers/t:LogonTrigger/t:Enabled") == "true"
    assert text(root, "t:Principals/t:Principal/t:LogonType") == "InteractiveToken"
    assert text(root, "t:Principals/t:Principal/t:RunLevel") == "LeastPrivilege"
    assert text(root, "t:Settings/t:RestartOnFailure/t:Interval") == "PT1M"
    assert text(root, "t:Settings/t:ExecutionTimeLimit") == "PT0S"  # no 72-hour kill
    assert text(root, "t:Settings/t:MultipleInstancesPolicy") == "IgnoreNew"
    assert text(root, "t:Settings/t:DisallowStartIfOnBatteries") == "false"
    assert text(root, "t:Actions/t:Exec/t:Command") == PYTHONW
    assert text(root, "t:Actions/t:Exec/t:Arguments") == (
        '-m overseer.cli start --foreground --config "C:/Users/dev/reaper config.toml"'
    )


def test_task_file_is_utf16_as_its_declaration_says(ctx, recorder):
    task = WindowsLogonTask(ctx, recorder)
    task.install()
    raw = task.path.read_bytes()
    assert raw[:2] in (b"\xff\xfe", b"\xfe\xff")  # BOM
    root = ET.parse(task.path).getroot()  # expat honours the BOM and the declaration
    assert text(root, "t:RegistrationInfo/t:URI") == f"\\{TASK_NAME}"


def test_install_registers_and_starts_the_task(ctx, home, recorder):
    task = WindowsLogonTask(ctx, recorder)
    report = task.install()
    assert report.exit_code == 0, report.text
    assert task.path == home / "AppData/Local/Reaper/reaper-task.xml"
    assert recorder.calls == [
        ("schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(task.path), "/F"),
        ("schtasks", "/Run", "/TN", TASK_NAME),
    ]


def test_install_reports_schtasks_refusal(ctx, recorder):
    recorder.answer("schtasks", "/Create", rc=1, stderr="ERROR: Access is denied.\r\n")
    report = WindowsLogonTask(ctx, recorder).install()
    assert report.exit_code == EXIT_FAILED
    assert "schtasks /Create failed: ERROR: Access is denied." in report.text


def test_uninstall_ends_deletes_and_removes(ctx, recorder):
    task = WindowsLogonTask(ctx, recorder)
    task.install()
    recorder.calls.clear()
    report = task.uninstall()
    assert report.exit_code == 0, report.text
    assert not task.path.exists()
    assert recorder.calls == [
        ("schtasks", "/Query", "/TN", TASK_NAME),
        ("schtasks", "/End", "/TN", TASK_NAME),
        ("schtasks", "/Delete", "/TN", TASK_NAME, "/F"),
    ]


def test_uninstall_when_not_registered(ctx, recorder):
    recorder.answer("schtasks", "/Query", rc=1, stderr="ERROR: The system cannot find the file")
    report = WindowsLogonTask(ctx, recorder).uninstall()
    assert report.exit_code == 0
    assert "no task Reaper is registered" in report.text


def test_status(ctx, recorder):
    task = WindowsLogonTask(ctx, recorder)
    task.install()
    recorder.answer("schtasks", "/Query", stdout="TaskName: \\Reaper\r\nStatus:   Running\r\n")
    assert task.status().exit_code == 0
    recorder.answer("schtasks", "/Query", stdout="TaskName: \\Reaper\r\nStatus:   Ready\r\n")
    report = task.status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert "status Ready" in report.text


def test_status_not_installed_is_a_plain_state(ctx, recorder):
    recorder.answer(
        "schtasks",
        "/Query",
        rc=1,
        stderr="ERROR: The system cannot find the file specified.\r\n",
    )
    task = WindowsLogonTask(ctx, recorder)
    report = task.status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert [(line.text, line.error) for line in report.lines] == [
        (f"task file: {task.path} (absent)", False),
        (f"not installed (no task {TASK_NAME} is registered)", False),
    ]


def test_printed_task_is_utf8_as_its_declaration_says(ctx, recorder):
    # Non-ASCII where it matters: a user or a path outside ASCII must survive the round trip.
    odd = dataclasses.replace(ctx, user="José", env={"USERNAME": "José"})
    task = WindowsLogonTask(odd, recorder)
    data = task.render_for_print()
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    root = ET.fromstring(data)  # expat decodes by the declaration
    assert text(root, "t:Principals/t:Principal/t:UserId") == "José"
    assert "José".encode() in data
    # What install writes keeps its own, different, consistent pair.
    assert task.render().startswith('<?xml version="1.0" encoding="UTF-16"?>\n')
    assert ET.fromstring(task.render().encode("utf-16")).tag == root.tag


def test_schtasks_missing(ctx, recorder):
    recorder.answer("schtasks", rc=RC_NOT_FOUND)
    assert "schtasks not found" in WindowsLogonTask(ctx, recorder).status().text


def test_template_for_another_machine_names_no_local_user(home, monkeypatch):
    monkeypatch.setenv("USERNAME", "someone-here")
    ctx = build_context("windows")
    if ctx.placeholder:  # printing Windows' file from Linux or macOS
        root = ET.fromstring(render_task_xml(ctx).split("\n", 1)[1])
        assert text(root, "t:Principals/t:Principal/t:UserId") == "you"
        assert text(root, "t:Actions/t:Exec/t:Command") == "C:\\path\\to\\pythonw.exe"
