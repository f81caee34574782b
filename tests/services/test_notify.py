"""Desktop notifications: a stub notify-send/osascript on a fake PATH records its argv."""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra import notify as notify_mod
from infra.notify import Notifier, kill_summary, notify, osascript_argv
from reaper_engine.audit import AuditRecord
from reaper_engine.config import NotificationSettings
from reaper_engine.models import KillOutcome, KillRecord, Priority, ProcessIdentity

pytestmark = pytest.mark.skipif(os.name != "posix", reason="stub tools are shell scripts")

HOSTILE = 'Reaper" & do shell script "touch /tmp/pwned" & "'


def stub(bin_dir: Path, name: str, body: str = "") -> Path:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    # NUL-separated, so an argument with newlines or quotes comes back exactly.
    tool.write_text(f'#!/bin/sh\nprintf \'%s\\0\' "$@" > "$NOTIFY_RECORD"\n{body}')
    tool.chmod(0o755)
    return tool


def recorded(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\0")[:-1]


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "argv.bin"


def env_for(tmp_path: Path, record: Path, **extra: str) -> dict[str, str]:
    return {"PATH": str(tmp_path / "bin"), "NOTIFY_RECORD": str(record), **extra}


def test_notify_send_gets_urgency_timeout_and_app_name(tmp_path, record):
    stub(tmp_path / "bin", "notify-send")
    env = env_for(tmp_path, record, DISPLAY=":0")
    ok = notify(
        "-t title", "kill <b> & co", urgency="critical", timeout_ms=7000, env=env, platform="linux"
    )
    assert ok is True
    assert recorded(record) == [
        "-a",
        "Reaper",
        "-u",
        "critical",
        "-t",
        "7000",
        "--",
        "-t title",
        "kill &lt;b&gt; &amp; co",
    ]


@pytest.mark.parametrize("var", ["DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"])
def test_any_session_variable_is_enough(tmp_path, record, var):
    stub(tmp_path / "bin", "notify-send")
    assert notify("t", "b", env=env_for(tmp_path, record, **{var: "x"}), platform="linux")


def test_no_display_session_means_no_notification(tmp_path, record):
    stub(tmp_path / "bin", "notify-send")
    assert notify("t", "b", env=env_for(tmp_path, record), platform="linux") is False
    assert not record.exists()  # not even started


def test_missing_tool_is_skipped_quietly(tmp_path, record):
    (tmp_path / "bin").mkdir()
    env = env_for(tmp_path, record, DISPLAY=":0")
    assert notify("t", "b", env=env, platform="linux") is False


def test_a_failing_tool_returns_false(tmp_path, record):
    stub(tmp_path / "bin", "notify-send", "echo 'no bus' >&2\nexit 1\n")
    env = env_for(tmp_path, record, DISPLAY=":0")
    assert notify("t", "b", env=env, platform="linux") is False


def test_a_hanging_tool_is_cut_off(tmp_path, record, monkeypatch):
    monkeypatch.setattr(notify_mod, "SUBPROCESS_TIMEOUT", 0.3)
    sleep = shutil.which("sleep")
    assert sleep is not None
    stub(tmp_path / "bin", "notify-send", f"exec {sleep} 30\n")  # the fake PATH has no sleep
    env = env_for(tmp_path, record, DISPLAY=":0")
    started = time.monotonic()
    assert notify("t", "b", env=env, platform="linux") is False
    assert 0.3 <= time.monotonic() - started < 10


def test_windows_is_skipped(tmp_path, record):
    stub(tmp_path / "bin", "notify-send")
    assert notify("t", "b", env=env_for(tmp_path, record, DISPLAY=":0"), platform="win32") is False


def test_osascript_gets_the_text_as_arguments_never_as_script(tmp_path, record):
    stub(tmp_path / "bin", "osascript")
    body = 'body "quoted"\n& do shell script "id"'
    assert notify(HOSTILE, body, env=env_for(tmp_path, record), platform="darwin") is True
    argv = recorded(record)
    script = [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]
    assert script == [
        "on run argv",
        "display notification (item 3 of argv) with title (item 2 of argv)",
        "end run",
    ]
    assert argv[-3:] == ["reaper", HOSTILE, body]  # verbatim, as separate items
    assert not any(HOSTILE in line or "shell" in line for line in script)


def test_osascript_argv_puts_a_fixed_word_before_the_text():
    # A title starting with "-" must not be taken for an osascript option.
    argv = osascript_argv("-e", "b")
    assert argv[-3:] == ["reaper", "-e", "b"]


def test_notify_never_raises(monkeypatch):
    def boom(*_a: object, **_k: object) -> bool:
        raise RuntimeError("bad")

    monkeypatch.setattr(notify_mod, "_notify", boom)
    assert notify("t", "b") is False


def kill(outcome: KillOutcome, cpu: float = 99.7, *, rule: str = "infinite_loop", dry=False):
    return KillRecord(
        identity=ProcessIdentity(host_id="h", pid=4000, create_time=1.0),
        rule=rule,
        priority=Priority.CRITICAL,
        outcome=outcome,
        cpu_percent=cpu,
        dry_run=dry,
    )


def test_kill_summary():
    three = [
        kill(KillOutcome.KILLED, 99.7),
        kill(KillOutcome.TERMINATED, 99.6),
        kill(KillOutcome.KILLED, 99.9),
    ]
    assert kill_summary(three) == "Killed 3 processes (CPU recovered 299%)"
    assert kill_summary([kill(KillOutcome.KILLED, 50)]) == "Killed 1 process (CPU recovered 50%)"
    assert kill_summary([kill(KillOutcome.KILLED), kill(KillOutcome.FAILED)]) == (
        "Killed 1 process (CPU recovered 100%); could not kill 1 process"
    )
    assert kill_summary([kill(KillOutcome.DENIED)]) == "Could not kill 1 process"
    assert kill_summary([kill(KillOutcome.DRY_RUN, dry=True)]) is None
    assert kill_summary([kill(KillOutcome.PROTECTED), kill(KillOutcome.ALREADY_GONE)]) is None


class Sent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, int]] = []

    def __call__(self, title: str, body: str, *, urgency: str = "", timeout_ms: int = 0) -> bool:
        self.calls.append((title, body, urgency, timeout_ms))
        return True


