"""CPU sampling from deltas; group/tree kill scope; the baseline and descendants scope modes."""

from __future__ import annotations

import pytest

from agents.cpu_sampler import CpuSampler, sampled
from agents.terminator import Terminator, scope_members
from reaper_engine.detector import Detector
from reaper_engine.models import KillOutcome, Priority
from reaper_engine.rules import Rule, RuleAction, RuleConditions
from reaper_engine.safety import (
    SafetyPolicy,
    SafetySettings,
    Vantage,
    descendants_of,
    policy_for,
)
from reaper_engine.signals import Signal
from tests.factories import T0, clock, proc
from tests.fakes import ME, FakeTransport, ListSink, finding_for

# -- CPU sampling ----------------------------------------------------------------------------


def test_cpu_percent_comes_from_cpu_time_deltas_per_identity():
    sampler = CpuSampler()
    busy = proc(5000, cpu_time=100.0)
    idle = proc(5001, cpu_time=50.0)
    first = sampler.annotate([busy, idle], taken_at=1000.0)  # before they started: age <= 0
    assert [p.cpu_percent for p in first] == [0.0, 0.0]  # no history, no age: nothing invented
    later = [busy.model_copy(update={"cpu_time": 101.8}), idle]
    second = sampler.annotate(later, taken_at=1002.0)
    assert [p.cpu_percent for p in second] == [90.0, 0.0]


def test_a_process_without_history_gets_its_lifetime_average_not_zero():
    # The daemon's usual case: most of the table is known, a newcomer is not. psutil would
    # say 0.0 and hide a runaway loop that started since the last look.
    sampler = CpuSampler()
    now = T0.timestamp()
    known = proc(5000, cpu_time=10.0)
    sampler.annotate([known], taken_at=now - 5)
    newcomer = proc(5001, age=4.0, cpu_time=3.0)  # 3 s of CPU in 4 s of life
    _, fresh = sampler.annotate([known, newcomer], taken_at=now)
    assert fresh.cpu_percent == 75.0
    assert fresh.cpu_samples == ((now, 3.0),)


def test_two_cores_read_200_percent_and_a_reused_pid_starts_fresh():
    sampler = CpuSampler()
    sampler.annotate([proc(5000, cpu_time=10.0)], taken_at=0.0)
    [hot] = sampler.annotate([proc(5000, cpu_time=12.0)], taken_at=1.0)
    assert hot.cpu_percent == 200.0
    newcomer = proc(5000, cpu_time=4.0, age=5)  # same PID, different start time
    [fresh] = sampler.annotate([newcomer], taken_at=T0.timestamp())
    assert fresh.cpu_percent == 80.0  # its own lifetime, not a delta against 12 s of another


def test_one_shot_scan_takes_a_short_sample_instead_of_reporting_zero():
    sampler = CpuSampler()
    reads = iter([([proc(5000, cpu_time=10.0)], 100.0), ([proc(5000, cpu_time=10.2)], 100.25)])
    waited: list[float] = []
    [p] = sampled(lambda: next(reads), sampler, sample_seconds=0.25, wait=waited.append)
    assert waited == [0.25]
    assert p.cpu_percent == 80.0


def test_scans_with_history_do_not_sample_again():
    sampler = CpuSampler()
    sampler.annotate([proc(5000, cpu_time=10.0)], taken_at=100.0)
    waited: list[float] = []
    [p] = sampled(
        lambda: ([proc(5000, cpu_time=40.0)], 160.0),
        sampler,
        sample_seconds=0.25,
        wait=waited.append,
    )
    assert waited == []
    assert p.cpu_percent == 50.0


# -- group and tree scope --------------------------------------------------------------------

# 6000 ─┬─ 6001 ─── 6003
#       └─ 6002              6010 is 6000's process-group sibling, not a descendant
TABLE = [
    proc(6000, ppid=1, pgid=6000),
    proc(6001, ppid=6000, pgid=6000),
    proc(6002, ppid=6000, pgid=6000),
    proc(6003, ppid=6001, pgid=6000),
    proc(6010, ppid=1, pgid=6000),
    proc(7000, ppid=1, pgid=7000),
]


