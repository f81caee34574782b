"""[[rules]] and [[health_checks]] entries in reaper.toml: bad regexes, signals and states,
duplicate or malformed entries, and the condition keys (duration_seconds, lifetime and memory
bounds, fractional hours), each error naming the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from reaper_engine.detector import Detector
from tests.factories import T0, proc
from tests.unit.config_helpers import config_error, line_of, load, user_file, write

# --- errors in rule and health check entries ------------------------------------------------

PROJECT_WITH_BAD_REGEX = """\
# A project file.
[daemon]
dry_run = true

[[rules]]
name = "hung_test"

[rules.conditions]
age_hours = 12

[[rules]]
name = "my_rule"

[rules.conditions]
command_patterns = ["ok", "("]
"""


def test_bad_regex_in_project_files_second_rule(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[daemon]\nenabled = true\n")
    path = write(project / ".reaper.toml", PROJECT_WITH_BAD_REGEX)
    err = config_error(project / "src", env)
    assert err.source == str(path)
    assert err.key == "rules.1.conditions.command_patterns"
    assert err.line == 15
    assert str(err).startswith(
        f"{path}:15: key 'rules.1.conditions.command_patterns': invalid regex '(': "
    )
    assert "Value error" not in str(err)


def test_bad_regex_in_an_override_of_a_default_rule(project: Path, env: dict[str, str]) -> None:
    # hung_test is rules.2 once merged; the error must use the file's own index.
    text = '[[rules]]\nname = "memory_hog"\nenabled = false\n\n[[rules]]\nname = "hung_test"\n'
    text += '[rules.conditions]\nexclude_patterns = ["[a-"]\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (
        str(path),
        "rules.1.conditions.exclude_patterns",
        8,
    )
    assert "invalid regex '[a-'" in str(err)


@pytest.mark.parametrize("where", ["user", "project"])
def test_unknown_signal_names_the_file_it_is_in(
    where: str, project: Path, home: Path, env: dict[str, str]
) -> None:
    clean = '[[rules]]\nname = "hung_test"\nenabled = true\n'
    bad = (
        '[[rules]]\nname = "infinite_loop"\nenabled = true\n\n'
        '[[rules]]\nname = "jest_timeout"\n\n[rules.action]\ntype = "kill"\nsignal = "SIGFOO"\n'
    )
    user = user_file(home, bad if where == "user" else clean)
    proj = write(project / ".reaper.toml", bad if where == "project" else clean)
    err = config_error(project, env)
    assert err.source == str(user if where == "user" else proj)
    assert err.key == "rules.1.action.signal"
    assert err.line == 10
    assert "unknown signal 'SIGFOO'" in str(err)
    assert "(got" not in str(err)  # the message already names the value


def test_bad_state_in_a_list_points_at_its_key(project: Path, env: dict[str, str]) -> None:
    text = '[[rules]]\nname = "x"\n[rules.conditions]\nstates = ["running", "comatose"]\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "rules.0.conditions.states.1", 4)


@pytest.mark.parametrize("where", ["user", "project"])
def test_duplicate_rule_names_in_one_file(
    where: str, project: Path, home: Path, env: dict[str, str]
) -> None:
    text = '[[rules]]\nname = "mine"\n\n[[rules]]\nname = "other"\n\n[[rules]]\nname = "mine"\n'
    path = user_file(home, text) if where == "user" else write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "rules.2.name", 8)
    assert "duplicate name 'mine' (already used by rules.0)" in str(err)


def test_same_rule_name_in_user_and_project_files_merges(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[[rules]]\nname = "mine"\n[rules.conditions]\nage_hours = 1\n')
    write(project / ".reaper.toml", '[[rules]]\nname = "mine"\n[rules.conditions]\nage_hours = 2\n')
    config = load(project, env).config
    assert [r.name for r in config.rules].count("mine") == 1
    mine = config.rule("mine")
    assert mine is not None
    assert mine.conditions.age_hours == 2


def test_duplicate_health_check_names(project: Path, env: dict[str, str]) -> None:
    text = '[[health_checks]]\nname = "t"\ncommand = ["true"]\n\n'
    path = write(project / ".reaper.toml", text * 2)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "health_checks.1.name", 6)


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        ("[[rules]]\nenabled = false\n", "rules.0", 1, "missing key 'name'"),
        ("[[rules]]\nname = 3\n", "rules.0.name", 2, "must be a string"),
        ('rules = ["hung_test"]\n', "rules.0", None, "must be a table"),
        ('rules = "hung_test"\n', "rules", 1, "array of tables"),
        ('[[rules]]\nname = "Bad-Name"\n', "rules.0.name", 2, "should match pattern"),
        ('[[health_checks]]\nname = "t"\n', "health_checks.0.command", 1, "missing key"),
    ],
)
def test_malformed_rule_entries(
    project: Path, env: dict[str, str], text: str, key: str, line: int | None, words: str
) -> None:
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key) == (str(path), key)
    if line is not None:
        assert err.line == line
    assert words in str(err)


def test_age_seconds_and_age_hours_together(project: Path, env: dict[str, str]) -> None:
    text = '[[rules]]\nname = "x"\n\n[rules.conditions]\nage_seconds = 5\nage_hours = 1\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "rules.0.conditions.age_seconds", 5)
    assert "not both" in str(err)


# --- conditions: duration_seconds, lifetime and memory bounds, fractional hours -------------


@pytest.mark.parametrize("where", ["user", "project"])
def test_duration_seconds_without_cpu_percent_min_is_refused(
    where: str, project: Path, home: Path, env: dict[str, str]
) -> None:
    # Only the window: before, this rule passed the "selects every process" guard and then
    # selected every process, because the detector reads the window only with a minimum.
    text = (
        "# a sustained rule, missing its threshold\n"
        '[[rules]]\nname = "sustained"\n\n[rules.conditions]\nduration_seconds = 300\n'
    )
    path = user_file(home, text) if where == "user" else write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (
        str(path),
        "rules.0.conditions.duration_seconds",
        line_of(text, "duration_seconds"),
    )
    assert "duration_seconds needs cpu_percent_min" in str(err)
    assert str(err).startswith(f"{path}:{err.line}: key 'rules.0.conditions.duration_seconds': ")


def test_duration_seconds_added_to_a_rule_without_a_minimum_is_refused(
    project: Path, env: dict[str, str]
) -> None:
    # hung_test narrows by age and command, but has no cpu_percent_min for the window to
    # qualify: the key would silently do nothing.
    text = '[[rules]]\nname = "hung_test"\n[rules.conditions]\nduration_seconds = 600\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "rules.0.conditions.duration_seconds", 4)
    assert "needs cpu_percent_min" in str(err)


def test_duration_seconds_with_cpu_percent_min_loads(project: Path, env: dict[str, str]) -> None:
    text = (
        '[[rules]]\nname = "sustained"\n[rules.conditions]\n'
        "cpu_percent_min = 50\nduration_seconds = 120\n"
    )
    write(project / ".reaper.toml", text)
    rule = load(project, env).config.rule("sustained")
    assert rule is not None
    assert (rule.conditions.cpu_percent_min, rule.conditions.duration_seconds) == (50, 120)


def test_lifetime_cpu_and_memory_bounds_load_from_toml(project: Path, env: dict[str, str]) -> None:
    text = (
        '[[rules]]\nname = "slow_burner"\n[rules.conditions]\n'
        "lifetime_cpu_percent_min = 40\nlifetime_cpu_percent_max = 101.5\n"
        "memory_mb_min = 64\nmemory_mb_max = 2048\n"
    )
    write(project / ".reaper.toml", text)
    rule = load(project, env).config.rule("slow_burner")
    assert rule is not None
    cond = rule.conditions
    assert (cond.lifetime_cpu_percent_min, cond.lifetime_cpu_percent_max) == (40, 101.5)
    assert (cond.memory_mb_min, cond.memory_mb_max) == (64, 2048)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("lifetime_cpu_percent_min = -1\n", "lifetime_cpu_percent_min", "greater than or equal"),
        ("lifetime_cpu_percent_max = 'x'\n", "lifetime_cpu_percent_max", "valid number"),
        ("memory_mb_max = -5\n", "memory_mb_max", "greater than or equal"),
    ],
)
def test_bad_lifetime_or_memory_bound_names_its_key(
    project: Path, env: dict[str, str], text: str, key: str, words: str
) -> None:
    full = f'[[rules]]\nname = "x"\n[rules.conditions]\n{text}'
    path = write(project / ".reaper.toml", full)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), f"rules.0.conditions.{key}", 4)
    assert words in str(err)


def test_a_rule_with_only_memory_mb_max_or_a_lifetime_bound_selects(
    project: Path, env: dict[str, str]
) -> None:
    text = (
        '[[rules]]\nname = "small"\n[rules.conditions]\nmemory_mb_max = 1\n\n'
        '[[rules]]\nname = "never_ran"\n[rules.conditions]\nlifetime_cpu_percent_max = 0\n'
    )
    write(project / ".reaper.toml", text)
    config = load(project, env).config
    assert config.rule("small") is not None
    assert config.rule("never_ran") is not None


def test_age_hours_accepts_a_fraction(project: Path, env: dict[str, str]) -> None:
    text = (
        '[[rules]]\nname = "half_hour"\n[rules.conditions]\n'
        'age_hours = 0.5\ncommand_patterns = ["^/tmp/build_"]\n'
    )
    write(project / ".reaper.toml", text)
    rule = load(project, env).config.rule("half_hour")
    assert rule is not None
    assert rule.conditions.age_hours == 0.5
    assert rule.conditions.min_age_seconds == 1800
    detector = Detector([rule])
    young = proc(1, cmd="/tmp/build_x", age=1799.0)
    old = proc(2, cmd="/tmp/build_x", age=1800.0)
    found = detector.evaluate([young, old], now=T0, host_id="h")
    assert [f.identity.pid for f in found] == [2]
    assert found[0].matched[0] == "age 30m 0s >= 30m 0s"
