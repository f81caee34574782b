"""reaper.toml defaults: every section's built-in values, the default rules, and the bounds each
section's model enforces."""

from __future__ import annotations

from pathlib import Path

import pytest

from reaper_engine.config import (
    DaemonSettings,
    HealthCheck,
    LoggingSettings,
    MetricsSettings,
    NotificationSettings,
    ReaperConfig,
    ScannerSettings,
    default_document,
    merge_documents,
    validate_document,
)
from reaper_engine.models import Priority
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleConditions
from reaper_engine.safety import DEFAULT_WHITELIST, SafetySettings
from reaper_engine.signals import Signal
from reaper_engine.tomldoc import parse_toml
from tests.unit.config_helpers import load


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
    assert config.rules == DEFAULT_RULES  # the set itself: test_detector_default_rules.py
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
