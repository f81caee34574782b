"""reaper.toml: defaults, locations, merging, validation errors and the default file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.config_files import (
    LoadedConfig,
    _string,
    default_config_text,
    find_project_config,
    load_config,
    user_config_path,
    write_default_config,
)
from reaper_engine.config import (
    DaemonSettings,
    FleetSettings,
    HealthCheck,
    LoggingSettings,
    MetricsSettings,
    NotificationSettings,
    ReaperConfig,
    ScannerSettings,
    compose,
    default_document,
    merge_documents,
    validate_document,
)
from reaper_engine.detector import Detector
from reaper_engine.errors import ConfigError
from reaper_engine.models import Priority
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleAction, RuleConditions
from reaper_engine.safety import DEFAULT_WHITELIST, SafetySettings
from reaper_engine.signals import Signal
from reaper_engine.tomldoc import parse_toml
from tests.factories import T0, proc

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    return {"HOME": str(home)}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with a nested working directory below it."""
    path = tmp_path / "work" / "project"
    (path / "src" / "deep").mkdir(parents=True)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def user_file(home: Path, text: str) -> Path:
    return write(home / ".config" / "reaper" / "reaper.toml", text)


def line_of(text: str, needle: str, occurrence: int = 0) -> int:
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence]


def load(cwd: Path, env: dict[str, str], explicit: Path | None = None) -> LoadedConfig:
    return load_config(explicit=explicit, cwd=cwd, env=env)


def config_error(cwd: Path, env: dict[str, str], explicit: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(cwd, env, explicit)
    return info.value


# --- defaults -------------------------------------------------------------------------------


def test_section_defaults_are_seed_000s() -> None:
    config = ReaperConfig()
    assert config.daemon == DaemonSettings(
        enabled=True, scan_interval_seconds=60, dry_run=False, pid_file=None
    )
    assert config.logging == LoggingSettings(
        level="info", file="~/.local/share/reaper/reaper.log", max_size_mb=100, rotate_count=5
    )
    assert config.notifications == NotificationSettings(
        enabled=True, urgency="normal", timeout_ms=5000
    )
    assert config.metrics == MetricsSettings(enabled=True, http_port=9090, path="/metrics")
    assert config.scanner == ScannerSettings(cpu_sample_seconds=0.2, use_procfs=True)
    assert config.safety == SafetySettings()
    assert config.safety.whitelist_processes == DEFAULT_WHITELIST
    assert config.safety.min_pid == 1000
    assert config.safety.protect_shell_ancestors is True
    assert config.safety.scope == "all"
    assert config.health_checks == ()


def test_rule_defaults() -> None:
    config = ReaperConfig()
    assert config.rules == DEFAULT_RULES
    assert [r.name for r in config.rules] == [
        "infinite_loop",
        "zombie_test_binary",
        "hung_test",
        "vitest_timeout",
        "jest_timeout",
        "memory_hog",
        "orphaned_monitor",
    ]
    assert all(r.enabled for r in config.rules)
    infinite = config.rule("infinite_loop")
    assert infinite is not None
    assert infinite.priority is Priority.CRITICAL
    assert infinite.conditions.cpu_percent_min == 90.0
    assert infinite.conditions.duration_seconds == 300
    assert infinite.action.signal is Signal.SIGKILL
    assert infinite.action.fallback_signal is None
    hung = config.rule("hung_test")
    assert hung is not None
    assert hung.priority is Priority.HIGH
    assert hung.conditions.age_hours == 4
    assert hung.conditions.cpu_percent_max == 5.0
    assert "cargo-nextest" in hung.conditions.command_patterns
    assert hung.action.signal is Signal.SIGTERM
    assert hung.action.timeout_seconds == 5
    assert hung.action.fallback_signal is Signal.SIGKILL
    monitor = config.rule("orphaned_monitor")
    assert monitor is not None
    assert monitor.priority is Priority.LOW
    assert monitor.conditions.age_hours == 24
    assert monitor.action.log_level == "info"
    zombie = config.rule("zombie_test_binary")
    assert zombie is not None
    assert zombie.conditions.age_hours == 1
    assert zombie.conditions.cpu_percent_max is None
    memory = config.rule("memory_hog")
    assert memory is not None
    assert memory.action.type == "report"
    assert config.rule("nope") is None


def test_defaults_when_no_file_exists(project: Path, env: dict[str, str]) -> None:
    loaded = load(project / "src", env)
    assert loaded.config == ReaperConfig()
    assert loaded.sources == ()
    assert loaded.user_file is None


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (DaemonSettings, {"scan_interval_seconds": 0}),
        (LoggingSettings, {"level": "trace"}),
        (LoggingSettings, {"max_size_mb": 0}),
        (LoggingSettings, {"rotate_count": -1}),
        (NotificationSettings, {"urgency": "urgent"}),
        (MetricsSettings, {"http_port": 0}),
        (MetricsSettings, {"http_port": 65536}),
        (MetricsSettings, {"path": "metrics"}),
        (ScannerSettings, {"cpu_sample_seconds": 0}),
        (ScannerSettings, {"cpu_sample_seconds": 2.5}),
        (ScannerSettings, {"nope": 1}),
        (HealthCheck, {"name": "t", "command": []}),
        (HealthCheck, {"name": "t", "command": [""]}),
        (
            HealthCheck,
            {"name": "t", "command": ["x"], "interval_seconds": 10, "timeout_seconds": 20},
        ),
    ],
)
def test_section_bounds(model: type[ReaperConfig], data: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="validation error"):
        model.model_validate(data)


