"""reaper_engine/rules.py: which conditions a rule may have, and what the new ones select."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reaper_engine.detector import Detector
from reaper_engine.models import Finding, ProcessInfo
from reaper_engine.rules import Rule, RuleConditions
from tests.factories import T0, proc

HOUR = 3600.0


def evaluate(rule: Rule, *procs: ProcessInfo) -> list[Finding]:
    return Detector([rule]).evaluate(procs, now=T0, host_id="h")


# --- duration_seconds qualifies cpu_percent_min, and only that --------------------------------


@pytest.mark.parametrize(
    "conditions",
    [
        {"duration_seconds": 300},
        # Other narrowing keys do not make the window mean anything.
        {"duration_seconds": 300, "command_patterns": ["^/tmp/"]},
        {"duration_seconds": 300, "cpu_percent_max": 5},
        {"duration_seconds": 300, "lifetime_cpu_percent_min": 50},
    ],
)
def test_duration_seconds_without_cpu_percent_min_is_refused(conditions: dict) -> None:
    with pytest.raises(ValidationError, match="duration_seconds needs cpu_percent_min"):
        RuleConditions.model_validate(conditions)
    with pytest.raises(ValidationError, match="duration_seconds needs cpu_percent_min"):
        Rule.model_validate({"name": "window", "conditions": conditions})


def test_duration_seconds_is_not_narrowing_on_its_own() -> None:
    # Bypassing validation: the guard against "selects every process" must not count it.
    assert not RuleConditions.model_construct(duration_seconds=300).selects
    assert RuleConditions(cpu_percent_min=90, duration_seconds=300).selects


def test_duration_seconds_with_cpu_percent_min_is_accepted_and_used() -> None:
    rule = Rule(name="hot", conditions=RuleConditions(cpu_percent_min=90, duration_seconds=600))
    spinning_long = proc(1, cmd="/home/u/spin", cpu=99.0, age=HOUR)
    spinning_briefly = proc(2, cmd="/home/u/spin", cpu=99.0, age=599)
    assert [f.identity.pid for f in evaluate(rule, spinning_long, spinning_briefly)] == [1]


# --- new narrowing keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "conditions",
    [
        {"lifetime_cpu_percent_min": 50},
        {"lifetime_cpu_percent_max": 1},
        {"memory_mb_max": 512},
    ],
)
def test_new_bounds_count_as_narrowing(conditions: dict) -> None:
    assert RuleConditions.model_validate(conditions).selects
    assert Rule.model_validate({"name": "ok", "conditions": conditions}).conditions.selects


@pytest.mark.parametrize("key", ["lifetime_cpu_percent_min", "lifetime_cpu_percent_max"])
@pytest.mark.parametrize("value", [-1, float("inf"), float("nan")])
def test_lifetime_bounds_must_be_finite_and_non_negative(key: str, value: float) -> None:
    with pytest.raises(ValidationError):
        RuleConditions.model_validate({key: value})


@pytest.mark.parametrize("value", [-0.5, float("inf")])
def test_memory_mb_max_must_be_finite_and_non_negative(value: float) -> None:
    with pytest.raises(ValidationError):
        RuleConditions(memory_mb_max=value)


def test_lifetime_cpu_percent_min_reads_the_lifetime_average_not_the_current_load() -> None:
    rule = Rule(name="burner", conditions=RuleConditions(lifetime_cpu_percent_min=50))
    # Idle right now, yet 80% of a core on average over its hour of life.
    burnt = proc(1, cmd="/srv/batch", cpu=0.0, age=HOUR, cpu_time=0.8 * HOUR)
    # Spinning right now, yet 10% on average.
    fresh = proc(2, cmd="/srv/batch", cpu=100.0, age=HOUR, cpu_time=0.1 * HOUR)
    [finding] = evaluate(rule, burnt, fresh)
    assert finding.identity.pid == 1
    assert finding.matched == ("lifetime cpu 80.0% >= 50%",)
    assert finding.reason == "burner: CPU 80.0% on average since it started 1h 0m ago"
    [(_, checks)] = Detector([rule]).explain(fresh, now=T0)
    assert [(c.predicate, c.held) for c in checks] == [("lifetime cpu 10.0% >= 50%", False)]


def test_lifetime_cpu_percent_max_and_its_boundary() -> None:
    rule = Rule(
        name="dormant",
        conditions=RuleConditions(lifetime_cpu_percent_max=1.0, command_patterns=("daemon",)),
    )
    at_limit = proc(1, cmd="/usr/bin/daemon", age=HOUR, cpu_time=36.0)  # exactly 1%
    above = proc(2, cmd="/usr/bin/daemon", age=HOUR, cpu_time=36.5)
    [finding] = evaluate(rule, at_limit, above)
    assert finding.identity.pid == 1
    assert finding.matched[0] == "lifetime cpu 1.0% <= 1%"


def test_a_process_of_age_zero_has_a_lifetime_average_of_zero() -> None:
    rule = Rule(name="any_load", conditions=RuleConditions(lifetime_cpu_percent_min=0.1))
    just_born = proc(1, cmd="/bin/x", age=0.0, cpu_time=0.0)
    assert evaluate(rule, just_born) == []


def test_memory_mb_max_bounds_resident_memory_from_above() -> None:
    rule = Rule(
        name="small_old",
        conditions=RuleConditions(memory_mb_min=10, memory_mb_max=512, age_hours=1),
    )
    small = proc(1, cmd="/bin/small", rss_mb=512.0, age=2 * HOUR)
    big = proc(2, cmd="/bin/big", rss_mb=513.0, age=2 * HOUR)
    tiny = proc(3, cmd="/bin/tiny", rss_mb=9.0, age=2 * HOUR)
    [finding] = evaluate(rule, small, big, tiny)
    assert finding.identity.pid == 1
    assert finding.matched == (
        "age 2h 0m >= 1h 0m",
        "memory 512 MB >= 10 MB",
        "memory 512 MB <= 512 MB",
    )
    [(_, checks)] = Detector([rule]).explain(big, now=T0)
    assert ("memory 513 MB <= 512 MB", False) in [(c.predicate, c.held) for c in checks]


# --- the reason says what was measured ------------------------------------------------------


def _spinning_for_the_last(seconds: float, *, age: float) -> ProcessInfo:
    """A process idle for most of its life, then at 100% for the last ``seconds``, as a
    daemon that scanned it every minute sees it (cpu_samples: (wall, cpu_time))."""
    now = T0.timestamp()
    looks = [(now - 3600.0, 10.0), (now - seconds, 10.0), (now, 10.0 + seconds)]
    p = proc(1, cmd="/home/u/spin", cpu=100.0, age=age, cpu_time=10.0 + seconds)
    return p.model_copy(update={"cpu_samples": tuple(looks)})


def test_reason_names_the_measured_window_when_history_covers_it() -> None:
    rule = Rule(name="hot", conditions=RuleConditions(cpu_percent_min=90, duration_seconds=300))
    p = _spinning_for_the_last(300.0, age=5 * HOUR + 12 * 60)
    [finding] = evaluate(rule, p)
    assert finding.reason == "hot: CPU 100.0% over the last 5m 0s (running 5h 12m)"
    assert finding.matched[1] == "sustained 100.0% over the last 5m 0s (>= 90% for 5m 0s)"


def test_reason_without_history_is_the_lifetime_claim() -> None:
    rule = Rule(name="hot", conditions=RuleConditions(cpu_percent_min=90, duration_seconds=300))
    [finding] = evaluate(rule, proc(1, cmd="/home/u/spin", cpu=99.9, age=5 * HOUR + 12 * 60))
    assert finding.reason == "hot: CPU 99.9% for 5h 12m"  # seed 000's sample: lifetime >= 90%


def test_reason_without_a_window_does_not_claim_the_load_lasted() -> None:
    rule = Rule(name="hot_now", conditions=RuleConditions(cpu_percent_min=90))
    # Hot at this scan, 2% on average over two hours: "CPU 95% for 2h" would be false.
    p = proc(1, cmd="/home/u/spin", cpu=95.0, age=2 * HOUR, cpu_time=0.02 * 2 * HOUR)
    [finding] = evaluate(rule, p)
    assert finding.reason == "hot_now: CPU 95.0% (running 2h 0m)"


# --- exclude_presets: the built-in sets, by name ----------------------------------------------


def test_a_preset_excludes_its_programs_and_only_when_named() -> None:
    hot = {"cpu_percent_min": 90}
    compiler = proc(41, cmd="/usr/bin/x86_64-linux-gnu-g++-12 -O2 big.cc", cpu=99.0)
    loop = proc(42, cmd="/tmp/test_gcc_parser --fuzz", cpu=99.0)
    plain = Rule(name="hot", conditions=RuleConditions(**hot))
    guarded = Rule(name="hot", conditions=RuleConditions(**hot, exclude_presets=("compilers",)))
    assert {f.identity.pid for f in evaluate(plain, compiler, loop)} == {41, 42}
    assert {f.identity.pid for f in evaluate(guarded, compiler, loop)} == {42}
    # Another set does not cover compilers.
    browsers = Rule(name="hot", conditions=RuleConditions(**hot, exclude_presets=("browsers",)))
    assert {f.identity.pid for f in evaluate(browsers, compiler, loop)} == {41, 42}


def test_the_explanation_names_the_preset_pattern_that_excluded() -> None:
    rule = Rule(
        name="hot", conditions=RuleConditions(cpu_percent_min=90, exclude_presets=("editors",))
    )
    [(_, checks)] = Detector([rule]).explain(proc(43, cmd="nvim notes.md", cpu=99.0), now=T0)
    assert [c.held for c in checks][-1] is False
    assert checks[-1].predicate.startswith("command excluded by")


def test_an_unknown_preset_is_refused_with_the_names_it_may_take() -> None:
    with pytest.raises(ValidationError, match="'compilers', 'browsers', 'editors' or 'ides'"):
        RuleConditions.model_validate({"cpu_percent_min": 90, "exclude_presets": ["shells"]})
