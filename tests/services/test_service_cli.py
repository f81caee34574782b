"""`reaper service …` through click, with a recording runner, a temporary HOME."""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from overseer.cli.service_cmd import register
from overseer.services import current_platform

linux_only = pytest.mark.skipif(current_platform() != "linux", reason="installs the Linux unit")
not_on = {
    name: pytest.mark.skipif(
        current_platform() == name, reason=f"prints {name}'s file from elsewhere"
    )
    for name in ("macos", "windows")
}
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


@pytest.fixture
def cli(recorder):
    group = click.Group()
    register(group, runner=recorder)

    def invoke(*args: str):
        return CliRunner().invoke(group, ["service", *args], catch_exceptions=False)

    return invoke


@linux_only
def test_print_shows_the_unit_and_installs_nothing(cli, home, recorder):
    result = cli("install", "--print")
    assert result.exit_code == 0
    assert "ExecStart=" in result.stdout
    assert "[Install]" in result.stdout
    assert str(home / ".config/systemd/user/reaper.service") in result.stderr
    assert not (home / ".config").exists()
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("platform", "marker"),
    [("linux", "[Service]"), ("macos", "<key>ProgramArguments</key>"), ("windows", "<Task ")],
)
def test_print_another_platforms_file(cli, home, recorder, platform, marker):
    result = cli("install", "--print", "--platform", platform)
    assert result.exit_code == 0
    assert marker in result.stdout
    assert recorder.calls == []
    assert not any(home.iterdir())


def test_platform_without_print_is_refused(cli, home, recorder):
    result = cli("install", "--platform", "windows")
    assert result.exit_code == 2
    assert "--platform only goes with --print" in result.stderr
    assert recorder.calls == []


@linux_only
def test_install_uninstall_round_trip(cli, home, recorder, fake_reaper):
    unit = home / ".config/systemd/user/reaper.service"
    result = cli("install", "--executable", str(fake_reaper))
    assert result.exit_code == 0, result.output
    assert f"ExecStart={fake_reaper} start --foreground" in unit.read_text()
    assert ("systemctl", "--user", "enable", "--now", "reaper.service") in recorder.calls
    result = cli("uninstall")
    assert result.exit_code == 0, result.output
    assert not unit.exists()
    assert recorder.calls[-2:] == [
        ("systemctl", "--user", "disable", "--now", "reaper.service"),
        ("systemctl", "--user", "daemon-reload"),
    ]


@linux_only
def test_install_bakes_in_reaper_config_from_the_environment(
    cli, home, recorder, fake_reaper, tmp_path, monkeypatch
):
    config = tmp_path / "mine.toml"
    config.write_text("[daemon]\nscan_interval_seconds = 30\n")
    monkeypatch.setenv("REAPER_CONFIG", str(config))
    result = cli("install", "--print", "--executable", str(fake_reaper))
    assert f"--config {config}" in result.stdout


@linux_only
def test_install_refuses_an_invalid_config_before_touching_anything(
    cli, home, recorder, fake_reaper, tmp_path
):
    config = tmp_path / "bad.toml"
    config.write_text("[daemon]\nscan_interval_seconds = -1\n")
    result = cli("install", "--config", str(config), "--executable", str(fake_reaper))
    assert result.exit_code == 2
    assert "scan_interval_seconds" in result.stderr
    assert recorder.calls == []
    assert not (home / ".config/systemd").exists()


@linux_only
def test_install_reports_an_unreachable_manager_on_stderr(cli, home, recorder, fake_reaper):
    recorder.answer("systemctl", rc=1, stderr="Failed to connect to bus: No medium found")
    result = cli("install", "--executable", str(fake_reaper))
    assert result.exit_code == 1
    assert "error: the systemd user manager is not reachable" in result.stderr
    assert "enable --now reaper.service" in result.stdout
    assert (home / ".config/systemd/user/reaper.service").exists()