def test_rule_names_must_be_unique_in_the_model() -> None:
    ages = RuleConditions(age_seconds=60)
    with pytest.raises(ValueError, match="duplicate name 'a'"):
        ReaperConfig(rules=(Rule(name="a", conditions=ages), Rule(name="a", conditions=ages)))


def test_health_check_schema() -> None:
    text = """
[[health_checks]]
name = "unit_tests"
command = ["npm", "test", "--", "--run"]
interval_seconds = 300
timeout_seconds = 120
"""
    config = validate_document(merge_documents(default_document(), parse_toml(text, "t")))
    assert config.health_checks == (
        HealthCheck(
            name="unit_tests",
            command=("npm", "test", "--", "--run"),
            interval_seconds=300,
            timeout_seconds=120,
        ),
    )
    assert HealthCheck(name="x", command=("true",)).interval_seconds == 300


# --- merging --------------------------------------------------------------------------------


def test_merge_tables_key_by_key() -> None:
    merged = merge_documents(
        {"daemon": {"enabled": True, "dry_run": False}}, {"daemon": {"dry_run": True}}
    )
    assert merged == {"daemon": {"enabled": True, "dry_run": True}}


def test_merge_does_not_modify_its_inputs() -> None:
    base = default_document()
    snapshot = default_document()
    override = {"rules": [{"name": "hung_test", "conditions": {"age_hours": 12}}]}
    merge_documents(base, override)
    assert base == snapshot
    assert override == {"rules": [{"name": "hung_test", "conditions": {"age_hours": 12}}]}


def test_override_one_condition_of_hung_test() -> None:
    override = {"rules": [{"name": "hung_test", "conditions": {"age_hours": 12}}]}
    config = validate_document(merge_documents(default_document(), override))
    hung = config.rule("hung_test")
    default = ReaperConfig().rule("hung_test")
    assert hung is not None
    assert default is not None
    assert hung.conditions.age_hours == 12
    # Everything else of the rule is untouched, and so are the other rules and their order.
    assert hung.conditions.cpu_percent_max == default.conditions.cpu_percent_max
    assert hung.conditions.command_patterns == default.conditions.command_patterns
    assert hung.action == default.action
    assert [r.name for r in config.rules] == [r.name for r in DEFAULT_RULES]


