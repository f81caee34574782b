"""The installed ``reaper`` console script, run for real: start-up imports, exit codes, kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from overseer.cli import _command as cli_command
from tests.cli.conftest import Victims, linux_only
from tests.integration.conftest import alive

REAPER = Path(sys.executable).with_name("reaper")
needs_script = pytest.mark.skipif(
    not REAPER.exists(), reason="console script not installed (pip install -e .)"
)

# Modules `reaper --help` and `reaper scan` must never import (issue 4, "Start-up speed").
HEAVY = (
    "redis",
    "rq",
    "paramiko",
    "winrm",
    "anthropic",
    "fastapi",
    "starlette",
    "uvicorn",
    "flask",
    "django",
    "aiohttp",
    "tornado",
    "prometheus_client",  # only the daemon serves metrics
)


# Every command below runs in a session of its own (start_new_session=True): a scan boosts
# its session's autogroup while it looks, and in pytest's session that would be pytest's.


def reaper(*args: str, env: dict[str, str], stdin: int | None = subprocess.DEVNULL):
    return subprocess.run(
        [str(REAPER), *args],
        env=env,
        stdin=stdin,
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return dict(os.environ)


def modules_after(args: list[str], env: dict[str, str]) -> set[str]:
    """Top-level package names in sys.modules after running ``reaper ARGS`` in a fresh
    interpreter (the entry point the console script calls)."""
    return {name.split(".")[0] for name in all_modules_after(args, env)}


def all_modules_after(args: list[str], env: dict[str, str]) -> set[str]:
    """Every module name in sys.modules after running ``reaper ARGS`` in a fresh
    interpreter."""
    script = textwrap.dedent(
        f"""
        import sys
        from overseer.cli import main
        try:
            main({args!r})
        except SystemExit:
            pass
        sys.stderr.write("\\nMODULES " + " ".join(sorted(sys.modules)))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(done.stderr.rsplit("MODULES ", 1)[1].split())


def test_help_imports_nothing_heavy_not_even_the_engine(env):
    loaded = modules_after(["--help"], env)
    assert "click" in loaded
    assert not loaded & set(HEAVY)
    # --help needs no configuration, engine, pydantic, structlog or Rich.
    assert not loaded & {"pydantic", "structlog", "rich", "reaper_engine", "agents", "psutil"}


def test_scan_imports_nothing_heavy(env):
    loaded = modules_after(["scan", "--json"], env)
    assert "reaper_engine" in loaded  # it did scan
    assert not loaded & set(HEAVY)
    # Nothing was logged at the default level: structlog (~90 ms) was never imported; Rich
    # only prints to a terminal.
    assert not loaded & {"structlog", "rich"}


def test_a_command_loads_its_own_module_only(env):
    loaded = all_modules_after(["scan", "--json"], env)
    assert "overseer.cli.scan_cmd" in loaded
    others = {"kill_cmd", "config_cmd", "daemon_cmd", "service_cmd", "fleet_cmd", "rules_cmd"}
    others |= {"mission_cmd", "fleet_common"}
    assert not loaded & {f"overseer.cli.{name}" for name in others}


@needs_script
def test_console_script_scan_still_logs_when_asked(env):
    result = reaper("-v", "scan", "--json", env=env)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # the log is on stderr only
    # The CPU boost is logged at info (or warning when not permitted), through structlog's
    # console renderer.
    assert "cpu_boost" in result.stderr
    assert "[info" in result.stderr or "[warning" in result.stderr


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["scan"], "scan"),
        (["-vv", "scan", "--json"], "scan"),
        (["-q", "--log-format", "json", "scan"], "scan"),
        (["--log-format=json", "kill", "--all"], "kill"),
        (["--log-format", "scan"], None),  # the option's value, not a command
        (["--help"], None),
    ],
)
def test_the_console_script_finds_the_command_before_click_parses(args, command):
    assert cli_command(args) == command


@linux_only
def test_scan_takes_its_first_cpu_look_before_importing_click(env):
    script = textwrap.dedent(
        """
        import sys
        import agents.cpu_probe as cpu_probe

        probe_cpu, looks = cpu_probe.probe_cpu, []

        def spy(*args):
            looks.append("click" in sys.modules)
            return probe_cpu(*args)

        cpu_probe.probe_cpu = spy
        from overseer.cli import main
        try:
            main(["-v", "--log-format", "json", "scan", "--json"])
        except SystemExit as done:
            assert not done.code, done.code
        sys.stderr.write(f"\\nLOOKS {looks}")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        start_new_session=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # One look, taken before click was imported, and the scan used it (no second one).
    assert done.stderr.rsplit("LOOKS ", 1)[1] == "[False]"


@needs_script
def test_console_script_help_and_version(env):
    result = reaper("--help", env=env)
    assert result.returncode == 0
    assert "Usage: reaper" in result.stdout
    assert reaper("--version", env=env).stdout.startswith("reaper ")


@needs_script
def test_console_script_invalid_config(env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "x"\n[rules.action]\nsignal = "SIGFOO"\n')
    result = reaper("scan", "--config", str(bad), env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {bad}:4: key 'rules.0.action.signal': ")
    assert "Traceback" not in result.stderr


@needs_script
def test_console_script_scan_json(env):
    result = reaper("scan", "--json", env=env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["processes_scanned"] > 0
    assert "\x1b[" not in result.stdout


@needs_script
@linux_only
def test_console_script_refuses_without_terminal(env, victims: Victims):
    result = reaper("kill", "--all", "--config", str(victims.config), env=env)
    assert result.returncode == 3
    assert "stdin is not a terminal" in result.stderr
    assert alive(victims.victim)


@needs_script
@linux_only
def test_console_script_kills_with_yes(env, victims: Victims):
    env["REAPER_CONFIG"] = str(victims.config)  # through the environment this time
    result = reaper("kill", "--all", "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert f"Process {victims.victim} terminated (SIGTERM)" in result.stdout
    assert "Killed 1 process (0 failures)" in result.stdout
    assert not alive(victims.victim)
    assert alive(victims.bystander)
    assert [r["outcome"] for r in victims.audit_lines()] == ["terminated"]


@needs_script
def test_status_and_stop_before_any_daemon_ever_ran(env, tmp_path):
    # No state or runtime directory yet: a fresh user's first `reaper status`.
    env = {
        **env,
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
    }
    status = reaper("status", env=env)
    assert status.returncode == 3, status.stderr
    assert "Traceback" not in status.stderr
    assert "never run" in status.stdout
    stop = reaper("stop", env=env)
    assert stop.returncode == 0, stop.stderr
    assert "Traceback" not in stop.stderr
    assert "not running" in (stop.stdout + stop.stderr).lower()
    # Asking created nothing.
    assert not (tmp_path / "state").exists()
    assert not (tmp_path / "run").exists()
