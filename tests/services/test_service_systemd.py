"""The systemd user unit: what it says, that systemd accepts it, and the systemctl calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from overseer.services import EXIT_FAILED, EXIT_NOT_RUNNING, backend_for, build_context
from overseer.services.common import RC_NOT_FOUND
from overseer.services.systemd import (
    UNIT_NAME,
    SystemdUserService,
    UnitError,
    quote_word,
    render_unit,
)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not os.access("/bin/kill", os.X_OK),
    reason="systemd-analyze (package systemd) and /bin/kill (procps) are needed to verify units",
)


def unit_ctx(home: Path, program: Path, config: str | None = None):
    env = {"HOME": str(home)}
    return build_context("linux", executable=str(program), env=env, config=config)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key, []).append(value)
    return sections


def systemd_verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify``, as the user manager would load it, in a sandbox."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(runtime),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "SYSTEMD_LOG_LEVEL": "notice",
    }
    assert SYSTEMD_ANALYZE is not None
    cmd = [SYSTEMD_ANALYZE, "--user", "verify", "--man=no", str(unit)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    if "Failed to initialize manager" in done.stderr:  # no user-manager support here
        cmd.remove("--user")
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    return done


def test_unit_runs_the_daemon_in_the_foreground_with_restart_and_reload(home, fake_reaper):
    unit = parse_unit(render_unit(unit_ctx(home, fake_reaper)))
    service = unit["Service"]
    assert service["ExecStart"] == [f"{fake_reaper} start --foreground"]
    assert service["Type"] == ["simple"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartSec"] == ["10"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["CPUWeight"] == ["1000"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert unit["Install"]["WantedBy"] == ["default.target"]
    # Must not hide /tmp/test_* binaries or other processes, nor need privileges it lacks.
    for forbidden in ("PrivateTmp", "ProtectProc", "ProtectHome", "ProtectSystem", "Nice", "User"):
        assert forbidden not in service
    assert "After" not in unit["Unit"]


def test_config_is_passed_as_an_absolute_path(home, fake_reaper, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    unit = parse_unit(render_unit(unit_ctx(home, fake_reaper, config="conf/reaper.toml")))
    assert unit["Service"]["ExecStart"] == [
        f"{fake_reaper} start --foreground --config {tmp_path}/conf/reaper.toml"
    ]


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("/usr/bin/reaper", "/usr/bin/reaper"),
        ("/home/a b/reaper", '"/home/a b/reaper"'),
        ("/x/100%", "/x/100%%"),
        ("/x/$HOME", '"/x/$$HOME"'),
        ('/x/"q"', '"/x/\\"q\\""'),
        ("/x/back\\slash", '"/x/back\\\\slash"'),
    ],
)
def test_exec_words_are_escaped_for_systemd(word, quoted):
    assert quote_word(word) == quoted


def test_the_executable_keeps_its_dollars():
    # systemd expands variables in arguments only; in the program path "$$" stays two dollars.
    assert quote_word("/opt/$x/reaper", executable=True) == '"/opt/$x/reaper"'


@pytest.mark.parametrize("name", ['q"x', "s'x", "b\\x"])
def test_a_program_path_systemd_refuses_is_an_error_not_a_broken_unit(home, tmp_path, name):
    with pytest.raises(UnitError, match="--executable"):
        render_unit(unit_ctx(home, tmp_path / name / "reaper"))


@needs_systemd_analyze
def test_systemd_analyze_accepts_the_unit(home, fake_reaper, tmp_path):
    path = tmp_path / "verify" / UNIT_NAME
    path.parent.mkdir()
    path.write_text(render_unit(unit_ctx(home, fake_reaper, config=str(tmp_path / "r.toml"))))
    done = systemd_verify(path, tmp_path)
    # verify exits 0 on unknown keys and bad values, only warning: any line naming the unit is
    # a complaint about it.
    assert done.returncode == 0, done.stderr
    assert UNIT_NAME not in done.stdout + done.stderr


@needs_systemd_analyze
def test_systemd_analyze_finds_the_program_through_awkward_quoting(home, tmp_path):
    # A directory name with a space, a percent sign and a dollar: verify only passes
    # if ExecStart, unescaped by systemd, names this exact file.
    odd = tmp_path / "my apps 100% $HOME"
    odd.mkdir()
    program = odd / "reaper"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    path = tmp_path / "verify" / UNIT_NAME
    path.parent.mkdir()
    path.write_text(render_unit(unit_ctx(home, program)))
    done = systemd_verify(path, tmp_path)
    assert done.returncode == 0, done.stderr
    assert UNIT_NAME not in done.stdout + done.stderr


@needs_systemd_analyze
def test_systemd_analyze_would_catch_a_missing_program(home, tmp_path):
    # The check above is not vacuous: a unit whose program does not exist fails verify.
    path = tmp_path / "verify" / UNIT_NAME
    path.parent.mkdir()
    path.write_text(render_unit(unit_ctx(home, tmp_path / "nowhere" / "reaper")))
    done = systemd_verify(path, tmp_path)
    assert done.returncode != 0


def test_unit_goes_under_xdg_config_home(home, fake_reaper, tmp_path):
    xdg = tmp_path / "xdg"
    ctx = build_context(
        "linux", executable=str(fake_reaper), env={"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}
    )
    assert backend_for(ctx).path == xdg / "systemd" / "user" / UNIT_NAME
    relative = build_context(
        "linux", executable=str(fake_reaper), env={"HOME": str(home), "XDG_CONFIG_HOME": "rel"}
    )
    assert backend_for(relative).path == home / ".config" / "systemd" / "user" / UNIT_NAME


def service(home: Path, program: Path, recorder) -> SystemdUserService:
    backend = backend_for(unit_ctx(home, program), recorder)
    assert isinstance(backend, SystemdUserService)
    return backend


def test_install_writes_the_unit_then_reloads_and_enables(home, fake_reaper, recorder):
    svc = service(home, fake_reaper, recorder)
    report = svc.install()
    assert report.exit_code == 0, report.text
    assert svc.path == home / ".config" / "systemd" / "user" / UNIT_NAME
    assert svc.path.read_text() == svc.render()
    assert recorder.calls == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", UNIT_NAME),
    ]


def test_reinstall_with_a_changed_unit_restarts_a_running_daemon(home, fake_reaper, recorder):
    svc = service(home, fake_reaper, recorder)
    svc.path.parent.mkdir(parents=True)
    svc.path.write_text("[Service]\nExecStart=/old/reaper start --foreground\n")
    assert svc.install().exit_code == 0
    assert recorder.calls[-1] == ("systemctl", "--user", "try-restart", UNIT_NAME)
    recorder.calls.clear()
    report = svc.install()  # unchanged now: nothing to restart
    assert "up to date" in report.text
    assert ("systemctl", "--user", "try-restart", UNIT_NAME) not in recorder.calls


def test_install_without_a_user_manager_keeps_the_file_and_says_how(home, fake_reaper, recorder):
    recorder.answer(
        "systemctl",
        "--user",
        "daemon-reload",
        rc=1,
        stderr="Failed to connect to bus: No medium found\n",
    )
    svc = service(home, fake_reaper, recorder)
    report = svc.install()
    assert report.exit_code == EXIT_FAILED
    assert svc.path.exists()
    assert "not reachable: Failed to connect to bus: No medium found" in report.text
    assert "systemctl --user daemon-reload && systemctl --user enable --now" in report.text
    assert recorder.calls == [("systemctl", "--user", "daemon-reload")]


def test_install_without_systemctl_says_so(home, fake_reaper, recorder):
    recorder.answer("systemctl", rc=RC_NOT_FOUND, stderr="systemctl: command not found")
    report = service(home, fake_reaper, recorder).install()
    assert report.exit_code == EXIT_FAILED
    assert "systemctl not found" in report.text


def test_enable_failure_is_reported(home, fake_reaper, recorder):
    recorder.answer("systemctl", "--user", "enable", rc=1, stderr="Unit file is masked.\n")
    report = service(home, fake_reaper, recorder).install()
    assert report.exit_code == EXIT_FAILED
    assert "Unit file is masked." in report.text


def test_uninstall_disables_removes_and_reloads(home, fake_reaper, recorder):
    svc = service(home, fake_reaper, recorder)
    svc.install()
    recorder.calls.clear()
    report = svc.uninstall()
    assert report.exit_code == 0, report.text
    assert not svc.path.exists()
    assert recorder.calls == [
        ("systemctl", "--user", "disable", "--now", UNIT_NAME),
        ("systemctl", "--user", "daemon-reload"),
    ]


def test_uninstall_when_not_installed_is_a_no_op(home, fake_reaper, recorder):
    report = service(home, fake_reaper, recorder).uninstall()
    assert report.exit_code == 0
    assert "not installed" in report.text
    assert recorder.calls == []


def test_uninstall_without_manager_removes_the_file_but_fails(home, fake_reaper, recorder):
    svc = service(home, fake_reaper, recorder)
    svc.install()
    recorder.answer("systemctl", rc=1, stderr="Failed to connect to bus: No medium found")
    report = svc.uninstall()
    assert report.exit_code == EXIT_FAILED
    assert not svc.path.exists()
    assert "it keeps running: systemctl --user stop reaper.service" in report.text


def test_status_running(home, fake_reaper, recorder):
    svc = service(home, fake_reaper, recorder)
    svc.install()
    recorder.answer("systemctl", "--user", "is-enabled", stdout="enabled\n")
    recorder.answer("systemctl", "--user", "is-active", stdout="active\n")
    report = svc.status()
    assert report.exit_code == 0, report.text
    assert [line.text for line in report.lines] == [
        f"unit file: {svc.path}",
        "enabled: enabled",
        "active: active",
    ]


def test_status_notes_a_stale_unit_and_a_stopped_daemon(home, fake_reaper, recorder):
    svc = service(home, fake_reaper, recorder)
    svc.path.parent.mkdir(parents=True)
    svc.path.write_text("[Service]\nExecStart=/moved/reaper\n")
    recorder.answer("systemctl", "--user", "is-enabled", rc=1, stdout="disabled\n")
    recorder.answer("systemctl", "--user", "is-active", rc=3, stdout="failed\n")
    report = svc.status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert "differs from what `reaper service install` writes now" in report.text
    assert "active: failed" in report.text


@pytest.mark.parametrize(
    ("enabled", "active"),
    [
        # systemd 252 (Debian 12) with a reachable manager, and with none (what the walkthrough
        # saw: is-enabled reads unit files without the manager, is-active needs the bus).
        (
            (1, "", "Failed to get unit file state for reaper.service: No such file or directory"),
            (3, "inactive\n", ""),
        ),
        (
            (1, "", "Failed to get unit file state for reaper.service: No such file or directory"),
            (1, "", "Failed to connect to bus: No medium found"),
        ),
        ((4, "not-found\n", ""), (3, "inactive\n", "")),  # newer systemd
    ],
)
def test_status_not_installed_is_a_plain_state(home, fake_reaper, recorder, enabled, active):
    for verb, (rc, out, err) in (("is-enabled", enabled), ("is-active", active)):
        recorder.answer("systemctl", "--user", verb, rc=rc, stdout=out, stderr=err)
    svc = service(home, fake_reaper, recorder)
    report = svc.status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert [(line.text, line.error) for line in report.lines] == [
        (f"not installed (no unit file at {svc.path})", False)
    ]


def test_status_not_installed_but_the_old_unit_still_runs(home, fake_reaper, recorder):
    # The unit file was deleted by hand: the user manager keeps the unit, and the daemon, up.
    recorder.answer("systemctl", "--user", "is-active", stdout="active\n")
    report = service(home, fake_reaper, recorder).status()
    assert report.exit_code == EXIT_NOT_RUNNING
    assert not any(line.error for line in report.lines)
    assert report.lines[1].text == (
        "  but reaper.service is still active in the user manager: "
        "systemctl --user stop reaper.service"
    )


@pytest.mark.parametrize(
    "bus_error",
    [
        "Failed to connect to bus: No medium found",  # systemd < 248
        "Failed to connect to user scope bus via local transport: $DBUS_SESSION_BUS_ADDRESS "
        "and $XDG_RUNTIME_DIR not defined (consider using --machine=<user>@.host --user to "
        "connect to bus of other user)",  # systemd >= 248
        "Failed to get D-Bus connection: Operation not permitted",  # systemd < 221
    ],
)
def test_status_without_a_user_manager(home, fake_reaper, recorder, bus_error):
    recorder.answer("systemctl", rc=1, stderr=bus_error)
    svc = service(home, fake_reaper, recorder)
    svc.install()
    report = svc.status()
    assert report.exit_code == EXIT_FAILED
    assert report.lines[-1].error
    assert report.lines[-1].text == f"the systemd user manager is not reachable: {bus_error}"


def test_status_does_not_blame_the_manager_for_another_failure(home, fake_reaper, recorder):
    # The file is there but the manager reads another directory (XDG_CONFIG_HOME differs):
    # systemctl answered, so "not reachable" would send the user looking in the wrong place.
    svc = service(home, fake_reaper, recorder)
    svc.install()
    recorder.answer(
        "systemctl",
        "--user",
        "is-enabled",
        rc=1,
        stderr="Failed to get unit file state for reaper.service: No such file or directory\n",
    )
    report = svc.status()
    assert report.exit_code == EXIT_FAILED
    assert "not reachable" not in report.text
    assert report.lines[-1].text == (
        "systemctl --user is-enabled reaper.service failed: "
        "Failed to get unit file state for reaper.service: No such file or directory"
    )