def test_override_age_hours_with_age_seconds_replaces_it() -> None:
    override = {"rules": [{"name": "hung_test", "conditions": {"age_seconds": 600}}]}
    hung = validate_document(merge_documents(default_document(), override)).rule("hung_test")
    assert hung is not None
    assert hung.conditions.age_seconds == 600
    assert hung.conditions.age_hours is None


def test_new_rule_is_appended() -> None:
    override = {
        "rules": [
            {
                "name": "pytest_timeout",
                "priority": "high",
                "conditions": {"age_seconds": 900, "command_patterns": ["pytest"]},
            }
        ]
    }
    config = validate_document(merge_documents(default_document(), override))
    assert config.rules[:-1] == DEFAULT_RULES
    assert config.rules[-1] == Rule(
        name="pytest_timeout",
        priority=Priority.HIGH,
        conditions=RuleConditions(age_seconds=900, command_patterns=("pytest",)),
    )


def test_disable_a_rule() -> None:
    override = {"rules": [{"name": "memory_hog", "enabled": False}]}
    config = validate_document(merge_documents(default_document(), override))
    memory = config.rule("memory_hog")
    assert memory is not None
    assert memory.enabled is False
    assert memory.conditions == RuleConditions(
        memory_mb_min=10240, exclude_presets=("compilers", "browsers", "editors", "ides")
    )
    assert sum(not r.enabled for r in config.rules) == 1


def test_lists_replace() -> None:
    override = {
        "safety": {"whitelist_processes": ["postgres"]},
        "rules": [{"name": "hung_test", "conditions": {"command_patterns": ["cargo mutants"]}}],
    }
    config = validate_document(merge_documents(default_document(), override))
    assert config.safety.whitelist_processes == ("postgres",)
    hung = config.rule("hung_test")
    assert hung is not None
    assert hung.conditions.command_patterns == ("cargo mutants",)


def test_fallback_signal_none_means_no_fallback() -> None:
    override = {"rules": [{"name": "hung_test", "action": {"fallback_signal": "none"}}]}
    hung = validate_document(merge_documents(default_document(), override)).rule("hung_test")
    assert hung is not None
    assert hung.action == RuleAction(
        signal=Signal.SIGTERM, timeout_seconds=5, fallback_signal=None, notify=True
    )


def test_signals_are_accepted_as_names_short_names_and_numbers() -> None:
    override = {
        "rules": [
            {
                "name": "a",
                "conditions": {"age_seconds": 60},
                "action": {"signal": "term", "fallback_signal": 9},
            },
            {
                "name": "b",
                "conditions": {"age_seconds": 60},
                "action": {"signal": "SIGINT", "fallback_signal": "KILL"},
            },
        ]
    }
    config = validate_document(merge_documents(default_document(), override))
    assert (config.rules[-2].action.signal, config.rules[-2].action.fallback_signal) == (
        Signal.SIGTERM,
        Signal.SIGKILL,
    )
    assert config.rules[-1].action.signal is Signal.SIGINT


def test_compose_defaults_user_project() -> None:
    user = {"daemon": {"dry_run": True}, "rules": [{"name": "hung_test", "priority": "low"}]}
    project = {"rules": [{"name": "hung_test", "conditions": {"age_hours": 12}}]}
    merged, _ = compose([default_document(), user, project])
    hung = validate_document(merged).rule("hung_test")
    assert hung is not None
    assert (hung.priority, hung.conditions.age_hours) == (Priority.LOW, 12)
    assert validate_document(merged).daemon.dry_run is True


# --- locations ------------------------------------------------------------------------------


def test_user_config_path_honours_xdg_config_home(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": str(xdg)}) == (
        xdg / "reaper" / "reaper.toml"
    )
    assert user_config_path({"HOME": "/h"}) == Path("/h/.config/reaper/reaper.toml")
    # Empty or relative values are invalid per the XDG spec and ignored.
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": ""}) == Path(
        "/h/.config/reaper/reaper.toml"
    )
    assert user_config_path({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}) == Path(
        "/h/.config/reaper/reaper.toml"
    )


