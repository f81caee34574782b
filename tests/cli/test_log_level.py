"""``[logging] level``: the level of the daemon's own log, unless -q/-v or --log-level say."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import structlog
from click.testing import CliRunner

from overseer.cli import common
from overseer.cli.app import reaper
from overseer.cli.common import Settings
from overseer.cli.daemon_cmd import _log_level_option, daemon_log_level
from overseer.daemon.__main__ import main as daemon_main

LEVELS = ("debug", "info", "warning", "error")


@pytest.fixture
def probe_daemon(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The foreground daemon replaced by one that logs an event at each level and stops."""
    calls: list[str] = []

    def run_daemon(loaded: Any, **_: Any) -> int:
        calls.append(loaded.config.logging.level)
        log = structlog.get_logger("probe")
        for level in LEVELS:
            getattr(log, level)(f"probe_{level}")
        return 0

    monkeypatch.setattr("overseer.daemon.runner.run_daemon", run_daemon)
    return calls


@pytest.fixture
def root_level() -> Iterator[None]:
    """The standalone entry point sets the stdlib root level: put it back."""
    saved = logging.getLogger().level
    try:
        yield
    finally:
        logging.getLogger().setLevel(saved)


def config(tmp_path: Path, level: str | None) -> Path:
    path = tmp_path / "reaper.toml"
    line = f'level = "{level}"\n' if level else ""
    path.write_text(
        f'[daemon]\npid_file = "{tmp_path / "reaper.pid"}"\n\n'
        f'[logging]\n{line}file = "{tmp_path / "audit.log"}"\n',
        encoding="utf-8",
    )
    return path


def logged(stderr: str) -> list[str]:
    return [level for level in LEVELS if f"probe_{level}" in stderr]


@pytest.mark.parametrize(
    ("level", "flags", "expected"),
    [
        (None, (), ["info", "warning", "error"]),  # the default, info, as before
        ("warning", (), ["warning", "error"]),
        ("error", (), ["error"]),
        ("debug", (), LEVELS),
        ("error", ("-v",), LEVELS),  # -v: debug, whatever the file says
        ("debug", ("-q",), ["error"]),  # -q: errors only
    ],
)
def test_foreground_daemon_logs_at_the_configured_level(
    home: Path,
    tmp_path: Path,
    probe_daemon: list[str],
    level: str | None,
    flags: tuple[str, ...],
    expected: list[str],
) -> None:
    path = config(tmp_path, level)
    result = CliRunner().invoke(
        reaper, [*flags, "start", "--foreground", "--config", str(path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert probe_daemon == [level or "info"]
    assert logged(result.stderr) == list(expected)


@pytest.mark.parametrize(
    ("level", "options", "expected"),
    [
        ("error", (), ["error"]),
        ("warning", (), ["warning", "error"]),
        ("error", ("--log-level", "debug"), LEVELS),  # an explicit --log-level wins
        ("debug", ("--log-level", "info"), ["info", "warning", "error"]),
    ],
)
def test_detached_daemon_entry_point_uses_the_level_unless_given_one(
    home: Path,
    tmp_path: Path,
    probe_daemon: list[str],
    root_level: None,
    level: str,
    options: tuple[str, ...],
    expected: list[str],
) -> None:
    # What `reaper start` spawns: python -m overseer.daemon --log-format json ... start
    path = config(tmp_path, level)
    argv = ["--log-format", "json", *options, "start", "--foreground", "--config", str(path)]
    result = CliRunner().invoke(daemon_main, argv, catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    assert logged(result.stderr) == list(expected)
    assert '"event": "probe_error"' in result.stderr  # still the format asked for
    if not options:
        assert logging.getLogger().level == logging.getLevelNamesMapping()[level.upper()]


@pytest.mark.parametrize(
    ("verbosity", "argv"),
    [
        (0, []),  # no flag: the detached daemon reads logging.level itself
        (-1, ["--log-level", "error"]),
        (1, ["--log-level", "debug"]),
        (2, ["--log-level", "debug"]),
    ],
)
def test_reaper_start_passes_a_level_to_the_detached_daemon_only_when_asked(
    verbosity: int, argv: list[str]
) -> None:
    with click.Context(reaper, obj=Settings(verbosity=verbosity)):
        assert _log_level_option() == argv


def test_no_level_option_outside_the_reaper_group() -> None:
    assert _log_level_option() == []


def test_daemon_log_level() -> None:
    assert daemon_log_level(0, "warning") == "warning"
    assert daemon_log_level(-1, "debug") == "error"
    assert daemon_log_level(1, "error") == "debug"


def test_a_one_shot_command_keeps_warnings_only(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # logging.level is the daemon's: `reaper rules` with level = "debug" logs no info.
    path = config(tmp_path, "debug")
    real = common.setup_logging

    def setup_then_probe(ctx: click.Context, **kw: Any) -> None:
        real(ctx, **kw)
        log = structlog.get_logger("probe")
        for level in LEVELS:
            getattr(log, level)(f"probe_{level}")

    monkeypatch.setattr("overseer.cli.rules_cmd.setup_logging", setup_then_probe)
    result = CliRunner().invoke(reaper, ["rules", "--config", str(path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output + result.stderr
    assert logged(result.stderr) == ["warning", "error"]
