"""Terminator: every outcome of a kill attempt, against a fake transport; one audit per call."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from agents.terminator import Terminator
from reaper_engine.models import (
    Finding,
    KillOutcome,
    ProcessInfo,
)
from reaper_engine.rules import RuleAction
from reaper_engine.safety import SafetyPolicy, SafetySettings
from reaper_engine.signals import Signal
from tests.factories import T0, clock, proc
from tests.fakes import ME, FakeTransport, ListSink, finding_for

TERM_THEN_KILL = RuleAction(
    signal=Signal.SIGTERM, timeout_seconds=5, fallback_signal=Signal.SIGKILL
)
TERM_ONLY = RuleAction(signal=Signal.SIGTERM, timeout_seconds=0, fallback_signal=None)
KILL_ONLY = RuleAction(signal=Signal.SIGKILL, fallback_signal=None)
REPORT = RuleAction(type="report")


@pytest.fixture
def transport() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


def make_terminator(
    transport: FakeTransport, sink: ListSink, settings: SafetySettings | None = None
) -> Terminator:
    return Terminator(
        transport,
        SafetyPolicy(settings or SafetySettings(), ME),
        clock=clock(),
        audit=sink,
        mission_id="m1",
        task_id="t1",
    )


@pytest.fixture
def terminator(transport, sink) -> Terminator:
    return make_terminator(transport, sink)


# -- signalled ------------------------------------------------------------------------------


def test_terminated_when_it_exits_on_the_first_signal(transport, terminator):
    info = transport.add(proc(4242))

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.TERMINATED
    assert record.signals == ("SIGTERM",)
    assert record.dry_run is False
    assert record.identity.pid == 4242
    assert record.rule == "hung_test"
    assert 4242 not in transport.processes
    assert transport.attempts == [(4242, info.create_time, Signal.SIGTERM)]
    assert transport.waits == [5]  # the rule's timeout bounds the wait


def test_killed_when_it_needs_the_fallback_signal(transport, terminator):
    info = transport.add(proc(4242))
    transport.ignores_sigterm.add(4242)

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.KILLED
    assert record.signals == ("SIGTERM", "SIGKILL")
    assert "SIGKILL" in record.detail
    assert 4242 not in transport.processes
    assert [s for _, _, s in transport.attempts] == [Signal.SIGTERM, Signal.SIGKILL]
    # every signal request carries the start time the finding was made with
    assert {ct for _, ct, _ in transport.attempts} == {info.create_time}


def test_failed_when_it_survives_every_signal(transport, terminator):
    info = transport.add(proc(4242))
    transport.unkillable.add(4242)

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.FAILED
    assert record.signals == ("SIGTERM", "SIGKILL")
    assert 4242 in transport.processes


def test_failed_without_a_fallback_signal(transport, terminator):
    info = transport.add(proc(4242))
    transport.ignores_sigterm.add(4242)

    record = terminator.terminate(finding_for(info), TERM_ONLY, dry_run=False)

    assert record.outcome is KillOutcome.FAILED
    assert record.signals == ("SIGTERM",)
    assert [s for _, s in transport.sent] == [Signal.SIGTERM]  # no SIGKILL invented
    assert 4242 in transport.processes
    assert transport.waits == [2.0]  # with no fallback it still waits a minimum


def test_single_sigkill_rule_terminates(transport, terminator):
    info = transport.add(proc(4242, cpu=99.9))

    record = terminator.terminate(finding_for(info, "infinite_loop"), KILL_ONLY, dry_run=False)

    assert record.outcome is KillOutcome.TERMINATED
    assert record.signals == ("SIGKILL",)


def test_exit_between_the_wait_and_the_fallback_counts_as_terminated(transport, terminator):
    info = transport.add(proc(4242))
    transport.ignores_sigterm.add(4242)
    transport.exits_during_wait.add(4242)

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.TERMINATED
    assert record.signals == ("SIGTERM",)  # the SIGKILL found nothing to signal


# -- already gone -----------------------------------------------------------------------------


def test_already_gone_when_there_is_no_such_pid(transport, terminator):
    info = proc(4242)  # never added to the transport

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.ALREADY_GONE
    assert record.signals == ()
    assert transport.attempts == []


def test_reused_pid_is_already_gone_and_the_new_process_is_not_signalled(transport, terminator):
    original = proc(4242, age=3600)
    newcomer = transport.add(proc(4242, cmd="/usr/bin/innocent", age=10))

    record = terminator.terminate(finding_for(original), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.ALREADY_GONE
    assert "another process" in record.detail
    assert record.signals == ()
    assert transport.attempts == []
    assert transport.processes[4242] == newcomer


def test_start_time_within_tolerance_is_the_same_process(transport, terminator):
    info = transport.add(proc(4242))
    finding = finding_for(info)
    rounded = finding.model_copy(
        update={
            "identity": finding.identity.model_copy(update={"create_time": info.create_time + 0.01})
        }
    )

    record = terminator.terminate(rounded, TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.TERMINATED


def test_vanishing_between_lookup_and_signal_is_already_gone(transport, terminator):
    info = transport.add(proc(4242))
    transport.vanish_before_signal.add(4242)

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.ALREADY_GONE
    assert record.signals == ()
    assert transport.sent == []


# -- protected ----------------------------------------------------------------------------


def test_protected_when_now_root_owned(transport, terminator):
    seen = proc(4242)
    transport.add(seen.model_copy(update={"uid": 0, "user": "root"}))

    record = terminator.terminate(finding_for(seen), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.PROTECTED
    assert record.detail == "root_owned"
    assert transport.attempts == []


def test_protected_when_whitelisted_at_kill_time(transport, sink):
    info = transport.add(proc(4242, cmd="/tmp/test_loop"))
    terminator = make_terminator(
        transport, sink, SafetySettings(whitelist_processes=("test_loop",))
    )

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.PROTECTED
    assert record.detail == "whitelisted:test_loop"
    assert transport.attempts == []
    assert 4242 in transport.processes


@pytest.mark.parametrize(
    ("changes", "protection"),
    [
        ({"uid": 1001, "user": "alice"}, "other_user"),
        ({"status": "zombie"}, "zombie:parent=1"),
        ({"is_kernel_thread": True}, "kernel_thread"),
    ],
)
def test_protections_are_applied_to_the_process_as_it_is_now(
    transport, terminator, changes, protection
):
    seen = proc(4242)
    transport.add(ProcessInfo.model_validate({**seen.model_dump(), **changes}))

    record = terminator.terminate(finding_for(seen), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.PROTECTED
    assert record.detail == protection
    assert transport.attempts == []


def test_low_pid_is_protected(transport, terminator):
    info = transport.add(proc(500))
    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)
    assert record.outcome is KillOutcome.PROTECTED
    assert record.detail == "below_min_pid"
    assert transport.attempts == []


def test_report_only_rule_never_signals(transport, terminator):
    info = transport.add(proc(4242, rss_mb=20000))

    record = terminator.terminate(
        finding_for(info, "memory_hog", report_only=True), REPORT, dry_run=False
    )

    assert record.outcome is KillOutcome.PROTECTED
    assert "only reports" in record.detail
    assert transport.attempts == []
    assert 4242 in transport.processes


# -- denied -----------------------------------------------------------------------------------


def test_denied_when_the_os_refuses_the_signal(transport, terminator):
    info = transport.add(proc(4242))
    transport.denied[4242] = {Signal.SIGTERM, Signal.SIGKILL}

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.DENIED
    assert record.signals == ()
    assert "SIGTERM" in record.detail
    assert 4242 in transport.processes
    assert [s for _, _, s in transport.attempts] == [Signal.SIGTERM]  # gives up at once


def test_denied_on_the_fallback_signal(transport, terminator):
    info = transport.add(proc(4242))
    transport.ignores_sigterm.add(4242)
    transport.denied[4242] = {Signal.SIGKILL}

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)

    assert record.outcome is KillOutcome.DENIED
    assert record.signals == ("SIGTERM",)
    assert 4242 in transport.processes


# -- dry run ------------------------------------------------------------------------------


def test_dry_run_sends_no_signal(transport, terminator):
    info = transport.add(proc(4242))

    record = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=True)

    assert record.outcome is KillOutcome.DRY_RUN
    assert record.dry_run is True
    assert record.signals == ()
    assert "SIGTERM" in record.detail
    assert transport.attempts == []
    assert 4242 in transport.processes


def test_dry_run_still_applies_protections_and_identity(transport, terminator):
    protected = transport.add(proc(4243, uid=0, user="root"))
    original = proc(4244, age=3600)
    transport.add(proc(4244, age=5))  # PID reused

    first = terminator.terminate(finding_for(protected), TERM_THEN_KILL, dry_run=True)
    second = terminator.terminate(finding_for(original), TERM_THEN_KILL, dry_run=True)

    assert first.outcome is KillOutcome.PROTECTED
    assert second.outcome is KillOutcome.ALREADY_GONE
    assert first.dry_run
    assert second.dry_run
    assert transport.attempts == []


# -- audit ----------------------------------------------------------------------------------


def _scenario(name: str, transport: FakeTransport) -> tuple[Finding, RuleAction, bool]:
    info = proc(4242, age=7200)
    if name == "terminated":
        transport.add(info)
        return finding_for(info), TERM_THEN_KILL, False
    if name == "killed":
        transport.add(info)
        transport.ignores_sigterm.add(4242)
        return finding_for(info), TERM_THEN_KILL, False
    if name == "failed":
        transport.add(info)
        transport.unkillable.add(4242)
        return finding_for(info), TERM_THEN_KILL, False
    if name == "failed_no_fallback":
        transport.add(info)
        transport.ignores_sigterm.add(4242)
        return finding_for(info), TERM_ONLY, False
    if name == "already_gone":
        return finding_for(info), TERM_THEN_KILL, False
    if name == "pid_reused":
        transport.add(proc(4242, age=1))
        return finding_for(info), TERM_THEN_KILL, False
    if name == "protected":
        transport.add(info.model_copy(update={"uid": 0, "user": "root"}))
        return finding_for(info), TERM_THEN_KILL, False
    if name == "report_only":
        transport.add(info)
        return finding_for(info, "memory_hog", report_only=True), REPORT, False
    if name == "denied":
        transport.add(info)
        transport.denied[4242] = {Signal.SIGTERM}
        return finding_for(info), TERM_THEN_KILL, False
    if name == "dry_run":
        transport.add(info)
        return finding_for(info), TERM_THEN_KILL, True
    raise AssertionError(name)


AUDIT_CASES = [
    # scenario, outcome, audit action, last signal
    ("terminated", KillOutcome.TERMINATED, "kill", "SIGTERM"),
    ("killed", KillOutcome.KILLED, "kill", "SIGKILL"),
    ("failed", KillOutcome.FAILED, "kill", "SIGKILL"),
    ("failed_no_fallback", KillOutcome.FAILED, "kill", "SIGTERM"),
    ("already_gone", KillOutcome.ALREADY_GONE, "skip", None),
    ("pid_reused", KillOutcome.ALREADY_GONE, "skip", None),
    ("protected", KillOutcome.PROTECTED, "refuse", None),
    ("report_only", KillOutcome.PROTECTED, "refuse", None),
    ("denied", KillOutcome.DENIED, "kill", None),
    ("dry_run", KillOutcome.DRY_RUN, "dry_run", None),
]


@pytest.mark.parametrize(
    ("scenario", "outcome", "action", "signal"), AUDIT_CASES, ids=[c[0] for c in AUDIT_CASES]
)
def test_every_call_is_audited_exactly_once(
    transport, terminator, sink, scenario, outcome, action, signal
):
    finding, rule_action, dry_run = _scenario(scenario, transport)

    record = terminator.terminate(finding, rule_action, dry_run=dry_run)

    assert record.outcome is outcome
    [entry] = sink.records
    assert entry.action == action
    assert entry.pid == 4242
    assert entry.start_time == finding.identity.create_time
    assert entry.rule == finding.rule
    assert entry.outcome == outcome.value
    assert entry.dry_run is dry_run
    assert entry.signal == signal
    assert entry.detail == record.detail
    assert entry.hostname == "fake1"
    assert (entry.mission_id, entry.task_id) == ("m1", "t1")
    assert entry.timestamp == T0
    assert entry.priority == finding.priority.value
    assert entry.command == finding.command


def test_audit_records_accumulate_one_per_call(transport, terminator, sink):
    infos = [transport.add(proc(pid)) for pid in (5001, 5002, 5003)]
    for info in infos:
        terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)
    terminator.terminate(finding_for(infos[0]), TERM_THEN_KILL, dry_run=False)  # now gone

    assert [(r.pid, r.outcome) for r in sink.records] == [
        (5001, "terminated"),
        (5002, "terminated"),
        (5003, "terminated"),
        (5001, "already_gone"),
    ]


class SteppedMonotonic:
    """A stand-in for the terminator's ``time`` module: a monotonic clock that moves only
    when a (fake) wait is made, by exactly the seconds that wait takes."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now


