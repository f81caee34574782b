"""Detector.evaluate over a rule set: the most urgent rule wins whatever order rules are given
in, findings come most urgent first with one per process, disabled rules are ignored, and
custom rules select by state and user."""

from __future__ import annotations

from reaper_engine.detector import Detector
from reaper_engine.models import Priority, ProcessState
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleConditions
from tests.factories import T0, proc
from tests.unit.detector_helpers import DAY, HOUR, evaluate, rule_of, rule_of_with

# --- priority order -----------------------------------------------------------------------


def test_critical_rule_wins_over_low_rule() -> None:
    # Matches zombie_test_binary (critical), hung_test (high) and orphaned_monitor (low).
    p = proc(cmd="/tmp/test_follow /var/log/app.log", cpu=0.0, age=2 * DAY)
    assert rule_of(p) == "zombie_test_binary"
    explained = {
        r.name: all(c.held for c in checks)
        for r, checks in Detector(DEFAULT_RULES).explain(p, now=T0)
    }
    assert explained["orphaned_monitor"]
    assert explained["hung_test"]


def test_priority_beats_the_order_rules_are_given_in() -> None:
    low = Rule(name="low_any", priority=Priority.LOW, conditions=RuleConditions(age_seconds=0))
    crit = Rule(
        name="crit_any", priority=Priority.CRITICAL, conditions=RuleConditions(age_seconds=0)
    )
    medium = Rule(name="medium_any", conditions=RuleConditions(age_seconds=0))
    detector = Detector([low, medium, crit])
    assert [r.name for r in detector.rules] == ["crit_any", "medium_any", "low_any"]
    assert rule_of_with([low, medium, crit], proc()) == "crit_any"


def test_same_priority_keeps_given_order() -> None:
    a = Rule(name="first", priority=Priority.HIGH, conditions=RuleConditions(age_seconds=0))
    b = Rule(name="second", priority=Priority.HIGH, conditions=RuleConditions(age_seconds=0))
    assert rule_of_with([a, b], proc()) == "first"
    assert rule_of_with([b, a], proc()) == "second"


def test_findings_are_sorted_most_urgent_first() -> None:
    monitor = proc(10, cmd="tail -f /var/log/x", age=2 * DAY)  # low
    hog = proc(11, cmd="/usr/bin/postgres", rss_mb=20000)  # medium
    hung = proc(12, cmd="cargo test", age=5 * HOUR)  # high
    spin = proc(13, cmd="/home/noah/spin", cpu=99.0, age=HOUR)  # critical
    findings = evaluate(monitor, hog, hung, spin)
    assert [(f.identity.pid, f.priority) for f in findings] == [
        (13, Priority.CRITICAL),
        (12, Priority.HIGH),
        (11, Priority.MEDIUM),
        (10, Priority.LOW),
    ]


def test_one_finding_per_process_and_unmatched_processes_are_absent() -> None:
    findings = evaluate(proc(1000, cmd="/bin/sleep 10"), proc(1001, cmd="/tmp/test_x"))
    assert [f.identity.pid for f in findings] == [1001]


# --- disabled and custom rules ------------------------------------------------------------


def test_disabled_rules_are_ignored() -> None:
    rules = [
        r.model_copy(update={"enabled": False}) if r.priority is Priority.CRITICAL else r
        for r in DEFAULT_RULES
    ]
    detector = Detector(rules)
    assert "infinite_loop" not in [r.name for r in detector.rules]
    assert "infinite_loop" not in [r.name for r, _ in detector.explain(proc(), now=T0)]
    spin = proc(cmd="/home/noah/spin", cpu=99.0, age=HOUR)
    assert detector.evaluate([spin], now=T0, host_id="h1") == []
    assert evaluate(proc(cmd="/tmp/test_x", age=5 * HOUR, cpu=0), rules=rules)[0].rule == (
        "hung_test"
    )


def test_custom_rule_with_states_and_users() -> None:
    rule = Rule(
        name="stopped_by_bob",
        conditions=RuleConditions(states=(ProcessState.STOPPED,), users=("bob",)),
    )
    assert rule_of_with([rule], proc(user="bob", status=ProcessState.STOPPED)) == "stopped_by_bob"
    assert rule_of_with([rule], proc(user="bob")) is None
    assert rule_of_with([rule], proc(user="alice", status=ProcessState.STOPPED)) is None