def test_tree_members_are_descendants_deepest_first():
    members = [p.pid for p in scope_members(6000, "tree", TABLE)]
    assert sorted(members) == [6001, 6002, 6003]
    assert members[0] == 6003


def test_group_members_share_the_process_group():
    assert sorted(p.pid for p in scope_members(6000, "group", TABLE)) == [6001, 6002, 6003, 6010]
    assert scope_members(6000, "process", TABLE) == []


def test_tree_kill_ends_children_first_and_spares_a_protected_member():
    transport = FakeTransport()
    for p in TABLE:
        transport.add(p)
    vim = transport.add(proc(6004, ppid=6002, pgid=6000, cmd="vim notes.txt", name="vim"))
    table = [*TABLE, vim]
    sink = ListSink()
    terminator = Terminator(
        transport, SafetyPolicy(SafetySettings(), ME), clock=clock(), audit=sink
    )
    action = RuleAction(signal=Signal.SIGTERM, scope="tree")
    records = terminator.terminate_scope(
        finding_for(TABLE[0]), action, dry_run=False, processes=table
    )
    by_pid = {r.identity.pid: r.outcome for r in records}
    # vim is protected (whitelisted): left out of the tree, not even looked at again.
    assert by_pid == {
        6000: KillOutcome.TERMINATED,
        6001: KillOutcome.TERMINATED,
        6002: KillOutcome.TERMINATED,
        6003: KillOutcome.TERMINATED,
    }
    signalled = [pid for pid, _ in transport.sent]
    assert signalled[-1] == 6000  # the leader last
    assert signalled.index(6003) < signalled.index(6001)  # grandchild before child
    assert 6004 in transport.processes
    assert 6010 in transport.processes
    assert 7000 in transport.processes
    assert len(sink.records) == 4  # one audit line per decision, members included


def test_a_protected_leader_keeps_its_whole_tree_safe():
    transport = FakeTransport()
    editor = transport.add(proc(6100, ppid=1, pgid=6100, cmd="vim main.rs", name="vim"))
    server = transport.add(proc(6101, ppid=6100, pgid=6100, cmd="rust-analyzer"))
    terminator = Terminator(transport, SafetyPolicy(SafetySettings(), ME), clock=clock())
    # As a careless (or compromised) planner could: approve the protected editor itself.
    records = terminator.terminate_scope(
        finding_for(editor),
        RuleAction(scope="tree"),
        dry_run=False,
        processes=[editor, server],
    )
    assert [(r.identity.pid, r.outcome) for r in records] == [(6100, KillOutcome.PROTECTED)]
    assert transport.sent == []


def test_nothing_below_a_protected_member_is_touched():
    transport = FakeTransport()
    runner = transport.add(proc(6200, ppid=1, pgid=6200, cmd="/tmp/test_runner"))
    editor = transport.add(proc(6201, ppid=6200, pgid=6200, cmd="vim x", name="vim"))
    helper = transport.add(proc(6202, ppid=6201, pgid=6200, cmd="rust-analyzer"))
    terminator = Terminator(transport, SafetyPolicy(SafetySettings(), ME), clock=clock())
    records = terminator.terminate_scope(
        finding_for(runner),
        RuleAction(scope="tree"),
        dry_run=False,
        processes=[runner, editor, helper],
    )
    assert [r.identity.pid for r in records] == [6200]
    assert [pid for pid, _ in transport.sent] == [6200]


def test_a_scope_larger_than_the_budget_is_refused_whole():
    transport = FakeTransport()
    for p in TABLE:
        transport.add(p)
    terminator = Terminator(transport, SafetyPolicy(SafetySettings(), ME), clock=clock())
    records = terminator.terminate_scope(
        finding_for(TABLE[0]),
        RuleAction(scope="tree"),
        dry_run=False,
        processes=TABLE,
        budget=3,
    )
    [refused] = records
    assert refused.outcome is KillOutcome.PROTECTED
    assert refused.detail.startswith("kill_budget")
    assert transport.sent == []


