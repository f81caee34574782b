"""reaper.toml merging: tables merge key by key, rules merge by name, lists replace, and the
defaults, user and project documents compose in that order."""

from __future__ import annotations

from reaper_engine.config import (
    ReaperConfig,
    compose,
    default_document,
    merge_documents,
    validate_document,
)
from reaper_engine.models import Priority
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleAction, RuleConditions
from reaper_engine.signals import Signal


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