class SlowToExit(FakeTransport):
    """A process takes ``exit_seconds`` to exit once signalled; a wait for one that does not
    exit lasts its whole timeout. Both on the stepped clock."""

    def __init__(self, clock: SteppedMonotonic, exit_seconds: float) -> None:
        super().__init__()
        self.clock, self.exit_seconds = clock, exit_seconds

    def wait_gone(self, pid: int, create_time: float, timeout: float) -> bool:
        gone = super().wait_gone(pid, create_time, timeout)
        self.clock.now += min(self.exit_seconds, timeout) if gone else timeout
        return gone


@pytest.mark.parametrize(
    ("ignores_sigterm", "exit_seconds", "outcome", "elapsed"),
    [
        # SIGTERM, and the process is gone 1.25 s later.
        (False, 1.25, KillOutcome.TERMINATED, 1.25),
        # SIGTERM ignored: the whole 5 s timeout, SIGKILL, then gone 1.25 s later.
        (True, 1.25, KillOutcome.KILLED, 6.25),
        # Reported to the millisecond.
        (False, 0.2346, KillOutcome.TERMINATED, 0.235),
        (False, 0.0004, KillOutcome.TERMINATED, 0.0),
    ],
)
def test_elapsed_seconds_is_the_time_the_process_took_to_exit(
    monkeypatch, sink, ignores_sigterm, exit_seconds, outcome, elapsed
):
    stepped = SteppedMonotonic()
    monkeypatch.setattr("agents.terminator.time", stepped)
    transport = SlowToExit(stepped, exit_seconds)
    info = transport.add(proc(4242))
    if ignores_sigterm:
        transport.ignores_sigterm.add(4242)
    record = make_terminator(transport, sink).terminate(
        finding_for(info), TERM_THEN_KILL, dry_run=False
    )
    assert record.outcome is outcome
    assert record.elapsed_seconds == elapsed
    assert sink.records[-1].outcome == outcome.value