@linux_only
def test_unit_path_the_systemd_cannot_express_is_a_clean_error(cli, home, tmp_path):
    program = tmp_path / 'it"s' / "reaper"
    result = cli("install", "--print", "--executable", str(program))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: systemd cannot run a program")


@linux_only
def test_status_exit_codes(cli, home, recorder, fake_reaper):
    # What systemd 252 answers for a unit without a file, when there is no user bus.
    recorder.answer(
        "systemctl",
        "--user",
        "is-enabled",
        rc=1,
        stderr="Failed to get unit file state for reaper.service: No such file or directory",
    )
    recorder.answer(
        "systemctl", "--user", "is-active", rc=1, stderr="Failed to connect to bus: No medium found"
    )
    result = cli("status")
    assert result.exit_code == 3  # not installed (docs/cli.md)
    unit = home / ".config/systemd/user/reaper.service"
    assert result.stdout == f"not installed (no unit file at {unit})\n"
    assert result.stderr == ""
    recorder.answer("systemctl", "--user", "is-enabled", rc=4, stdout="not-found\n")
    recorder.answer("systemctl", "--user", "is-active", rc=3, stdout="inactive\n")
    cli("install", "--executable", str(fake_reaper))
    recorder.answer("systemctl", "--user", "is-enabled", stdout="enabled\n")
    recorder.answer("systemctl", "--user", "is-active", stdout="active\n")
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "active: active" in result.stdout


def test_importing_the_command_module_stays_light():
    # `reaper --help` imports this module: it must not drag in structlog, pydantic or the
    # service backends.
    code = (
        "import sys, overseer.cli.service_cmd; "
        "print(sorted(m for m in ('structlog', 'pydantic', 'overseer.services') "
        "if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


@linux_only
def test_install_into_a_home_that_cannot_be_written_is_one_clear_error(
    cli, home, recorder, fake_reaper
):
    # A file where the unit's directory should be: writing fails even for root.
    (home / ".config" / "systemd").mkdir(parents=True)
    (home / ".config" / "systemd" / "user").write_text("not a directory")
    result = cli("install", "--executable", str(fake_reaper))
    assert result.exit_code == 2
    assert "cannot write" in result.output
    assert "Traceback" not in result.output
    assert recorder.calls == []


@not_on["windows"]
@pytest.mark.parametrize(
    ("program", "arguments"),
    [
        # The command docs/service.md shows: an interpreter, which needs -m overseer.cli.
        ("C:\\Tools\\reaper\\pythonw.exe", "-m overseer.cli start --foreground"),
        ("C:\\Python311\\python3.11.exe", "-m overseer.cli start --foreground"),
        ("C:\\Tools\\reaper\\Scripts\\reaper.exe", "start --foreground"),  # the script itself
    ],
)
def test_print_for_windows_keeps_the_windows_program(cli, home, recorder, program, arguments):
    result = cli("install", "--print", "--platform", "windows", "--executable", program)
    assert result.exit_code == 0, result.output
    root = ET.fromstring(result.stdout_bytes)
    assert root.findtext("t:Actions/t:Exec/t:Command", namespaces=TASK_NS) == program
    assert root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=TASK_NS) == arguments
    assert result.stderr.startswith("# C:\\Users\\you\\AppData\\Local\\Reaper\\reaper-task.xml\n")
    assert recorder.calls == []


@not_on["macos"]
def test_print_for_macos_keeps_posix_paths_and_the_module_args(cli, home, monkeypatch):
    # This machine's REAPER_CONFIG names a file here, not on the Mac: it is not baked in.
    monkeypatch.setenv("REAPER_CONFIG", str(home / "here.toml"))
    result = cli(
        "install",
        "--print",
        "--platform",
        "macos",
        "--executable",
        "/opt/homebrew/bin/python3.12",
        "--config",
        "/Users/dev/reaper.toml",  # not on this machine: another machine's file is not read
    )
    assert result.exit_code == 0, result.output
    doc = plistlib.loads(result.stdout_bytes)
    assert doc["ProgramArguments"] == [
        "/opt/homebrew/bin/python3.12",
        "-m",
        "overseer.cli",
        "start",
        "--foreground",
        "--config",
        "/Users/dev/reaper.toml",
    ]
    assert doc["WorkingDirectory"] == "/Users/you"
    assert "home and user are placeholders" in result.stderr


