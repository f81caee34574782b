"""`reaper service …` through click, with a recording runner, a temporary HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from overseer.cli.service_cmd import register
from overseer.services import current_platform

linux_only = pytest.mark.skipif(current_platform() != "linux", reason="installs the Linux unit")


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
    recorder.answer("systemctl", "--user", "is-enabled", rc=4, stdout="not-found\n")
    recorder.answer("systemctl", "--user", "is-active", rc=3, stdout="inactive\n")
    result = cli("status")
    assert result.exit_code == 3
    assert "not installed" in result.stderr
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