def test_elapsed_seconds_is_zero_without_any_wait(monkeypatch, transport, terminator):
    stepped = SteppedMonotonic()
    monkeypatch.setattr("agents.terminator.time", stepped)
    info = transport.add(proc(4242))
    refused = terminator.terminate(finding_for(info), REPORT, dry_run=False)
    rehearsed = terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=True)
    assert (refused.outcome, refused.elapsed_seconds) == (KillOutcome.PROTECTED, 0.0)
    assert (rehearsed.outcome, rehearsed.elapsed_seconds) == (KillOutcome.DRY_RUN, 0.0)


def test_audit_record_names_the_config_file_and_rounds_memory():
    transport = FakeTransport()
    info = transport.add(proc(5000, rss_mb=3.3499994))
    sink = ListSink()
    terminator = Terminator(
        transport,
        SafetyPolicy(SafetySettings(), ME),
        clock=clock(),
        audit=sink,
        config_file="/home/noah/.config/reaper/reaper.toml",
    )
    terminator.terminate(finding_for(info), TERM_THEN_KILL, dry_run=False)
    [entry] = sink.records
    assert entry.config_file == "/home/noah/.config/reaper/reaper.toml"
    assert entry.memory_mb == 3.35


@pytest.mark.parametrize("level", ["info", "error"])
def test_each_decision_is_logged_at_the_rules_log_level(level):
    transport = FakeTransport()
    info = transport.add(proc(5000))
    terminator = Terminator(transport, SafetyPolicy(SafetySettings(), ME), clock=clock())
    with capture_logs() as logs:
        terminator.terminate(finding_for(info), RuleAction(log_level=level), dry_run=True)
    [decision] = [e for e in logs if e["event"] == "kill_decision"]
    assert decision["log_level"] == level
    assert (decision["pid"], decision["outcome"], decision["dry_run"]) == (5000, "dry_run", True)