@not_on["windows"]
@pytest.mark.parametrize(
    ("option", "value"), [("--executable", "pythonw.exe"), ("--config", "reaper.toml")]
)
def test_print_for_another_platform_refuses_a_relative_path(cli, home, option, value):
    # There is no working directory on the other machine to make it absolute against.
    result = cli("install", "--print", "--platform", "windows", option, value)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {option} '{value}' is not an absolute windows path: a file for another "
        "machine needs its full path there (C:\\...)\n"
    )


@linux_only
def test_print_with_a_python_executable_keeps_the_module_args(cli, home, tmp_path):
    python = tmp_path / "venv" / "bin" / "python3"
    result = cli("install", "--print", "--executable", str(python))
    assert result.exit_code == 0, result.output
    assert f"ExecStart={python} -m overseer.cli start --foreground\n" in result.stdout


@not_on["windows"]
def test_printed_windows_file_is_the_utf8_it_declares_whatever_stdout_encodes(home, recorder):
    group = click.Group()
    register(group, runner=recorder)
    # A terminal in Latin-1: text would be re-encoded and contradict the UTF-8 declaration.
    config = "C:\\Users\\José\\reaper.toml"
    result = CliRunner(charset="latin-1").invoke(
        group,
        ["service", "install", "--print", "--platform", "windows", "--config", config],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert "José".encode() in result.stdout_bytes
    root = ET.fromstring(result.stdout_bytes)
    arguments = root.findtext("t:Actions/t:Exec/t:Arguments", namespaces=TASK_NS)
    assert arguments == "-m overseer.cli start --foreground --config C:\\Users\\José\\reaper.toml"


@linux_only
def test_printed_unit_is_byte_for_byte_what_install_writes(cli, home, fake_reaper):
    printed = cli("install", "--print", "--executable", str(fake_reaper)).stdout_bytes
    assert cli("install", "--executable", str(fake_reaper)).exit_code == 0
    assert (home / ".config/systemd/user/reaper.service").read_bytes() == printed


@linux_only
@pytest.mark.parametrize("via", ["--config", "REAPER_CONFIG"])
def test_print_refuses_an_invalid_config_as_install_does(
    cli, home, recorder, fake_reaper, tmp_path, monkeypatch, via
):
    config = tmp_path / "bad.toml"
    config.write_text("[daemon]\nscan_interval_seconds = -1\n")
    args = ["--executable", str(fake_reaper)]
    if via == "--config":
        args += ["--config", str(config)]
    else:
        monkeypatch.setenv("REAPER_CONFIG", str(config))
    printed = cli("install", "--print", *args)
    installed = cli("install", *args)
    assert printed.exit_code == installed.exit_code == 2
    assert printed.stdout == ""
    assert printed.stderr == installed.stderr  # the same one line
    assert printed.stderr.startswith(f"error: {config}:2: key 'daemon.scan_interval_seconds'")
    assert printed.stderr.count("\n") == 1
    assert recorder.calls == []
    assert not (home / ".config/systemd").exists()


@linux_only
def test_a_bare_executable_name_is_found_on_path_not_in_the_working_directory(
    cli, home, tmp_path, monkeypatch
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = cli("install", "--print", "--executable", "python3")
    assert result.exit_code == 0, result.output
    assert f"ExecStart={python} -m overseer.cli start --foreground\n" in result.stdout
    missing = cli("install", "--print", "--executable", "no-such-reaper")
    assert missing.exit_code == 2
    assert "'no-such-reaper' is not on PATH" in missing.stderr
