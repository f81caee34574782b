"""What a rule definition may hold: valid regexes, one of age_seconds and age_hours, identifier
names, no unknown keys or negative thresholds, at least one narrowing condition, and signals
parsed by name, short name or number."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reaper_engine.rules import Rule, RuleAction, RuleConditions
from reaper_engine.signals import Signal


def test_invalid_regex_is_rejected() -> None:
    with pytest.raises(ValidationError, match="invalid regex"):
        RuleConditions(command_patterns=("ok", "(unclosed"))
    with pytest.raises(ValidationError, match="invalid regex"):
        RuleConditions(exclude_patterns=("[a-",))


def test_age_seconds_and_age_hours_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="not both"):
        RuleConditions(age_seconds=60, age_hours=1)
    assert RuleConditions(age_hours=2).min_age_seconds == 7200
    assert RuleConditions(age_seconds=5).min_age_seconds == 5
    assert RuleConditions().min_age_seconds is None


@pytest.mark.parametrize("name", ["Bad", "has space", "1st", "", "x" * 65])
def test_rule_names_are_identifiers(name: str) -> None:
    with pytest.raises(ValidationError):
        Rule(name=name)


def test_rules_reject_unknown_keys_and_negative_thresholds() -> None:
    with pytest.raises(ValidationError):
        Rule.model_validate({"name": "x", "conditions": {"cpu": 5}})
    with pytest.raises(ValidationError):
        RuleConditions(cpu_percent_min=-1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("TERM", Signal.SIGTERM),
        ("sigkill", Signal.SIGKILL),
        ("SIGHUP", Signal.SIGHUP),
        (" int ", Signal.SIGINT),
        (15, Signal.SIGTERM),
        (9, Signal.SIGKILL),
        ("3", Signal.SIGQUIT),
    ],
)
def test_signal_parse_accepts(value: str | int, expected: Signal) -> None:
    assert Signal.parse(value) is expected


@pytest.mark.parametrize("value", ["SIGFOO", "foo", "", 99, "SIGSTOP"])
def test_signal_parse_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match="signal"):
        Signal.parse(value)


def test_rule_action_parses_signals() -> None:
    action = RuleAction.model_validate({"signal": "kill", "fallback_signal": 15})
    assert (action.signal, action.fallback_signal) == (Signal.SIGKILL, Signal.SIGTERM)
    with pytest.raises(ValidationError):
        RuleAction.model_validate({"signal": "SIGFOO"})


def test_a_rule_without_conditions_is_refused() -> None:
    with pytest.raises(ValidationError, match="would select every process"):
        Rule(name="everything")
    with pytest.raises(ValidationError, match="would select every process"):
        Rule(name="only_excludes", conditions=RuleConditions(exclude_patterns=("x",)))
