"""The default rules of reaper_engine/rules.py through reaper_engine/detector.py: for each
rule, a match (with its priority, reason and matched checks) and its near misses."""

from __future__ import annotations

import pytest

from reaper_engine.models import Priority, ProcessInfo
from reaper_engine.rules import DEFAULT_RULES
from tests.factories import proc, with_history
from tests.unit.detector_helpers import DAY, HOUR, evaluate, rule_of


def test_default_rules_are_the_documented_set() -> None:
    assert [r.name for r in DEFAULT_RULES] == [
        "infinite_loop",
        "zombie_test_binary",
        "hung_test",
        "vitest_timeout",
        "jest_timeout",
        "memory_hog",
        "orphaned_monitor",
    ]


# --- one test per default rule: a match and near misses -----------------------------------


def test_infinite_loop_matches_sustained_high_cpu() -> None:
    p = proc(cmd="/home/noah/bin/spinner --forever", cpu=99.9, age=18720)
    [finding] = evaluate(p)
    assert finding.rule == "infinite_loop"
    assert finding.priority is Priority.CRITICAL
    assert finding.killable
    assert finding.reason == "infinite_loop: CPU 99.9% for 5h 12m"
    assert finding.matched == (
        "cpu 99.9% >= 90%",
        "sustained 99.9% over its lifetime of 5h 12m (>= 90% for 5m 0s)",
        "command not excluded",
    )


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="/home/noah/bin/spinner", cpu=89.9, age=18720), id="cpu-below-90"),
        pytest.param(proc(cmd="/home/noah/bin/spinner", cpu=99.9, age=299), id="age-below-5min"),
        pytest.param(
            # Spinning right now, but only just started to: lifetime average is 20%.
            proc(cmd="/home/noah/bin/spinner", cpu=99.9, age=3600, cpu_time=720),
            id="not-sustained",
        ),
    ],
)
def test_infinite_loop_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


def test_infinite_loop_at_exact_thresholds() -> None:
    assert rule_of(proc(cmd="/home/noah/bin/spinner", cpu=90.0, age=300)) == "infinite_loop"


@pytest.mark.parametrize(
    ("cmd", "pattern"),
    [("/tmp/test_ch04_debug", "^/tmp/test_"), ("/tmp/build/parser_test", "^/tmp/.*_test$")],
)
def test_zombie_test_binary_matches_old_tmp_test_binaries(cmd: str, pattern: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=0.5, age=HOUR))
    assert finding.rule == "zombie_test_binary"
    assert finding.priority is Priority.CRITICAL
    assert finding.killable
    assert finding.matched == (
        "age 1h 0m >= 1h 0m",
        f"command matches {pattern!r}",
        "command not excluded",
    )
    assert finding.reason == "zombie_test_binary: age 1h 0m, CPU 0.5%"


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="/tmp/test_ch04_debug", age=HOUR - 1), id="younger-than-1h"),
        pytest.param(proc(cmd="/home/x/tmp/test_thing", age=2 * HOUR), id="not-under-/tmp"),
        pytest.param(proc(cmd="/tmp/parser_test.log", age=2 * HOUR), id="not-ending-_test"),
    ],
)
def test_zombie_test_binary_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


@pytest.mark.parametrize(
    "cmd",
    [
        "cargo test --workspace",
        "/home/noah/.cargo/bin/cargo-nextest nextest run",
        "python3 -m pytest tests/test_sync.py",
        "pmat mutation test",
        "/srv/build/deps/parser_tests-5f1e2a",
        "cargo proptest",
    ],
)
def test_hung_test_matches_old_idle_test_processes(cmd: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=0.2, age=4 * HOUR + 1))
    assert finding.rule == "hung_test"
    assert finding.priority is Priority.HIGH
    assert finding.reason.startswith("hung_test: age 4h 0m, CPU 0.2%")


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="cargo test --workspace", cpu=0.2, age=4 * HOUR - 1), id="young"),
        pytest.param(proc(cmd="cargo test --workspace", cpu=5.1, age=5 * HOUR), id="busy"),
        pytest.param(proc(cmd="cargo bench", cpu=0.0, age=5 * HOUR), id="not-a-test"),
    ],
)
def test_hung_test_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


