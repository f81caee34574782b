"""Detector.explain: every rule with its checks, the exclusion that saved a process, and a
property test that the fast selection path agrees with all explained checks holding."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper_engine.detector import Detector, _check, _selects
from reaper_engine.models import ProcessState
from reaper_engine.rules import DEFAULT_RULES, Rule, RuleConditions
from tests.factories import T0, proc
from tests.unit.detector_helpers import DAY, HOUR

# --- explain ------------------------------------------------------------------------------


def test_explain_lists_every_rule_with_its_checks() -> None:
    p = proc(cmd="tail -f /var/log/app.log", cpu=0.0, age=2 * DAY)
    explained = Detector(DEFAULT_RULES).explain(p, now=T0)
    assert sorted(r.name for r, _ in explained) == sorted(r.name for r in DEFAULT_RULES)
    ranks = [r.priority.rank for r, _ in explained]
    assert ranks == sorted(ranks)
    for rule, checks in explained:
        assert checks, f"{rule.name} has no checks"
    by_name = {r.name: checks for r, checks in explained}
    assert all(c.held for c in by_name["orphaned_monitor"])
    assert [c.predicate for c in by_name["orphaned_monitor"]] == [
        "cpu 0.0% <= 1%",
        "age 2d 0h >= 1d 0h",
        "command matches '^(\\\\S*/)?tail -f'",
        "command not excluded",
    ]
    assert not all(c.held for c in by_name["infinite_loop"])
    assert by_name["infinite_loop"][0].predicate == "cpu 0.0% >= 90%"
    assert not by_name["infinite_loop"][0].held


def test_explain_shows_the_exclusion_that_saved_a_process() -> None:
    p = proc(cmd="rustc src/lib.rs", cpu=99.0, age=HOUR)
    checks = dict(Detector(DEFAULT_RULES).explain(p, now=T0))
    loop = next(c for r, c in checks.items() if r.name == "infinite_loop")
    assert [c.held for c in loop] == [True, True, False]
    assert loop[-1].predicate.startswith("command excluded by ")


# --- the fast path agrees with the explained evaluation ------------------------------------

_COMMANDS = [
    "/tmp/test_loop",
    "cargo-nextest run",
    "tail -f /var/log/app.log",
    "rustc --edition 2021",
    "node /x/node_modules/.bin/vitest run",
    "C:\\\\Program Files\\\\Code.exe",
    "vim a_test.rs",
    "/usr/bin/Safari",
    "npm test",
    "python3 -m pytest tests/test_x.py",
    "sleep 60",
    "gcc-12 -O2 -o /tmp/test_x test_x.c",
    "/usr/local/go/pkg/tool/linux_amd64/compile -o _pkg_.a main_test.go",
    "gedit test_plan.txt",
    "code jest.js",
    "vim app.log",
    "/tmp/test_gcc_parser",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome --type=renderer",
    "java -cp app.jar com.intellij.idea.Main test_x.py",
]

_BOUND = st.none() | st.floats(0, 200)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    cmd=st.sampled_from(_COMMANDS),
    cpu=st.floats(0, 200),
    age=st.floats(0, 10 * DAY),
    share=st.floats(0, 1.5),
    rss_mb=st.floats(0, 20000),
    status=st.sampled_from(list(ProcessState)),
    looks=st.lists(st.tuples(st.floats(1, 4000), st.floats(0, 4000)), max_size=4),
    cpu_min=_BOUND,
    window=st.floats(0, 5000),
    lifetime_min=_BOUND,
    lifetime_max=_BOUND,
    memory_min=st.none() | st.floats(0, 20000),
    memory_max=st.none() | st.floats(0, 20000),
)
def test_fast_selection_equals_all_checks_holding(
    cmd,
    cpu,
    age,
    share,
    rss_mb,
    status,
    looks,
    cpu_min,
    window,
    lifetime_min,
    lifetime_max,
    memory_min,
    memory_max,
):
    samples, wall, spent = [], 1_000_000.0, 0.0
    for gap, used in looks:
        wall, spent = wall + gap, spent + min(used, gap)
        samples.append((wall, spent))
    p = proc(cmd=cmd, cpu=cpu, age=age, cpu_time=age * share, rss_mb=rss_mb, status=status)
    p = p.model_copy(update={"cpu_samples": tuple(samples)})
    extra = Rule(name="idle", conditions=RuleConditions(idle_seconds=600, states=(status,)))
    # Every numeric condition, with drawn thresholds (age_seconds = 0 keeps it a valid rule
    # whatever is drawn): sustained and lifetime CPU, memory from below and above.
    bounds = Rule(
        name="bounds",
        conditions=RuleConditions(
            cpu_percent_min=cpu_min,
            duration_seconds=None if cpu_min is None else window,
            lifetime_cpu_percent_min=lifetime_min,
            lifetime_cpu_percent_max=lifetime_max,
            memory_mb_min=memory_min,
            memory_mb_max=memory_max,
            age_seconds=0,
        ),
    )
    detector = Detector((*DEFAULT_RULES, extra, bounds))
    for compiled in detector._compiled:
        fast = _selects(compiled, p, p.command, T0.timestamp())
        assert fast == all(c.held for c in _check(compiled, p, T0)), compiled.rule.name
