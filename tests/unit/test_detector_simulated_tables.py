"""The default rules and safety policy over the built-in simulated process tables (Linux,
macOS, Windows): exactly the rogue processes are killable and every survivor survives."""

from __future__ import annotations

import pytest

from agents.simulation import SimulatedLab, load_table
from agents.simulation.lab import _to_info
from reaper_engine.clock import ManualClock
from reaper_engine.detector import Detector
from reaper_engine.models import OS, Finding, ProcessInfo
from reaper_engine.rules import DEFAULT_RULES
from reaper_engine.safety import SafetyPolicy, SafetySettings, Vantage
from tests.factories import T0, host_spec

# --- the built-in simulated tables --------------------------------------------------------

ALL_CASES = {
    "linux-incident": (
        OS.LINUX,
        Vantage(user="noah", uid=1000),
        {2174710, 2215386, 2256525, 4179152, 627250, 686678, 1393626, 10252},
    ),
    "linux-ci": (OS.LINUX, Vantage(user="ci", uid=1500), {48211, 39020}),
    "macos-dev": (OS.MACOS, Vantage(user="dana", uid=501), {14022, 15510, 16033, 17120}),
    "windows-dev": (OS.WINDOWS, Vantage(user="LAB\\builder"), {7010, 7424, 7600, 9900, 8100}),
}


def _table_findings(table: str) -> tuple[list[Finding], list[ProcessInfo]]:
    os, vantage, _ = ALL_CASES[table]
    spec = host_spec(table, os, options={"process_table": table})
    infos = list(SimulatedLab(clock=ManualClock(T0)).host(spec).processes())
    policy = SafetyPolicy(SafetySettings(), vantage)
    return Detector(DEFAULT_RULES).evaluate(infos, now=T0, host_id=table, policy=policy), infos


@pytest.mark.parametrize("table", sorted(ALL_CASES))
def test_builtin_table_killable_set(table: str) -> None:
    findings, infos = _table_findings(table)
    killable = {f.identity.pid for f in findings if f.killable}
    assert killable == ALL_CASES[table][2]
    assert len({f.identity.pid for f in findings}) == len(findings)
    # Every process whose note says it must survive does.
    notes = {p.pid: p.note for p in load_table(table).processes}
    must_survive = {pid for pid, note in notes.items() if note.startswith("must survive")}
    assert must_survive
    assert not must_survive & killable
    # Every rogue process (noted, not a survivor, not a zombie) is killable.
    rogue = {
        pid
        for pid, note in notes.items()
        if note and not note.startswith("must survive") and not note.startswith("zombie")
    }
    assert rogue == killable
    assert {p.pid for p in infos} >= killable


def test_linux_incident_in_detail() -> None:
    findings, _ = _table_findings("linux-incident")
    by_pid = {f.identity.pid: f for f in findings}
    assert by_pid[1543].rule == "infinite_loop"
    assert by_pid[1543].protected_by == "whitelisted:gnome-shell"
    assert by_pid[3500].rule == "hung_test"
    assert by_pid[3500].protected_by == "root_owned"
    assert by_pid[3600].rule == "orphaned_monitor"
    assert by_pid[3600].protected_by == "other_user"
    for pid in (1, 2, 812, 2210, 3000, 3100, 3200, 3300, 3700):
        assert pid not in by_pid or not by_pid[pid].killable, pid
    assert {
        pid: by_pid[pid].rule
        for pid in (2174710, 2215386, 2256525, 4179152, 627250, 686678, 1393626)
    } == {
        2174710: "infinite_loop",
        2215386: "infinite_loop",
        2256525: "infinite_loop",
        4179152: "infinite_loop",
        627250: "hung_test",
        686678: "hung_test",
        1393626: "hung_test",
    }
    # `tail -f /tmp/sprint43_ignored_tests_full.log` matches hung_test's `.*_test.*`, but
    # hung_test leaves log monitors to orphaned_monitor.
    assert by_pid[10252].rule == "orphaned_monitor"
    assert by_pid[10252].killable
    assert by_pid[2174710].reason == "infinite_loop: CPU 99.9% for 5h 12m"


def test_linux_incident_via_load_table_and_to_info_matches_the_lab() -> None:
    started = T0.timestamp()
    infos = [_to_info(p, started) for p in load_table("linux-incident").processes]
    policy = SafetyPolicy(SafetySettings(), Vantage(user="noah", uid=1000))
    findings = Detector(DEFAULT_RULES).evaluate(infos, now=T0, host_id="x", policy=policy)
    lab_findings, _ = _table_findings("linux-incident")
    assert {(f.identity.pid, f.rule, f.protected_by) for f in findings} == {
        (f.identity.pid, f.rule, f.protected_by) for f in lab_findings
    }


def test_windows_dev_in_detail() -> None:
    findings, _ = _table_findings("windows-dev")
    by_pid = {f.identity.pid: f for f in findings}
    assert by_pid[9100].rule == "memory_hog"
    assert not by_pid[9100].killable
    assert by_pid[9100].protected_by == "other_user"
    assert {pid: by_pid[pid].rule for pid in (7010, 7424, 7600, 9900, 8100)} == {
        7010: "infinite_loop",
        7424: "jest_timeout",
        7600: "orphaned_monitor",
        9900: "hung_test",
        8100: "jest_timeout",
    }
    for pid in (4, 628, 5120, 6400, 8800, 9300):
        assert pid not in by_pid or not by_pid[pid].killable, pid


def test_macos_dev_in_detail() -> None:
    findings, _ = _table_findings("macos-dev")
    by_pid = {f.identity.pid: f for f in findings}
    assert {pid: by_pid[pid].rule for pid in (14022, 15510, 16033, 17120)} == {
        14022: "infinite_loop",
        15510: "vitest_timeout",
        16033: "hung_test",
        17120: "orphaned_monitor",
    }
    for pid in (1, 88, 2301, 2400, 2500, 2600, 3100):
        assert pid not in by_pid or not by_pid[pid].killable, pid


def test_linux_ci_in_detail() -> None:
    findings, _ = _table_findings("linux-ci")
    by_pid = {f.identity.pid: f for f in findings}
    assert (by_pid[48211].rule, by_pid[39020].rule) == ("hung_test", "orphaned_monitor")
    assert 51000 not in by_pid  # the compiler at full CPU is excluded, not merely protected
    for pid in (1, 4100, 4300):
        assert pid not in by_pid or not by_pid[pid].killable, pid
