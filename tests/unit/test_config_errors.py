"""reaper.toml errors name the file, line and key: malformed TOML, unknown keys and sections,
values of the wrong type, and validation of the merged document as a whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from reaper_engine.signals import Signal
from tests.unit.config_helpers import config_error, line_of, load, user_file, write


def test_malformed_toml_names_file_and_line(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, "[daemon]\nenabled = true\ndry_run = \n")
    err = config_error(project, env)
    assert err.source == str(path)
    assert err.line == 3
    assert str(err).startswith(f"{path}:3: ")


def test_unknown_key_in_daemon(project: Path, home: Path, env: dict[str, str]) -> None:
    text = "[daemon]\nenabled = true\nscan_interval = 30\n"
    path = user_file(home, text)
    err = config_error(project, env)
    assert (err.source, err.line, err.key) == (str(path), 3, "daemon.scan_interval")
    assert str(err) == (
        f"{path}:3: key 'daemon.scan_interval': unknown key (did you mean 'scan_interval_seconds'?)"
    )


def test_unknown_section(project: Path, env: dict[str, str]) -> None:
    path = write(project / ".reaper.toml", "[daemon]\ndry_run = true\n\n[deamon]\nx = 1\n")
    err = config_error(project, env)
    assert (err.source, err.line, err.key) == (str(path), 4, "deamon")
    assert "unknown key (did you mean 'daemon'?)" in str(err)


def test_unknown_key_in_a_rule_condition(project: Path, env: dict[str, str]) -> None:
    text = '[[rules]]\nname = "hung_test"\n\n[rules.conditions]\nage_days = 2\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.line, err.key) == (str(path), 5, "rules.0.conditions.age_days")
    assert "unknown key" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "needle", "words"),
    [
        (
            '[daemon]\nscan_interval_seconds = "60"\n',
            "daemon.scan_interval_seconds",
            "scan",
            "'60'",
        ),
        ('[daemon]\ndry_run = "false"\n', "daemon.dry_run", "dry_run", "valid boolean"),
        ("[metrics]\nhttp_port = 70000\n", "metrics.http_port", "http_port", "70000"),
        ('[logging]\nlevel = "loud"\n', "logging.level", "level", "'loud'"),
        ('[safety]\nwhitelist_processes = "vim"\n', "safety.whitelist_processes", "white", "vim"),
        ("[scanner]\ncpu_sample_seconds = 3\n", "scanner.cpu_sample_seconds", "cpu", "2"),
        ("daemon = 5\n", "daemon", "daemon", "5"),
        ("[daemon]\nenabled = 1979-05-27\n", "daemon.enabled", "enabled", "date or time"),
    ],
)
def test_wrong_type_or_value_names_file_line_key(
    project: Path, home: Path, env: dict[str, str], text: str, key: str, needle: str, words: str
) -> None:
    path = user_file(home, text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), key, line_of(text, needle))
    assert words in str(err)
    assert str(err).startswith(f"{path}:{err.line}: key '{key}': ")


def test_error_in_user_file_while_project_file_is_fine(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    path = user_file(home, "[notifications]\nurgency = 'loud'\n")
    write(project / ".reaper.toml", "[notifications]\nenabled = false\n")
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "notifications.urgency", 2)


def test_value_fixed_by_a_later_file_is_no_error(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    # Validation happens once, on the merged document: a later file may repair an earlier one.
    user_file(
        home,
        '[[rules]]\nname = "x"\n[rules.conditions]\nage_seconds = 60\n'
        '[rules.action]\nsignal = "SIGFOO"\n',
    )
    write(project / ".reaper.toml", '[[rules]]\nname = "x"\n[rules.action]\nsignal = "SIGINT"\n')
    config = load(project, env).config
    rule = config.rule("x")
    assert rule is not None
    assert rule.action.signal is Signal.SIGINT


def test_several_errors_say_how_many_more(project: Path, env: dict[str, str]) -> None:
    write(project / ".reaper.toml", "[daemon]\nfoo = 1\nbar = 2\n")
    assert "(and 1 more error)" in str(config_error(project, env))