def test_hung_test_at_exact_cpu_limit() -> None:
    assert rule_of(proc(cmd="cargo test", cpu=5.0, age=4 * HOUR)) == "hung_test"


@pytest.mark.parametrize(
    "cmd",
    [
        "node /home/dana/web/node_modules/.bin/vitest run",
        "vitest",
        "node C:\\web\\node_modules\\vitest\\vitest.mjs run",
    ],
)
def test_vitest_timeout(cmd: str) -> None:
    assert rule_of(proc(cmd=cmd, cpu=0.3, age=300)) == "vitest_timeout"
    assert rule_of(proc(cmd=cmd, cpu=0.3, age=299)) is None


def test_vitest_timeout_ignores_lookalikes() -> None:
    assert rule_of(proc(cmd="node /x/vitest-config-builder", age=HOUR)) is None


@pytest.mark.parametrize(
    "cmd",
    [
        "node /web/node_modules/jest/bin/jest.js --ci",
        "npx jest",
        "npm test",
        "C:\\Windows\\system32\\cmd.exe /c npm test",
        "npm.cmd test -- --watch=false",
    ],
)
def test_jest_timeout(cmd: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=1.0, age=600))
    assert (finding.rule, finding.priority) == ("jest_timeout", Priority.HIGH)
    assert rule_of(proc(cmd=cmd, cpu=1.0, age=599)) is None


def test_jest_timeout_ignores_lookalikes() -> None:
    assert rule_of(proc(cmd="node jester.js", age=HOUR)) is None
    assert rule_of(proc(cmd="npm testify", age=HOUR)) is None


def test_memory_hog_reports_and_never_kills() -> None:
    [finding] = evaluate(proc(cmd="/usr/lib/postgresql/16/bin/postgres", cpu=4, rss_mb=10240))
    assert finding.rule == "memory_hog"
    assert finding.priority is Priority.MEDIUM
    assert finding.report_only
    assert not finding.killable
    assert finding.reason == "memory_hog: memory 10240 MB (age 1h 0m)"
    assert finding.matched == ("memory 10240 MB >= 10240 MB", "command not excluded")


def test_memory_hog_near_miss() -> None:
    assert rule_of(proc(cmd="/usr/lib/postgresql/16/bin/postgres", rss_mb=10239.5)) is None


@pytest.mark.parametrize(
    "cmd",
    [
        "tail -f /var/log/syslog",
        "/usr/bin/tail -f /home/noah/app.txt",
        "watch -n 5 kubectl get pods",
        "less /var/log/app.log",
        "powershell.exe -Command Get-Content C:\\logs\\nightly.log -Wait",
    ],
)
def test_orphaned_monitor(cmd: str) -> None:
    [finding] = evaluate(proc(cmd=cmd, cpu=0.0, age=DAY))
    assert (finding.rule, finding.priority) == ("orphaned_monitor", Priority.LOW)
    assert finding.killable


@pytest.mark.parametrize(
    "p",
    [
        pytest.param(proc(cmd="tail -f /var/log/syslog", cpu=0.0, age=DAY - 1), id="young"),
        pytest.param(proc(cmd="tail -f /var/log/syslog", cpu=1.1, age=2 * DAY), id="busy"),
        pytest.param(proc(cmd="tail -n 20 /var/log/syslog", cpu=0.0, age=2 * DAY), id="no-follow"),
        pytest.param(proc(cmd="stopwatch", cpu=0.0, age=2 * DAY), id="watch-lookalike"),
    ],
)
def test_orphaned_monitor_near_misses(p: ProcessInfo) -> None:
    assert rule_of(p) is None


def test_scan_history_from_the_factory_is_what_window_rules_read():
    # The helper a new window rule's tests use (docs/development.md).
    idle = with_history(proc(cmd="/tmp/test_loop", age=2 * HOUR, cpu_time=30.0), HOUR)
    assert idle.window_cpu(HOUR) == (0.0, 0.0)
    busy = with_history(proc(cmd="/tmp/test_loop", age=2 * HOUR, cpu_time=30.0), 100, used=50)
    assert busy.window_cpu(100) == (50.0, 50.0)
    assert proc(cmd="/tmp/test_loop").window_cpu(1) is None  # one look: no window