def test_no_signal_after_the_deadline_not_even_the_fallback():
    c = clock()
    transport = FakeTransport()
    stubborn = transport.add(proc(6300))
    transport.ignores_sigterm.add(6300)
    terminator = Terminator(
        transport, SafetyPolicy(SafetySettings(), ME), clock=c, deadline=c.now()
    )
    record = terminator.terminate(finding_for(stubborn), RuleAction(), dry_run=False)
    assert record.outcome is KillOutcome.FAILED
    assert "deadline" in record.detail
    assert transport.sent == []


# -- scope modes (seed 002) ------------------------------------------------------------------


def test_descendants_of_walks_the_whole_subtree():
    assert descendants_of(6000, TABLE) == {6001, 6002, 6003}
    assert descendants_of(7000, TABLE) == frozenset()


def test_descendants_scope_allows_only_the_subtree_of_the_root():
    settings = SafetySettings(scope="descendants", scope_root_pid=6000)
    policy = policy_for(settings, ME, TABLE)
    assert policy.protection_for(TABLE[3]) is None  # 6003, a grandchild
    assert policy.protection_for(TABLE[4]) == "outside_scope:descendants"  # 6010
    assert policy.protection_for(TABLE[0]) == "outside_scope:descendants"  # the root itself


def test_descendants_scope_defaults_to_the_reapers_own_children():
    me = Vantage(user="noah", uid=1000, pid=6001)
    policy = policy_for(SafetySettings(scope="descendants"), me, TABLE)
    assert policy.protection_for(TABLE[3]) is None
    assert policy.protection_for(TABLE[2]) == "outside_scope:descendants"


def test_scope_modes_fail_closed_without_their_data():
    unknown_root = Vantage(user="noah", uid=1000)  # a remote host: no pid of ours there
    assert (
        policy_for(SafetySettings(scope="descendants"), unknown_root, TABLE).protection_for(
            TABLE[3]
        )
        == "outside_scope:descendants"
    )
    no_baseline = SafetyPolicy(SafetySettings(scope="baseline"), ME)
    assert no_baseline.protection_for(TABLE[3]) == "outside_scope:no_baseline"


def test_baseline_scope_spares_whatever_started_before_the_baseline():
    baseline_at = T0.timestamp() - 60
    old = proc(6500, age=7200)
    just_before = proc(6501, age=61)  # never listed anywhere: still pre-existing by its age
    new = proc(6502, age=10)
    policy = SafetyPolicy(
        SafetySettings(scope="baseline"), Vantage(user="noah", uid=1000, baseline_at=baseline_at)
    )
    assert policy.protection_for(old) == "outside_scope:baseline"
    assert policy.protection_for(just_before) == "outside_scope:baseline"
    assert policy.protection_for(new) is None


def test_scope_root_pid_requires_the_descendants_scope():
    with pytest.raises(ValueError, match="scope_root_pid"):
        SafetySettings(scope_root_pid=1234)


def test_a_second_look_moments_later_measures_over_the_minimum_window():
    sampler = CpuSampler(min_window=0.2)
    sampler.annotate([proc(5000, cpu_time=10.0)], taken_at=100.0)
    [scan] = sampler.annotate([proc(5000, cpu_time=10.25)], taken_at=100.25)
    assert scan.cpu_percent == 100.0
    # 5 ms later the tick counter has not moved; measured against the 100.0 sample instead.
    [reap] = sampler.annotate([proc(5000, cpu_time=10.25)], taken_at=100.255)
    assert reap.cpu_percent == pytest.approx(98.0, abs=0.1)


# -- windows over the sampler's history ------------------------------------------------------


