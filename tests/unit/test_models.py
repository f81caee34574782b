"""reaper_engine/models/*: JSON round trips, validation, derived properties; infra/codec."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from infra.codec import decode, encode
from reaper_engine import SCHEMA_VERSION
from reaper_engine.errors import MessageDecodeError
from reaper_engine.models import (
    OS,
    Action,
    AgentType,
    Finding,
    HostSpec,
    HostState,
    HostStatus,
    Inventory,
    KillOutcome,
    KillRecord,
    MissionKind,
    MissionOptions,
    MissionState,
    MissionStatus,
    MissionSummary,
    PendingTask,
    Priority,
    ProcessIdentity,
    ProcessInfo,
    ProcessState,
    ResultEvent,
    ResultStatus,
    Task,
    TaskRecord,
    TransportKind,
)
from reaper_engine.models.mission import LAST_TASKS_KEPT
from reaper_engine.models.task import TAIL_CHARS
from tests.factories import T0, host_spec, make_state, make_task, proc, result_for


def _identity(pid: int = 4242, host_id: str = "h1") -> ProcessIdentity:
    return ProcessIdentity(host_id=host_id, pid=pid, create_time=T0.timestamp() - 3600.5)


def _finding(pid: int = 4242, **kw: object) -> Finding:
    fields: dict[str, object] = {
        "identity": _identity(pid),
        "rule": "infinite_loop",
        "priority": Priority.CRITICAL,
        "reason": "infinite_loop: CPU 99.9% for 1h 0m",
        "matched": ("cpu 99.9% >= 90%",),
        "command": "/tmp/test_loop",
        "name": "test_loop",
        "user": "noah",
        "cpu_percent": 99.9,
        "rss_mb": 3.3,
        "age_seconds": 3600.5,
    }
    fields.update(kw)
    return Finding.model_validate(fields)


def _kill(pid: int = 4242, outcome: KillOutcome = KillOutcome.TERMINATED) -> KillRecord:
    return KillRecord(
        identity=_identity(pid),
        rule="infinite_loop",
        priority=Priority.CRITICAL,
        command="/tmp/test_loop",
        outcome=outcome,
        signals=("SIGTERM", "SIGKILL"),
        detail="gone after SIGKILL",
        elapsed_seconds=5.25,
        cpu_percent=99.9,
    )


# --- JSON round trips ---------------------------------------------------------------------


def test_task_round_trips_through_json() -> None:
    host = host_spec("lnx-01", tags=("dev", "ci"), options={"process_table": "linux-ci"})
    task = make_task(
        Action.REAP,
        host=host,
        params={"approved": [{"host_id": "lnx-01", "pid": 7, "create_time": 1.5}]},
        attempt=3,
        not_before=T0 + timedelta(seconds=2),
        dry_run=True,
    )
    payload = task.model_dump_json()
    again = Task.model_validate_json(payload)
    assert again == task
    assert json.loads(payload)["schema_version"] == SCHEMA_VERSION
    assert again.agent_type is AgentType.LINUX
    assert again.target.options == {"process_table": "linux-ci"}


def test_result_event_round_trips_through_json() -> None:
    task = make_task(Action.SCAN, task_id="t-scan")
    event = result_for(
        task,
        ResultStatus.PARTIAL,
        summary="2 findings",
        stdout_tail="out",
        stderr_tail="err",
        data={"processes_scanned": 12, "findings": [_finding().model_dump(mode="json")]},
        logs_ref="logs/t-scan",
        ts=T0,
        retriable=True,
        error_code="HOST_UNREACHABLE",
    )
    payload = event.model_dump_json()
    assert ResultEvent.model_validate_json(payload) == event
    doc = json.loads(payload)
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["event_type"] == "task.result"
    assert (doc["task_id"], doc["action"], doc["status"]) == ("t-scan", "scan", "partial")


def test_mission_state_with_hosts_tasks_findings_and_kills_round_trips() -> None:
    win = host_spec("win-01", OS.WINDOWS, user="LAB\\builder")
    state = make_state(host_spec("lnx-01"), win, options=MissionOptions(dry_run=True))
    state.status = MissionStatus.RUNNING
    host = state.hosts["lnx-01"]
    host.findings = [_finding(1), _finding(2, protected_by="whitelisted:vim")]
    host.kills = [_kill(1), _kill(3, KillOutcome.DENIED)]
    host.survivors = [_identity(9)]
    host.facts = {"hostname": "dev", "cpu_count": 16}
    host.last_status = HostStatus.HEALTHY
    host.remember_task("t1")
    state.hosts["win-01"].locked = True
    state.hosts["win-01"].lock_reason = "3 failures"
    task = make_task(Action.SCAN, host=win, task_id="t2")
    state.pending_tasks = {"t2": PendingTask(task=task, dispatched_at=T0)}
    state.completed_tasks = {
        "t1": TaskRecord(
            task_id="t1",
            host_id="lnx-01",
            action=Action.DISCOVER,
            attempt=1,
            status=ResultStatus.SUCCESS,
            finished_at=T0,
        )
    }
    state.counters.findings = 2
    state.counters.kills = 1
    state.created_at = state.updated_at = T0

    payload = state.model_dump_json()
    again = MissionState.model_validate_json(payload)
    assert again == state
    assert json.loads(payload)["schema_version"] == SCHEMA_VERSION
    assert again.hosts["lnx-01"].findings[1].protected_by == "whitelisted:vim"
    assert again.pending_tasks["t2"].task.target.os is OS.WINDOWS


def test_host_spec_and_inventory_round_trip() -> None:
    inv = Inventory(
        name="lab",
        hosts=(
            host_spec("a", tags=("x",), options={"fail": "flaky:1"}),
            HostSpec(
                host_id="b", os=OS.MACOS, transport=TransportKind.SSH, address="10.0.0.2", port=22
            ),
        ),
    )
    assert Inventory.model_validate_json(inv.model_dump_json()) == inv
    spec = inv.hosts[1]
    assert HostSpec.model_validate_json(spec.model_dump_json()) == spec


# --- closed vocabularies ------------------------------------------------------------------


def test_task_rejects_unknown_action() -> None:
    task = make_task()
    doc = task.model_dump(mode="json") | {"action": "explode"}
    with pytest.raises(ValidationError, match="action"):
        Task.model_validate(doc)


def test_result_event_rejects_unknown_status() -> None:
    with pytest.raises(ValidationError, match="status"):
        result_for(make_task(), "ok")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "field", "bad"),
    [
        (HostSpec, "os", "solaris"),
        (HostSpec, "transport", "telnet"),
    ],
)
def test_host_spec_rejects_free_strings_in_enums(model: type, field: str, bad: str) -> None:
    fields = {"host_id": "h1", "os": "linux", field: bad}
    with pytest.raises(ValidationError, match=field):
        model.model_validate(fields)


def test_enum_fields_parse_from_their_values() -> None:
    task = Task.model_validate_json(make_task().model_dump_json())
    assert task.action is Action.SCAN
    assert MissionState.model_validate({"mission_id": "m", "kind": "audit", "hosts": {}}).kind is (
        MissionKind.AUDIT
    )


# --- ResultEvent tails --------------------------------------------------------------------


def test_tails_are_truncated_to_tail_chars_keeping_the_end() -> None:
    head = "HEAD" * 100
    end = "x" * (TAIL_CHARS - 3) + "END"
    event = result_for(make_task(), stdout_tail=head + end, stderr_tail=head + end)
    assert len(event.stdout_tail) == TAIL_CHARS
    assert event.stdout_tail == end
    assert event.stdout_tail.endswith("END")
    assert event.stderr_tail == end
    assert "HEAD" not in event.stdout_tail


def test_short_tails_are_kept_whole() -> None:
    event = result_for(make_task(), stdout_tail="hello", stderr_tail="")
    assert (event.stdout_tail, event.stderr_tail) == ("hello", "")


def test_tails_are_truncated_when_decoded_from_json_too() -> None:
    event = result_for(make_task())
    doc = event.model_dump(mode="json") | {"stderr_tail": "a" * 10 + "b" * TAIL_CHARS}
    again = ResultEvent.model_validate_json(json.dumps(doc))
    assert again.stderr_tail == "b" * TAIL_CHARS


# --- Task timing --------------------------------------------------------------------------


def test_task_is_expired_at_and_after_its_deadline() -> None:
    task = make_task(timeout=60)
    assert not task.is_expired(T0)
    assert not task.is_expired(T0 + timedelta(seconds=59.999))
    assert task.is_expired(T0 + timedelta(seconds=60))
    assert task.is_expired(T0 + timedelta(hours=1))


def test_task_is_due_without_backoff_and_after_not_before() -> None:
    assert make_task().is_due(T0 - timedelta(days=1))
    task = make_task(not_before=T0 + timedelta(seconds=5))
    assert not task.is_due(T0)
    assert not task.is_due(T0 + timedelta(seconds=4.9))
    assert task.is_due(T0 + timedelta(seconds=5))


def test_task_is_frozen_and_requires_aware_datetimes() -> None:
    task = make_task()
    with pytest.raises(ValidationError):
        task.attempt = 2  # type: ignore[misc]
    doc = task.model_dump() | {"deadline": T0.replace(tzinfo=None)}
    with pytest.raises(ValidationError, match="deadline"):
        Task.model_validate(doc)


# --- HostSpec / Inventory -----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_id", ["", "-lead", ".lead", "has space", "a/b", "x" * 64, "ünï", "semi;colon"]
)
def test_host_spec_rejects_bad_host_ids(bad_id: str) -> None:
    with pytest.raises(ValidationError, match="host_id"):
        HostSpec(host_id=bad_id, os=OS.LINUX)


@pytest.mark.parametrize("good_id", ["a", "x" * 63, "lnx-dev-01", "WIN_BUILD.01", "9lives"])
def test_host_spec_accepts_good_host_ids(good_id: str) -> None:
    assert HostSpec(host_id=good_id, os=OS.LINUX).host_id == good_id


@pytest.mark.parametrize("transport", [TransportKind.SSH, TransportKind.WINRM])
def test_remote_transports_need_an_address(transport: TransportKind) -> None:
    with pytest.raises(ValidationError, match="needs an address"):
        HostSpec(host_id="h1", os=OS.LINUX, transport=transport)
    with pytest.raises(ValidationError, match="needs an address"):
        HostSpec(host_id="h1", os=OS.LINUX, transport=transport, address="")
    ok = HostSpec(host_id="h1", os=OS.LINUX, transport=transport, address="10.0.0.1")
    assert ok.address == "10.0.0.1"


def test_local_and_simulated_transports_need_no_address() -> None:
    assert HostSpec(host_id="h", os=OS.LINUX, transport=TransportKind.LOCAL).address is None
    assert HostSpec(host_id="h", os=OS.LINUX).transport is TransportKind.SIMULATED


@pytest.mark.parametrize(("field", "value"), [("port", 0), ("port", 65536), ("max_failures", 0)])
def test_host_spec_range_checks(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        HostSpec.model_validate({"host_id": "h", "os": "linux", field: value})


def test_host_spec_agent_type_follows_os() -> None:
    assert host_spec(os=OS.WINDOWS).agent_type is AgentType.WINDOWS
    assert host_spec(os=OS.MACOS).agent_type is AgentType.MACOS
    assert AgentType.LINUX.os is OS.LINUX


def test_inventory_rejects_duplicate_host_ids() -> None:
    with pytest.raises(ValidationError, match="duplicate host_id 'dup'"):
        Inventory(hosts=(host_spec("dup"), host_spec("other"), host_spec("dup", OS.MACOS)))


def test_inventory_needs_a_host_and_indexes_by_id() -> None:
    with pytest.raises(ValidationError, match="hosts"):
        Inventory(hosts=())
    a, b = host_spec("a"), host_spec("b")
    assert Inventory(hosts=(a, b)).by_id() == {"a": a, "b": b}


# --- ProcessInfo / ProcessIdentity / Finding ----------------------------------------------


def test_process_command_joins_argv_or_falls_back_to_name() -> None:
    assert proc(cmd="tail -f /var/log/x.log").command == "tail -f /var/log/x.log"
    kthread = ProcessInfo(pid=2, name="kthreadd", create_time=0)
    assert kthread.command == "kthreadd"


def test_process_age_seconds_never_negative() -> None:
    p = proc(age=3600)
    assert p.age_seconds(T0) == pytest.approx(3600)
    assert p.age_seconds(T0 + timedelta(seconds=10)) == pytest.approx(3610)
    assert p.age_seconds(T0 - timedelta(hours=2)) == 0.0


def test_lifetime_cpu_percent_is_cpu_time_over_age() -> None:
    p = proc(age=3600, cpu=99.0, cpu_time=1800)
    assert p.lifetime_cpu_percent(T0) == pytest.approx(50.0)
    assert proc(age=7200, cpu=100.0).lifetime_cpu_percent(T0) == pytest.approx(100.0)
    # A process created "now" (or in the future) has no lifetime average: 0, not a division error.
    assert proc(age=0, cpu_time=5).lifetime_cpu_percent(T0) == 0.0


def test_rss_mb() -> None:
    assert proc(rss_mb=512).rss_mb == pytest.approx(512)


def test_process_info_rejects_negative_pid_and_unknown_keys() -> None:
    with pytest.raises(ValidationError):
        ProcessInfo(pid=-1, create_time=0)
    with pytest.raises(ValidationError):
        ProcessInfo.model_validate({"pid": 1, "create_time": 0, "colour": "red"})


def test_process_info_round_trips_through_json_without_its_cpu_samples() -> None:
    now = T0.timestamp()
    samples = ((now - 300.0, 1500.0), (now - 60.0, 1737.0), (now, 1797.0))
    p = proc(
        4242,
        cmd="/tmp/test_loop --forever",
        cpu=99.9,
        cpu_time=1797.0,
        rss_mb=3.5,
        status=ProcessState.RUNNING,
        ppid=4000,
        pgid=4242,
        sid=3999,
        exe="/tmp/test_loop",
        cpu_samples=samples,
    )
    text = encode(p)
    assert "cpu_samples" not in json.loads(text)  # the agent's working memory stays home
    back = decode(ProcessInfo, text)
    assert back == p.model_copy(update={"cpu_samples": ()})  # the same process, no samples
    assert back != p
    assert (back.cpu_samples, p.window_cpu(60.0)) == ((), (100.0, 60.0))
    assert back.window_cpu(60.0) is None
    windows = ProcessInfo(pid=4, name="System", create_time=0, uid=None, is_kernel_thread=True)
    assert decode(ProcessInfo, encode(windows)) == windows


def test_same_process_tolerates_start_time_rounding_only() -> None:
    ident = ProcessIdentity(host_id="h", pid=100, create_time=1000.0)
    assert ident.same_process(100, 1000.0)
    assert ident.same_process(100, 1000.05)
    assert ident.same_process(100, 999.95)
    assert not ident.same_process(100, 1000.06)
    assert not ident.same_process(100, 999.9)
    assert not ident.same_process(101, 1000.0)  # PID differs


@pytest.mark.parametrize(
    ("protected_by", "report_only", "killable"),
    [
        (None, False, True),
        ("whitelisted:vim", False, False),
        (None, True, False),
        ("root_owned", True, False),
    ],
)
def test_finding_killable(protected_by: str | None, report_only: bool, killable: bool) -> None:
    assert _finding(protected_by=protected_by, report_only=report_only).killable is killable


def test_kill_outcome_success_set() -> None:
    ok = {o for o in KillOutcome if o.is_success}
    assert ok == {KillOutcome.TERMINATED, KillOutcome.KILLED, KillOutcome.ALREADY_GONE}


# --- HostState / MissionSummary -----------------------------------------------------------


def test_remember_task_keeps_only_the_last_tasks() -> None:
    state = make_state()
    host = state.hosts["h1"]
    for i in range(LAST_TASKS_KEPT + 7):
        host.remember_task(f"t{i}")
    assert len(host.last_tasks) == LAST_TASKS_KEPT
    assert host.last_tasks == tuple(f"t{i}" for i in range(7, LAST_TASKS_KEPT + 7))
    assert host.last_tasks[-1] == f"t{LAST_TASKS_KEPT + 6}"


def test_remember_task_below_the_limit_keeps_everything_in_order() -> None:
    host = make_state().hosts["h1"]
    host.remember_task("a")
    host.remember_task("b")
    assert host.last_tasks == ("a", "b")


def test_successful_kills_count_only_what_our_signals_ended() -> None:
    host = make_state().hosts["h1"]
    host.kills = [
        _kill(1, KillOutcome.TERMINATED),
        _kill(2, KillOutcome.KILLED),
        _kill(3, KillOutcome.DENIED),
        _kill(4, KillOutcome.ALREADY_GONE),
        _kill(5, KillOutcome.TERMINATED).model_copy(update={"dry_run": True}),
    ]
    assert host.successful_kills == 2  # pid 4 exited on its own: not a kill of ours


def test_host_state_from_spec_copies_limits() -> None:
    spec = host_spec("w", OS.WINDOWS, max_failures=7)
    state = make_state(spec).hosts["w"]
    assert (state.os, state.max_failures, state.spec) == (OS.WINDOWS, 7, spec)
    assert state.last_status is HostStatus.UNKNOWN


def test_mission_summary_of_counts_the_state() -> None:
    state = make_state(
        host_spec("a"), host_spec("b"), host_spec("c"), options=MissionOptions(dry_run=True)
    )
    state.status = MissionStatus.COMPLETED
    state.hosts["b"].locked = True
    state.pending_tasks = {
        "p1": PendingTask(task=make_task(task_id="p1")),
        "p2": PendingTask(task=make_task(task_id="p2")),
    }
    state.completed_tasks = {
        "d1": TaskRecord(
            task_id="d1",
            host_id="a",
            action=Action.SCAN,
            attempt=1,
            status=ResultStatus.SUCCESS,
            finished_at=T0,
        )
    }
    state.counters.findings = 5
    state.counters.kills = 4
    state.created_at = T0
    state.finished_at = T0 + timedelta(minutes=1)

    summary = MissionSummary.of(state)
    assert summary == MissionSummary(
        mission_id="m1",
        kind=MissionKind.REAP,
        status=MissionStatus.COMPLETED,
        hosts=3,
        hosts_locked=1,
        pending_tasks=2,
        completed_tasks=1,
        findings=5,
        kills=4,
        dry_run=True,
        created_at=T0,
        finished_at=T0 + timedelta(minutes=1),
    )
    assert MissionSummary.model_validate_json(summary.model_dump_json()) == summary


def test_mission_state_next_wakeup_is_the_earliest_pending() -> None:
    state = make_state()
    assert state.next_wakeup() is None
    waiting = make_task(task_id="w", not_before=T0 + timedelta(seconds=3), timeout=60)
    running = make_task(task_id="r", timeout=30)
    state.pending_tasks = {
        "w": PendingTask(task=waiting),
        "r": PendingTask(task=running, dispatched_at=T0),
    }
    assert state.next_wakeup() == T0 + timedelta(seconds=3)
    assert state.pending_for("h1") == [waiting, running]
    assert state.pending_for("other") == []


def test_mission_state_validates_assignment() -> None:
    state = make_state()
    with pytest.raises(ValidationError):
        state.status = "ok"  # type: ignore[assignment]


# --- infra/codec --------------------------------------------------------------------------


def test_codec_round_trip() -> None:
    task = make_task(Action.VERIFY)
    assert decode(Task, encode(task)) == task
    assert decode(Task, encode(task).encode()) == task
    event = result_for(task, ts=T0)
    assert decode(ResultEvent, encode(event)) == event


@pytest.mark.parametrize("payload", ["", "not json", "{", '{"task_id": ', b"\xff\xfe\x00"])
def test_codec_rejects_garbage(payload: str | bytes) -> None:
    with pytest.raises(MessageDecodeError, match="not a valid Task"):
        decode(Task, payload)


@pytest.mark.parametrize("payload", ["[]", "42", '"task"', '{"task_id": "t1"}', "null"])
def test_codec_rejects_wrong_shape(payload: str) -> None:
    with pytest.raises(MessageDecodeError, match="not a valid Task"):
        decode(Task, payload)


def test_codec_error_names_the_bad_field() -> None:
    doc = json.loads(encode(make_task())) | {"action": "explode"}
    with pytest.raises(MessageDecodeError, match=r"at action"):
        decode(Task, json.dumps(doc))


def test_codec_rejects_a_newer_schema_version() -> None:
    doc = json.loads(encode(make_task())) | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(MessageDecodeError, match="schema_version"):
        decode(Task, json.dumps(doc))
    state_doc = json.loads(encode(make_state())) | {"schema_version": SCHEMA_VERSION + 5}
    with pytest.raises(MessageDecodeError, match="schema_version"):
        decode(MissionState, json.dumps(state_doc))


def test_codec_accepts_current_and_older_schema_versions() -> None:
    doc = json.loads(encode(make_task())) | {"schema_version": SCHEMA_VERSION}
    assert decode(Task, json.dumps(doc)).schema_version == SCHEMA_VERSION
    if SCHEMA_VERSION > 1:  # pragma: no cover - only once the schema has moved on
        older = doc | {"schema_version": SCHEMA_VERSION - 1}
        assert decode(Task, json.dumps(older)).schema_version == SCHEMA_VERSION - 1


def test_codec_decodes_models_without_a_schema_version() -> None:
    spec = host_spec("x")
    assert decode(HostSpec, encode(spec)) == spec


def test_every_assignment_to_a_host_field_is_counted():
    host = HostState.from_spec(host_spec("h1"))
    assert host.changes == 0
    for count, (name, value) in enumerate(
        [
            ("failure_count", 1),
            ("facts", {"hostname": "a"}),
            ("last_tasks", ("t1",)),
            ("outcome_detail", "x"),
        ],
        start=1,
    ):
        setattr(host, name, value)
        assert host.changes == count, name
    host.remember_task("t2")
    assert host.changes == 5


def test_the_change_count_is_not_part_of_a_hosts_value():
    host = HostState.from_spec(host_spec("h1"))
    twin = host.model_copy(deep=True)
    twin.failure_count = 0  # counted, but the same value
    assert twin.changes == 1
    assert host == twin
    twin.failure_count = 1
    assert host != twin


def test_host_sequences_are_tuples_so_they_cannot_change_in_place():
    host = HostState.from_spec(host_spec("h1"))
    host.last_tasks = ["t1"]  # type: ignore[assignment]  # what a JSON list becomes
    assert host.last_tasks == ("t1",)
    assert isinstance(host.findings, tuple)
    assert isinstance(host.kills, tuple)
    assert isinstance(host.survivors, tuple)
