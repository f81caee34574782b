"""Fleet commands fail early and clearly, before they touch Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from overseer.cli.app import reaper


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("REAPER_CONFIG", raising=False)
    monkeypatch.delenv("REAPER_SECRET", raising=False)
    monkeypatch.delenv("REAPER_SECRET_FILE", raising=False)
    # Nothing listens here: a command that got as far as connecting would say so.
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")

    def invoke(*args: str):
        return CliRunner().invoke(reaper, list(args))

    return invoke


def test_a_bad_inventory_is_one_line_naming_file_and_key(run, tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[hosts]]\nhost_id = "a"\nos = "plan9"\ntransport = "simulated"\n')
    result = run("mission", "create", "--inventory", str(bad), "--kind", "audit", "--insecure")
    assert result.exit_code == 2
    assert str(bad) in result.output
    assert "os" in result.output
    assert "Traceback" not in result.output


def test_a_missing_inventory_is_a_clear_error(run, tmp_path: Path):
    missing = tmp_path / "nope.toml"
    result = run("mission", "create", "--inventory", str(missing), "--kind", "audit")
    assert result.exit_code == 2
    assert "nope.toml" in result.output


def test_no_secret_is_refused_before_connecting(run):
    result = run("mission", "create", "--inventory", "examples/lab.toml", "--kind", "audit")
    assert result.exit_code == 2
    assert "REAPER_SECRET" in result.output
    assert "--insecure" in result.output


def test_a_short_secret_is_refused(run, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REAPER_SECRET", "short")
    result = run("worker", "--agent", "linux")
    assert result.exit_code == 2
    assert "at least 16" in result.output


def test_reading_commands_need_no_secret_but_do_need_redis(run):
    result = run("mission", "list")
    assert result.exit_code == 5  # got past the secret check, then found no Redis
    assert "127.0.0.1:9" in result.output


@pytest.mark.parametrize("command", [("mission", "list"), ("mission", "status", "m1"), ("health",)])
def test_reading_commands_ignore_a_secret_file_they_do_not_need(run, tmp_path: Path, command):
    result = run(*command, "--secret-file", str(tmp_path / "nope"))
    assert result.exit_code == 5, result.output  # not 2: the file is never read
    assert "secret" not in result.output


def test_an_ordering_command_reads_the_secret_file_before_the_environment(
    run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("REAPER_SECRET", "from-the-environment-0123456789")
    result = run("worker", "--agent", "linux", "--secret-file", str(tmp_path / "nope"))
    assert result.exit_code == 2  # the flag wins, and a named file must be readable
    assert "cannot read the fleet secret file" in result.output


def test_an_unsupported_url_scheme_is_refused(run):
    result = run("mission", "list", "--redis-url", "http://example.invalid/")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_an_unknown_planner_is_refused_before_the_secret_and_redis(run):
    # No secret and no Redis: the planner is checked first, so the usage error is what shows.
    result = run(
        "mission", "create", "--inventory", "examples/lab.toml", "--kind", "audit", "--planner", "x"
    )
    assert result.exit_code == 2
    assert result.output == "error: unknown planner 'x' (available: rules)\n"


@pytest.mark.parametrize(
    "command",
    [
        ("mission", "list"),
        ("mission", "status", "m-1"),
        ("mission", "status", "m-1", "--watch"),
        ("mission", "cancel", "m-1"),
        ("health",),
        ("mission", "list", "--insecure"),
    ],
)
def test_reading_commands_do_not_warn_about_unsigned_tasks(run, command):
    result = run(*command)
    assert result.exit_code == 5  # past the secret, then no Redis
    assert "fleet_insecure" not in result.output
    assert "unsigned" not in result.output
    assert result.output.startswith("error: Redis at redis://127.0.0.1:9/0 is unavailable")


def test_commands_that_order_work_still_warn_when_run_insecure(run):
    result = run(
        "mission", "create", "--inventory", "examples/lab.toml", "--kind", "audit", "--insecure"
    )
    assert result.exit_code == 5
    assert "fleet_insecure" in result.output
    assert "tasks are unsigned" in result.output