def _history(*looks: tuple[float, float], **kw) -> list:
    """Feed one process's (wall, cpu_time) looks through a sampler; return the last annotation."""
    sampler = CpuSampler(checkpoint_every=kw.pop("every", 20.0), **kw)
    out = []
    for wall, cpu in looks:
        [out] = sampler.annotate([proc(5000, cpu_time=cpu, age=3600)], taken_at=wall)
    return out


def test_sustained_load_is_measured_over_the_window_when_history_covers_it():
    # Idle for 50 minutes, then spinning for the last 6: the lifetime average is low,
    # yet the last 5 minutes were at 100%.
    looks = [(0.0, 10.0), (3000.0, 10.0)] + [(3000.0 + 60 * i, 10.0 + 60 * i) for i in range(1, 7)]
    p = _history(*looks)
    percent, used = p.window_cpu(300)
    assert percent == pytest.approx(100.0)
    assert used >= 300  # cpu seconds over a window of at least 300 s
    rule = Rule(
        name="hot",
        priority=Priority.CRITICAL,
        conditions=RuleConditions(cpu_percent_min=90, duration_seconds=300),
    )
    [finding] = Detector([rule]).evaluate([p], now=T0, host_id="h")
    assert "over the last 5m 0s" in finding.matched[1]


def test_without_history_sustained_falls_back_to_the_lifetime_average():
    busy = proc(5000, cpu=99.0, age=600)  # steady 99% for 10 minutes, one look only
    assert busy.window_cpu(300) is None
    rule = Rule(name="hot", conditions=RuleConditions(cpu_percent_min=90, duration_seconds=300))
    [finding] = Detector([rule]).evaluate([busy], now=T0, host_id="h")
    assert "lifetime" in finding.matched[1]


def test_idle_needs_no_cpu_progress_over_the_window():
    rule = Rule(name="idle", conditions=RuleConditions(idle_seconds=600))
    detector = Detector([rule])
    idle = _history((0.0, 5.0), (400.0, 5.0), (700.0, 5.0))
    busy = _history((0.0, 5.0), (400.0, 5.0), (700.0, 5.5))
    too_short = _history((0.0, 5.0), (300.0, 5.0))
    assert [f.identity.pid for f in detector.evaluate([idle], now=T0, host_id="h")] == [5000]
    assert detector.evaluate([busy], now=T0, host_id="h") == []
    assert detector.evaluate([too_short], now=T0, host_id="h") == []
    never_ran = proc(5001, cpu_time=0.0, age=3600)
    assert len(detector.evaluate([never_ran], now=T0, host_id="h")) == 1


def test_checkpoints_stay_bounded_and_keep_covering_the_oldest_time():
    sampler = CpuSampler(checkpoint_every=10.0, max_checkpoints=8)
    for i in range(200):
        [p] = sampler.annotate([proc(5000, cpu_time=float(i), age=9999)], taken_at=10.0 * i)
    assert len(p.cpu_samples) <= 8
    assert p.cpu_samples[-1] == (1990.0, 199.0)
    assert p.cpu_samples[0][0] <= 1990.0 - 1000  # coverage grew as resolution halved
    assert "cpu_samples" not in p.model_dump()  # working memory, never sent in results


def test_a_dry_run_of_a_tree_kill_rehearses_every_member():
    transport = FakeTransport()
    for p in TABLE:
        transport.add(p)
    terminator = Terminator(transport, SafetyPolicy(SafetySettings(), ME), clock=clock())
    records = terminator.terminate_scope(
        finding_for(TABLE[0]), RuleAction(scope="tree"), dry_run=True, processes=TABLE
    )
    assert sorted(r.identity.pid for r in records) == [6000, 6001, 6002, 6003]
    assert {r.outcome for r in records} == {KillOutcome.DRY_RUN}
    assert transport.sent == []


def test_manual_is_a_reserved_rule_name():
    with pytest.raises(ValueError, match="reserved"):
        Rule(name="manual", conditions=RuleConditions(age_seconds=0))