def test_notifier_sends_one_summary_with_the_configured_urgency():
    sent = Sent()
    notifier = Notifier(NotificationSettings(urgency="critical", timeout_ms=9000), send=sent)
    records = [kill(KillOutcome.KILLED), kill(KillOutcome.KILLED, rule="hung_test")]
    assert notifier.kill_report(records, rules={"infinite_loop"}) is True
    assert sent.calls == [("Reaper", "Killed 1 process (CPU recovered 100%)", "critical", 9000)]


def test_notifier_disabled_or_nothing_killed_sends_nothing():
    sent = Sent()
    off = Notifier(NotificationSettings(enabled=False), send=sent)
    assert off.kill_report([kill(KillOutcome.KILLED)]) is False
    on = Notifier(NotificationSettings(), send=sent)
    assert on.kill_report([kill(KillOutcome.PROTECTED)]) is False
    assert sent.calls == []


def test_notifier_reads_audit_records_too():
    audit = AuditRecord(
        timestamp=datetime.now(UTC),
        action="kill",
        pid=4000,
        start_time=1.0,
        command="/tmp/test_ch04_debug",
        rule="infinite_loop",
        priority="critical",
        reason="cpu",
        signal="SIGKILL",
        cpu_percent=99.9,
        memory_mb=1.0,
        age_hours=5.0,
        user="dev",
        hostname="h",
        dry_run=False,
        outcome="killed",
    )
    sent = Sent()
    assert Notifier(NotificationSettings(), send=sent).kill_report([audit])
    assert sent.calls[0][1] == "Killed 1 process (CPU recovered 100%)"