def test_xdg_config_home_file_is_loaded(tmp_path: Path, project: Path, home: Path) -> None:
    xdg = tmp_path / "xdg"
    path = write(xdg / "reaper" / "reaper.toml", "[daemon]\ndry_run = true\n")
    user_file(home, "[daemon]\nscan_interval_seconds = 5\n")  # not used: XDG wins
    loaded = load(project, {"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)})
    assert loaded.config.daemon.dry_run is True
    assert loaded.config.daemon.scan_interval_seconds == 60
    assert loaded.sources == (path,)
    assert loaded.user_file == path


def test_user_file_in_home_config(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, "[metrics]\nhttp_port = 9100\n")
    loaded = load(project, env)
    assert loaded.config.metrics.http_port == 9100
    assert loaded.sources == (path,)
    assert loaded.user_file == path


def test_project_file_found_from_nested_subdirectory(project: Path, env: dict[str, str]) -> None:
    path = write(project / ".reaper.toml", "[daemon]\ndry_run = true\n")
    assert find_project_config(project / "src" / "deep") == path
    loaded = load(project / "src" / "deep", env)
    assert loaded.config.daemon.dry_run is True
    assert loaded.sources == (path,)
    assert loaded.user_file is None


def test_nearest_project_file_wins(project: Path) -> None:
    write(project / ".reaper.toml", "")
    nearer = write(project / "src" / ".reaper.toml", "")
    assert find_project_config(project / "src" / "deep") == nearer


def test_no_project_file(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    found = find_project_config(tmp_path / "a" / "b")
    # Something above tmp_path could hold one; nothing at or below it does.
    assert found is None or not found.is_relative_to(tmp_path)


def test_project_overrides_user_and_rules_merge_by_name(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user = user_file(
        home,
        '[daemon]\ndry_run = true\nscan_interval_seconds = 30\n\n[[rules]]\nname = "hung_test"\n'
        'priority = "critical"\n',
    )
    proj = write(
        project / ".reaper.toml",
        """# Project: bashrs. Mutation testing takes longer.
[daemon]
scan_interval_seconds = 10

[[rules]]
name = "hung_test"

[rules.conditions]
age_hours = 12
command_patterns = ["cargo mutants", "cargo-nextest"]

[[rules]]
name = "memory_hog"
enabled = false
""",
    )
    loaded = load(project / "src", env)
    config = loaded.config
    assert loaded.sources == (user, proj)
    assert loaded.user_file == user
    assert config.daemon.dry_run is True
    assert config.daemon.scan_interval_seconds == 10
    hung = config.rule("hung_test")
    memory = config.rule("memory_hog")
    assert hung is not None
    assert memory is not None
    assert hung.priority is Priority.CRITICAL
    assert hung.conditions.age_hours == 12
    assert hung.conditions.cpu_percent_max == 5.0
    assert hung.conditions.command_patterns == ("cargo mutants", "cargo-nextest")
    assert memory.enabled is False


def test_explicit_path_replaces_user_file(
    tmp_path: Path, project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[daemon]\ndry_run = true\n")
    explicit = write(tmp_path / "other.toml", "[metrics]\nenabled = false\n")
    proj = write(project / ".reaper.toml", "[notifications]\nenabled = false\n")
    loaded = load(project, env, explicit)
    assert loaded.config.daemon.dry_run is False  # the user file was not read
    assert loaded.config.metrics.enabled is False
    assert loaded.config.notifications.enabled is False  # the project file still applies
    assert loaded.sources == (explicit, proj)
    assert loaded.user_file == explicit


def test_reaper_config_env_replaces_user_file(
    tmp_path: Path, project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[daemon]\ndry_run = true\n")
    chosen = write(tmp_path / "chosen.toml", "[metrics]\nhttp_port = 1234\n")
    loaded = load(project, {**env, "REAPER_CONFIG": str(chosen)})
    assert loaded.config.daemon.dry_run is False
    assert loaded.config.metrics.http_port == 1234
    assert loaded.user_file == chosen


def test_explicit_path_beats_reaper_config_env(tmp_path: Path, env: dict[str, str]) -> None:
    by_env = write(tmp_path / "env.toml", "[metrics]\nhttp_port = 1\n")
    by_flag = write(tmp_path / "flag.toml", "[metrics]\nhttp_port = 2\n")
    loaded = load(tmp_path, {**env, "REAPER_CONFIG": str(by_env)}, by_flag)
    assert loaded.config.metrics.http_port == 2
    assert loaded.user_file == by_flag


def test_relative_and_tilde_explicit_paths(tmp_path: Path, home: Path, env: dict[str, str]) -> None:
    write(tmp_path / "rel.toml", "[metrics]\nhttp_port = 3\n")
    write(home / "mine.toml", "[metrics]\nhttp_port = 4\n")
    assert load(tmp_path, env, Path("rel.toml")).config.metrics.http_port == 3
    mine = load(tmp_path, {**env, "REAPER_CONFIG": "~/mine.toml"})
    assert mine.config.metrics.http_port == 4
    assert mine.user_file == home / "mine.toml"


def test_explicit_path_that_is_the_project_file_is_applied_once(
    project: Path, env: dict[str, str]
) -> None:
    proj = write(project / ".reaper.toml", "[daemon]\ndry_run = true\n")
    loaded = load(project, env, proj)
    assert loaded.sources == (proj,)


def test_missing_explicit_file_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    missing = tmp_path / "nope.toml"
    err = config_error(tmp_path, env, missing)
    assert err.source == str(missing)
    assert str(err) == f"{missing}: no such file"
    err = config_error(tmp_path, {**env, "REAPER_CONFIG": str(missing)})
    assert err.source == str(missing)


def test_explicit_directory_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    err = config_error(tmp_path, env, tmp_path)
    assert str(err) == f"{tmp_path}: is not a file"


def test_unreadable_and_non_utf8_files(project: Path, env: dict[str, str]) -> None:
    path = project / ".reaper.toml"
    path.write_bytes(b"[daemon]\n# \xff\n")
    err = config_error(project, env)
    assert err.source == str(path)
    assert "not UTF-8" in str(err)
    assert "byte offset 11" in str(err)
    assert err.__cause__ is None  # no UnicodeDecodeError traceback
    assert err.__suppress_context__


def test_non_utf8_user_file(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, "")
    path.write_bytes(b"\xfe\xff[daemon]\n")
    err = config_error(project, env)
    assert err.source == str(path)
    assert str(err).startswith(f"{path}: not UTF-8 text: ")
    assert "byte offset 0" in str(err)


# --- errors ---------------------------------------------------------------------------------


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


def test_bad_whitelist_pattern_in_user_file(project: Path, home: Path, env: dict[str, str]) -> None:
    path = user_file(home, '[safety]\nmin_pid = 10\nwhitelist_patterns = ["*x"]\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.whitelist_patterns", 3)


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


@pytest.mark.parametrize("where", ["user", "project"])
def test_scope_root_pid_without_scope_descendants(
    where: str, project: Path, home: Path, env: dict[str, str]
) -> None:
    text = "[safety]\nmin_pid = 2000\nscope_root_pid = 4242\n"
    path = user_file(home, text) if where == "user" else write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.scope_root_pid", 3)
    assert "scope_root_pid only applies with scope = 'descendants'" in str(err)


def test_scope_conflict_across_files_blames_the_later_key(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[safety]\nscope = "descendants"\nscope_root_pid = 4242\n')
    proj = write(project / ".reaper.toml", '# narrow it again\n[safety]\nscope = "all"\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(proj), "safety.scope", 3)


def test_scope_descendants_with_root_pid_is_valid(project: Path, env: dict[str, str]) -> None:
    write(project / ".reaper.toml", '[safety]\nscope = "descendants"\nscope_root_pid = 4242\n')
    safety = load(project, env).config.safety
    assert (safety.scope, safety.scope_root_pid) == ("descendants", 4242)


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


# --- a project file may only tighten [safety] ------------------------------------------------


@pytest.mark.parametrize(
    ("user", "text", "key", "words"),
    [
        (
            "",
            "[safety]\nmin_pid = 0\n",
            "safety.min_pid",
            "min_pid 0 is below 1000 set by the built-in defaults",
        ),
        (
            "[safety]\nmin_pid = 5000\n",
            "[daemon]\ndry_run = true\n\n[safety]\nmin_pid = 4999\n",
            "safety.min_pid",
            "min_pid 4999 is below 5000 set by the user configuration",
        ),
        ("", "[safety]\nprotect_root = false\n", "safety.protect_root", "protect_root = false"),
        (
            "[safety]\nprotect_root = false\n",
            "[safety]\nprotect_root = false\n",
            "safety.protect_root",
            "only accepted in the user configuration",
        ),
        (
            '[safety]\nscope = "baseline"\n',
            '[safety]\nscope = "all"\n',
            "safety.scope",
            "scope 'all' is wider than 'baseline' set by the user configuration",
        ),
        (
            '[safety]\nscope = "descendants"\n',
            '[safety]\nscope = "baseline"\n',
            "safety.scope",
            "scope 'baseline' is not narrower than 'descendants'",
        ),
        (
            '[safety]\nscope = "descendants"\nscope_root_pid = 4242\n',
            "[safety]\nscope_root_pid = 1\n",
            "safety.scope_root_pid",
            "scope_root_pid 1 differs from 4242 set by the user configuration",
        ),
        (
            '[safety]\nscope = "descendants"\n',  # the root is the reaper itself
            "[safety]\nscope_root_pid = 1\n",
            "safety.scope_root_pid",
            "would replace the reaper itself",
        ),
    ],
)
def test_project_file_may_not_weaken_safety(
    project: Path, home: Path, env: dict[str, str], user: str, text: str, key: str, words: str
) -> None:
    if user:
        user_file(home, user)
    path = write(project / ".reaper.toml", text)
    err = config_error(project / "src", env)
    last = key.rsplit(".", 1)[1]
    assert (err.source, err.key, err.line) == (str(path), key, line_of(text, f"{last} ="))
    assert str(err).startswith(
        f"{path}:{err.line}: key '{key}': a project file may only tighten [safety]: "
    )
    assert words in str(err)


def test_the_first_weakening_key_of_the_project_file_is_named(
    project: Path, env: dict[str, str]
) -> None:
    text = '[safety]\nmin_pid = 2000\nscope = "baseline"\nprotect_root = false\nmin_pid_x = 1\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.protect_root", 4)


def test_project_file_may_tighten_safety(project: Path, home: Path, env: dict[str, str]) -> None:
    user_file(home, "[safety]\nmin_pid = 500\nprotect_root = false\n")
    write(
        project / ".reaper.toml",
        '[safety]\nmin_pid = 3000\nprotect_root = true\nscope = "descendants"\n'
        "scope_root_pid = 4242\n",
    )
    safety = load(project, env).config.safety
    assert (safety.min_pid, safety.protect_root) == (3000, True)
    assert (safety.scope, safety.scope_root_pid) == ("descendants", 4242)


@pytest.mark.parametrize(
    ("user", "text"),
    [
        ("[safety]\nmin_pid = 2000\n", "[safety]\nmin_pid = 2000\n"),  # the same value
        ('[safety]\nscope = "baseline"\n', '[safety]\nscope = "baseline"\n'),
        (
            '[safety]\nscope = "descendants"\nscope_root_pid = 7\n',
            '[safety]\nscope = "descendants"\nscope_root_pid = 7\n',
        ),
        ('[safety]\nscope = "all"\n', '[safety]\nscope = "baseline"\n'),
    ],
)
def test_project_file_repeating_or_narrowing_the_user_settings_is_fine(
    project: Path, home: Path, env: dict[str, str], user: str, text: str
) -> None:
    user_file(home, user)
    write(project / ".reaper.toml", text)
    assert load(project, env).config.safety == SafetySettings.model_validate(
        parse_toml(text, "t")["safety"]
    )


def test_project_whitelists_add_to_the_user_ones(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[safety]\nwhitelist_processes = ["postgres"]\nwhitelist_patterns = ["a"]\n')
    write(
        project / ".reaper.toml",
        '[safety]\nwhitelist_processes = []\nwhitelist_patterns = ["b", "a"]\n',
    )
    safety = load(project, env).config.safety
    assert safety.whitelist_processes == ("postgres",)  # an empty list removes nothing
    assert safety.whitelist_patterns == ("a", "b")


def test_project_whitelist_adds_to_the_defaults(project: Path, env: dict[str, str]) -> None:
    write(project / ".reaper.toml", '[safety]\nwhitelist_processes = ["redis-server", "vim"]\n')
    safety = load(project, env).config.safety
    assert safety.whitelist_processes == (*DEFAULT_WHITELIST, "redis-server")


def test_user_and_explicit_files_may_relax_safety(
    tmp_path: Path, project: Path, home: Path, env: dict[str, str]
) -> None:
    relaxed = "[safety]\nmin_pid = 0\nprotect_root = false\nwhitelist_processes = []\n"
    user_file(home, relaxed)
    safety = load(project, env).config.safety
    assert (safety.min_pid, safety.protect_root, safety.whitelist_processes) == (0, False, ())
    explicit = write(tmp_path / "chosen.toml", relaxed)
    assert load(project, {"HOME": str(tmp_path / "nobody")}, explicit).config.safety == safety
    # --config naming the project file: it is the chosen file, applied once, as the user's.
    proj = write(project / ".reaper.toml", relaxed)
    assert load(project, env, proj).config.safety == safety


def test_project_safety_of_the_wrong_type_is_reported_as_such(
    project: Path, env: dict[str, str]
) -> None:
    text = '[safety]\nmin_pid = "0"\n'
    path = write(project / ".reaper.toml", text)
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.min_pid", 2)
    assert "valid integer" in str(err)


def test_bad_regex_added_by_the_project_whitelist_names_the_project_file(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, '[safety]\nwhitelist_patterns = ["fine"]\n')
    path = write(project / ".reaper.toml", '[safety]\nwhitelist_patterns = ["*x"]\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.whitelist_patterns", 2)
    assert "invalid regex '*x'" in str(err)


def test_user_safety_must_be_valid_on_its_own_when_a_project_file_exists(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    # The user-level settings are the floor the project file is held to: it cannot repair them.
    path = user_file(home, "[safety]\nscope_root_pid = 4242\n")
    write(project / ".reaper.toml", '[safety]\nscope = "descendants"\n')
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.scope_root_pid", 2)


def test_protect_shell_ancestors_false_is_refused(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    path = user_file(home, "[safety]\nmin_pid = 10\nprotect_shell_ancestors = false\n")
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.protect_shell_ancestors", 3)
    assert "cannot be turned off" in str(err)
    assert "(got false)" in str(err)


def test_protect_shell_ancestors_true_still_loads(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    user_file(home, "[safety]\nprotect_shell_ancestors = true\n")
    assert load(project, env).config.safety.protect_shell_ancestors is True


@pytest.mark.parametrize("value", ["true", "false"])
def test_protect_other_users_is_an_unknown_key(
    project: Path, home: Path, env: dict[str, str], value: str
) -> None:
    path = user_file(home, f"[safety]\nprotect_other_users = {value}\n")
    err = config_error(project, env)
    assert (err.source, err.key, err.line) == (str(path), "safety.protect_other_users", 2)
    assert "unknown key" in str(err)
    assert "always protected" in str(err)
    assert "did you mean" not in str(err)


# --- the default file -----------------------------------------------------------------------


def test_default_config_text_round_trips() -> None:
    text = default_config_text()
    document = parse_toml(text, "default")
    assert validate_document(document) == ReaperConfig()
    assert validate_document(merge_documents(default_document(), document)) == ReaperConfig()


def test_default_config_text_shows_every_section_and_key() -> None:
    text = default_config_text()
    for header in ("[daemon]", "[logging]", "[notifications]", "[metrics]", "[safety]"):
        assert f"\n{header}\n" in text
    assert "\n[scanner]\n" in text
    assert "# [[health_checks]]" in text
    assert text.count("\n[[rules]]\n") == len(DEFAULT_RULES)
    models = (
        DaemonSettings,
        LoggingSettings,
        NotificationSettings,
        MetricsSettings,
        SafetySettings,
        ScannerSettings,
        HealthCheck,
        Rule,
        RuleConditions,
        RuleAction,
    )
    for model in models:
        for key in model.model_fields:
            pattern = rf"^(#?\s*{key}( =|:)|\[rules\.{key}\])"
            assert re.search(pattern, text, re.MULTILINE), key
    # Each key line has a comment line above it.
    lines = text.splitlines()
    in_sections = lines[: lines.index("[scanner]") + 5]
    for n, line in enumerate(in_sections):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[n - 1].startswith("#"), line


def test_loading_the_default_file_gives_the_defaults(
    project: Path, home: Path, env: dict[str, str]
) -> None:
    path = user_file(home, default_config_text())
    loaded = load(project, env)
    assert loaded.config == ReaperConfig()
    assert loaded.user_file == path


def test_write_default_config(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "reaper.toml"
    assert write_default_config(target) == target
    assert target.read_text(encoding="utf-8") == default_config_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["reaper.toml"]  # no temp file


def test_write_default_config_refuses_to_overwrite(tmp_path: Path) -> None:
    target = write(tmp_path / "reaper.toml", "# mine\n")
    with pytest.raises(ConfigError) as info:
        write_default_config(target)
    assert info.value.source == str(target)
    assert "already exists" in str(info.value)
    assert target.read_text(encoding="utf-8") == "# mine\n"
    write_default_config(target, force=True)
    assert target.read_text(encoding="utf-8") == default_config_text()


def test_write_default_config_reports_os_errors(tmp_path: Path) -> None:
    blocker = write(tmp_path / "file", "")
    with pytest.raises(ConfigError, match="cannot write"):
        write_default_config(blocker / "reaper.toml")


# --- documentation --------------------------------------------------------------------------


def test_every_key_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    models = (
        ReaperConfig,
        DaemonSettings,
        LoggingSettings,
        NotificationSettings,
        MetricsSettings,
        SafetySettings,
        ScannerSettings,
        FleetSettings,
        HealthCheck,
        Rule,
        RuleConditions,
        RuleAction,
    )
    missing = [
        f"{model.__name__}.{key}"
        for model in models
        for key in model.model_fields
        if f"`{key}`" not in doc
    ]
    assert missing == []


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_default_file_string_spelling_round_trips(text: str) -> None:
    # Regexes carry backslashes and quotes: whatever the defaults hold must survive TOML.
    assert parse_toml(f"x = {_string(text)}\n", "t") == {"x": text}


def test_a_config_in_a_directory_we_cannot_enter_is_a_clear_error(tmp_path, monkeypatch):
    locked = tmp_path / "locked" / "reaper.toml"
    locked.parent.mkdir()
    locked.write_text("")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    # Root can enter any directory, so the refusal is simulated where pathlib meets it.
    monkeypatch.setattr(type(locked), "is_file", denied)
    with pytest.raises(ConfigError, match=r"locked/reaper\.toml: cannot read: Permission denied"):
        load_config(explicit=locked, cwd=tmp_path, env={"HOME": str(tmp_path)})


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
