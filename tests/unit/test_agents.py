"""BaseAgent (through the OS agents) against the simulated lab: handlers, refusals, the loop."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest

from agents.base import BaseAgent
from agents.os_agents import AGENTS, LinuxAgent, MacAgent, WindowsAgent
from agents.pool import AgentPool
from agents.simulation import SimulatedLab
from agents.transports.base import Transport
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.audit import AuditRecord
from reaper_engine.clock import ManualClock
from reaper_engine.errors import ConfigError
from reaper_engine.models import (
    OS,
    Action,
    AgentType,
    DiscoverData,
    HostSpec,
    KillOutcome,
    ProcessIdentity,
    ReapData,
    ReapParams,
    ResultEvent,
    ResultStatus,
    ScanData,
    Task,
    TransportKind,
    VerifyData,
    VerifyParams,
)
from tests.factories import T0, clock, host_spec, make_task

# The linux-incident table: the eight rogue processes, and the three that match a rule but
# are protected (whitelisted desktop shell, root-owned, another user's).
ROGUE = {2174710, 2215386, 2256525, 4179152, 627250, 686678, 1393626, 10252}
PROTECTED = {1543: "whitelisted:gnome-shell", 3500: "root_owned", 3600: "other_user"}
IGNORES_SIGTERM = 686678


class ListSink:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, entry: AuditRecord) -> None:
        self.records.append(entry)


@pytest.fixture
def clk() -> ManualClock:
    return clock()


@pytest.fixture
def lab(clk: ManualClock) -> SimulatedLab:
    return SimulatedLab(clk)


@pytest.fixture
def queue() -> InMemoryTaskQueue:
    return InMemoryTaskQueue()


@pytest.fixture
def bus() -> InMemoryEventBus:
    return InMemoryEventBus()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def agent(queue, bus, lab, clk, sink) -> LinuxAgent:
    return LinuxAgent(queue, bus, lab, clock=clk, audit=sink)


@pytest.fixture
def spec() -> HostSpec:
    return host_spec("dev1")


def task(action: Action, spec: HostSpec, task_id: str = "t1", **kw) -> Task:
    return make_task(action, host=spec, task_id=task_id, **kw)


def scan(agent: BaseAgent, spec: HostSpec) -> ScanData:
    result = agent.handle(task(Action.SCAN, spec, "scan"))
    assert result.status is ResultStatus.SUCCESS, result.summary
    return ScanData.model_validate(result.data)


def reap_task(spec: HostSpec, approved, task_id: str = "reap", **kw) -> Task:
    params = ReapParams(approved=tuple(approved)).model_dump(mode="json")
    return task(Action.REAP, spec, task_id, params=params, **kw)


def pids_alive(lab: SimulatedLab, spec: HostSpec) -> set[int]:
    return {p.pid for p in lab.host(spec).processes()}


def killable(data: ScanData) -> list[ProcessIdentity]:
    return [f.identity for f in data.findings if f.killable]


# -- happy paths ------------------------------------------------------------------------------


def test_discover_reports_host_facts(agent, spec):
    result = agent.handle(task(Action.DISCOVER, spec))

    assert result.status is ResultStatus.SUCCESS
    facts = DiscoverData.model_validate(result.data)
    assert facts.hostname == "dev-machine"
    assert facts.os == "linux"
    assert facts.cpu_count == 16
    assert facts.process_count == 20
    assert facts.agent_user == "noah"
    assert "dev-machine" in result.summary


def test_result_is_addressed_to_the_task_and_stamped_by_the_clock(agent, spec, clk):
    clk.advance(5)
    t = task(Action.DISCOVER, spec, "t7", mission_id="mX", attempt=3)
    result = agent.handle(t)
    assert (result.task_id, result.mission_id, result.host_id) == ("t7", "mX", "dev1")
    assert result.agent_type is AgentType.LINUX
    assert result.action is Action.DISCOVER
    assert result.attempt == 3
    assert result.ts == T0 + timedelta(seconds=5)


def test_scan_finds_the_rogue_and_marks_the_protected(agent, spec, lab):
    data = scan(agent, spec)

    assert data.processes_scanned == 20
    assert {f.identity.pid for f in data.findings if f.killable} == ROGUE
    protected = {f.identity.pid: f.protected_by for f in data.findings if not f.killable}
    assert protected == PROTECTED
    assert all(f.identity.host_id == "dev1" for f in data.findings)
    assert lab.host(spec).signals_received == []  # a scan is read-only
    assert len(lab.host(spec).processes()) == 20


def test_scan_findings_name_their_rules(agent, spec):
    rules = {f.identity.pid: f.rule for f in scan(agent, spec).findings}
    assert rules[2174710] == "infinite_loop"
    assert rules[4179152] == "infinite_loop"
    assert rules[627250] == "hung_test"
    assert rules[IGNORES_SIGTERM] == "hung_test"


def test_reap_kills_the_approved_findings(agent, spec, lab, sink):
    approved = killable(scan(agent, spec))

    result = agent.handle(reap_task(spec, approved))

    assert result.status is ResultStatus.SUCCESS, result.summary
    data = ReapData.model_validate(result.data)
    assert data.not_matching == ()
    outcomes = {k.identity.pid: k.outcome for k in data.kills}
    assert set(outcomes) == ROGUE
    assert all(o.is_success for o in outcomes.values())
    assert outcomes[IGNORES_SIGTERM] is KillOutcome.KILLED
    by_pid = {k.identity.pid: k for k in data.kills}
    assert by_pid[IGNORES_SIGTERM].signals == ("SIGTERM", "SIGKILL")
    assert by_pid[2174710].outcome is KillOutcome.TERMINATED
    assert by_pid[2174710].signals == ("SIGKILL",)  # infinite_loop sends SIGKILL directly
    assert by_pid[627250].signals == ("SIGTERM",)
    assert all(not k.dry_run for k in data.kills)

    alive = pids_alive(lab, spec)
    assert alive.isdisjoint(ROGUE)
    assert set(PROTECTED) <= alive
    assert len(alive) == 20 - len(ROGUE)
    assert {r.pid for r in sink.records} == ROGUE
    assert all(r.action == "kill" and r.task_id == "reap" for r in sink.records)


def test_verify_after_reap_reports_them_gone(agent, spec):
    approved = killable(scan(agent, spec))
    agent.handle(reap_task(spec, approved))

    params = VerifyParams(expected_gone=tuple(approved)).model_dump(mode="json")
    result = agent.handle(task(Action.VERIFY, spec, "verify", params=params))

    assert result.status is ResultStatus.SUCCESS
    data = VerifyData.model_validate(result.data)
    assert data.still_alive == ()
    assert data.processes_scanned == 20 - len(ROGUE)
    assert {f.identity.pid for f in data.findings} == set(PROTECTED)
    assert result.summary.startswith(f"{len(ROGUE)}/{len(ROGUE)} gone")


def test_verify_before_reap_reports_survivors(agent, spec):
    approved = killable(scan(agent, spec))
    params = VerifyParams(expected_gone=tuple(approved)).model_dump(mode="json")

    result = agent.handle(task(Action.VERIFY, spec, "verify", params=params))

    assert result.status is ResultStatus.PARTIAL
    data = VerifyData.model_validate(result.data)
    assert {i.pid for i in data.still_alive} == ROGUE


def test_verify_does_not_confuse_a_reused_pid_with_the_original(agent, spec):
    [finding] = [f for f in scan(agent, spec).findings if f.identity.pid == 627250]
    ghost = finding.identity.model_copy(update={"create_time": finding.identity.create_time - 50})
    params = VerifyParams(expected_gone=(ghost,)).model_dump(mode="json")

    result = agent.handle(task(Action.VERIFY, spec, "verify", params=params))

    assert result.status is ResultStatus.SUCCESS
    assert VerifyData.model_validate(result.data).still_alive == ()


# -- reap only what is approved and still matches --------------------------------------------------


def test_reap_touches_only_approved_identities(agent, spec, lab):
    identities = {i.pid: i for i in killable(scan(agent, spec))}
    chosen = [identities[2174710], identities[10252]]

    result = agent.handle(reap_task(spec, chosen))

    data = ReapData.model_validate(result.data)
    assert {k.identity.pid for k in data.kills} == {2174710, 10252}
    alive = pids_alive(lab, spec)
    assert alive.isdisjoint({2174710, 10252})
    assert ROGUE - {2174710, 10252} <= alive
    assert {pid for pid, _ in lab.host(spec).signals_received} == {2174710, 10252}


def test_reap_reports_approved_identities_that_no_longer_match(agent, spec, lab):
    identities = {i.pid: i for i in killable(scan(agent, spec))}
    real = identities[2215386]
    reused = identities[627250].model_copy(
        update={"create_time": identities[627250].create_time + 100}
    )
    unknown = ProcessIdentity(host_id="dev1", pid=999999, create_time=1.0)
    shell = ProcessIdentity(host_id="dev1", pid=2210, create_time=T0.timestamp() - 180000)

    result = agent.handle(reap_task(spec, [reused, real, unknown, shell]))

    data = ReapData.model_validate(result.data)
    assert [k.identity.pid for k in data.kills] == [2215386]
    assert set(data.not_matching) == {reused, unknown, shell}
    assert result.status is ResultStatus.SUCCESS
    assert "no_longer_matching" in result.summary
    alive = pids_alive(lab, spec)
    assert {627250, 2210} <= alive  # neither the mismatched start time nor the shell was hit
    assert lab.host(spec).signals_received == [(2215386, "SIGKILL")]


def test_reap_of_an_already_reaped_process_reports_it_not_matching(agent, spec, lab):
    approved = killable(scan(agent, spec))
    agent.handle(reap_task(spec, approved))
    signals_before = list(lab.host(spec).signals_received)

    result = agent.handle(reap_task(spec, approved, task_id="reap2"))

    data = ReapData.model_validate(result.data)
    assert data.kills == ()
    assert set(data.not_matching) == set(approved)
    assert lab.host(spec).signals_received == signals_before


def test_reap_of_an_approved_but_protected_finding_does_not_signal(agent, spec, lab, sink):
    protected = [f.identity for f in scan(agent, spec).findings if not f.killable]

    result = agent.handle(reap_task(spec, protected))

    data = ReapData.model_validate(result.data)
    assert {k.identity.pid: k.outcome for k in data.kills} == dict.fromkeys(
        PROTECTED, KillOutcome.PROTECTED
    )
    assert all(k.signals == () for k in data.kills)
    assert lab.host(spec).signals_received == []
    assert set(PROTECTED) <= pids_alive(lab, spec)
    assert {r.action for r in sink.records} == {"refuse"}


def test_dry_run_reap_signals_nothing(agent, spec, lab, sink):
    approved = killable(scan(agent, spec))

    result = agent.handle(reap_task(spec, approved, dry_run=True))

    data = ReapData.model_validate(result.data)
    assert len(data.kills) == len(ROGUE)
    assert all(k.outcome is KillOutcome.DRY_RUN for k in data.kills)
    assert all(k.dry_run and k.signals == () for k in data.kills)
    assert lab.host(spec).signals_received == []
    assert len(lab.host(spec).processes()) == 20
    assert [r.action for r in sink.records] == ["dry_run"] * len(ROGUE)


def test_reap_stops_when_the_deadline_passes_mid_way(queue, bus, lab, spec):
    class JumpsAfterFirstSignal:
        """T0 until the lab has received a signal, then an hour later."""

        def now(self) -> datetime:
            host = lab.host(spec)
            return T0 + timedelta(hours=1) if host.signals_received else T0

    agent = LinuxAgent(queue, bus, lab, clock=JumpsAfterFirstSignal())
    approved = killable(scan(agent, spec))

    result = agent.handle(reap_task(spec, approved))

    assert result.status is ResultStatus.PARTIAL
    data = ReapData.model_validate(result.data)
    assert len(data.kills) == 1
    assert len(lab.host(spec).signals_received) == 1
    assert len(ROGUE - pids_alive(lab, spec)) == 1


# -- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("action", list(Action))
def test_task_past_its_deadline_is_refused_and_nothing_runs(agent, spec, lab, clk, sink, action):
    approved = killable(scan(agent, spec))
    before = lab.host(spec).processes()
    params = (
        ReapParams(approved=tuple(approved)).model_dump(mode="json")
        if action is Action.REAP
        else {}
    )
    stale = task(action, spec, "late", params=params, timeout=60)
    clk.advance(61)

    result = agent.handle(stale)

    assert result.status is ResultStatus.ERROR
    assert result.error_code == "DEADLINE_EXCEEDED"
    assert result.retriable is True
    assert result.data == {}
    assert lab.host(spec).processes() == before
    assert lab.host(spec).signals_received == []
    assert sink.records == []


def test_deadline_equal_to_now_counts_as_passed(agent, spec, clk):
    stale = task(Action.SCAN, spec, timeout=30)
    clk.advance(30)
    assert agent.handle(stale).error_code == "DEADLINE_EXCEEDED"


def test_expired_task_never_opens_a_transport(queue, bus, clk, spec):
    class Exploding:
        opened = 0

        def open(self, spec: HostSpec) -> Transport:
            Exploding.opened += 1
            raise AssertionError("a refused task must not reach the host")

    agent = LinuxAgent(queue, bus, Exploding(), clock=clk)
    stale = task(Action.DISCOVER, spec)
    clk.advance(3600)
    assert agent.handle(stale).error_code == "DEADLINE_EXCEEDED"
    assert Exploding.opened == 0


def test_task_for_another_agent_type_is_refused(agent):
    win = host_spec("win1", OS.WINDOWS, user="LAB\\builder")

    result = agent.handle(task(Action.SCAN, win))

    assert result.status is ResultStatus.ERROR
    assert result.error_code == "WRONG_AGENT"
    assert result.retriable is False


def test_task_whose_target_os_does_not_match_is_refused(agent):
    win = host_spec("win1", OS.WINDOWS)
    mislabelled = task(Action.SCAN, win).model_copy(update={"agent_type": AgentType.LINUX})

    result = agent.handle(mislabelled)

    assert result.error_code == "WRONG_AGENT"
    assert result.status is ResultStatus.ERROR


def test_unknown_transport_kind_is_unsupported(queue, bus, lab, clk):
    agent = LinuxAgent(queue, bus, TransportRouter({TransportKind.SIMULATED: lab}), clock=clk)
    remote = host_spec("r1", transport=TransportKind.SSH, address="10.0.0.5")

    result = agent.handle(task(Action.SCAN, remote))

    assert result.status is ResultStatus.ERROR
    assert result.error_code == "UNSUPPORTED_TRANSPORT"
    assert "ssh" in result.summary


def test_router_dispatches_simulated_hosts(queue, bus, lab, clk, spec):
    agent = LinuxAgent(queue, bus, TransportRouter({TransportKind.SIMULATED: lab}), clock=clk)
    assert agent.handle(task(Action.DISCOVER, spec)).status is ResultStatus.SUCCESS


@pytest.mark.parametrize("action", [Action.DISCOVER, Action.SCAN, Action.VERIFY])
def test_unreachable_host_is_a_retriable_error(agent, action):
    down = host_spec("down1", options={"fail": "unreachable"})

    result = agent.handle(task(action, down))

    assert result.status is ResultStatus.ERROR
    assert result.error_code == "HOST_UNREACHABLE"
    assert result.retriable is True


def test_unreachable_host_on_reap_signals_nothing(agent, lab):
    down = host_spec("down1", options={"fail": "unreachable"})
    approved = [ProcessIdentity(host_id="down1", pid=2174710, create_time=1.0)]

    result = agent.handle(reap_task(down, approved))

    assert result.error_code == "HOST_UNREACHABLE"
    assert lab.host(down).signals_received == []


def test_flaky_host_fails_once_then_works(agent):
    flaky = host_spec("flaky1", options={"fail": "flaky:1"})

    first = agent.handle(task(Action.SCAN, flaky, "a1"))
    second = agent.handle(task(Action.SCAN, flaky, "a2", attempt=2))

    assert first.status is ResultStatus.ERROR
    assert first.error_code == "HOST_UNREACHABLE"
    assert first.retriable is True
    assert second.status is ResultStatus.SUCCESS
    assert len(ScanData.model_validate(second.data).findings) == len(ROGUE) + len(PROTECTED)


def test_a_slow_host_takes_its_latency_on_each_call(agent):
    slow = host_spec("slow1", options={"latency_seconds": 0.05})
    began = time.monotonic()
    result = agent.handle(task(Action.SCAN, slow, "s1"))
    assert result.status is ResultStatus.SUCCESS
    assert time.monotonic() - began >= 0.05


@pytest.mark.parametrize("latency", [-1, 61, "2", True])
def test_a_bad_latency_is_a_config_error_naming_the_option(lab, latency):
    with pytest.raises(ConfigError, match="latency_seconds"):
        lab.host(host_spec("slow2", options={"latency_seconds": latency}))


class CrashingScan(LinuxAgent):
    def scan(self, task: Task, transport: Transport) -> ResultEvent:
        raise RuntimeError("kaboom")


def test_handler_raising_a_plain_exception_is_an_internal_error(queue, bus, lab, clk, spec):
    agent = CrashingScan(queue, bus, lab, clock=clk)

    result = agent.handle(task(Action.SCAN, spec))

    assert result.status is ResultStatus.ERROR
    assert result.error_code == "INTERNAL_ERROR"
    assert result.retriable is False
    assert "RuntimeError" in result.summary
    assert "kaboom" in result.summary


# -- the loop -------------------------------------------------------------------------------


def read_results(bus: InMemoryEventBus, mission_id: str, n: int, deadline: float = 5.0):
    """Read ``n`` results of a mission, waiting at most ``deadline`` seconds in all."""
    got: list[ResultEvent] = []
    end = time.monotonic() + deadline
    while len(got) < n and (remaining := end - time.monotonic()) > 0:
        deliveries = bus.read(mission_id, timeout=remaining)
        got.extend(d.event for d in deliveries)
        bus.ack(mission_id, [d.delivery_id for d in deliveries])
    assert len(got) == n, f"expected {n} results within {deadline}s, got {len(got)}"
    return got


def stop_loop(
    stop: threading.Event, queue: InMemoryTaskQueue, thread: threading.Thread, deadline: float = 60
) -> None:
    """Stop a run() loop as AgentPool does (set ``stop``, interrupt once); fail if it has not
    ended within ``deadline`` s.

    One interrupt must do, wherever the loop is: the interrupt is sticky, so a loop between
    consumes does not block in its next one. The deadline is generous (a slow machine must
    not fail the test); tests that check promptness give the loop a consume timeout far
    longer than it, so ending at all proves the single interrupt worked.
    """
    stop.set()
    queue.interrupt()
    thread.join(deadline)
    assert not thread.is_alive(), "the loop did not stop on stop + one interrupt"


def test_run_loop_survives_a_crashing_handler_and_handles_the_next_task(queue, bus, lab, clk, spec):
    agent = CrashingScan(queue, bus, lab, clock=clk)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), kwargs={"wait": 10}, daemon=True)
    thread.start()
    try:
        queue.publish(task(Action.SCAN, spec, "crash"))
        queue.publish(task(Action.DISCOVER, spec, "next"))

        first, second = read_results(bus, "m1", 2)

        assert (first.task_id, first.error_code) == ("crash", "INTERNAL_ERROR")
        assert (second.task_id, second.status) == ("next", ResultStatus.SUCCESS)
        assert thread.is_alive()
    finally:
        stop_loop(stop, queue, thread)
    assert agent.handled == 2


def test_run_loop_publishes_refusals_too(queue, bus, agent, spec, clk):
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), kwargs={"wait": 10}, daemon=True)
    thread.start()
    try:
        queue.publish(task(Action.SCAN, spec, "late", timeout=1, now=T0 - timedelta(hours=1)))
        queue.publish(task(Action.SCAN, spec, "ok"))
        late, ok = read_results(bus, "m1", 2)
        assert late.error_code == "DEADLINE_EXCEEDED"
        assert ok.status is ResultStatus.SUCCESS
    finally:
        stop_loop(stop, queue, thread)


def test_stop_and_interrupt_end_an_idle_loop_promptly(queue, agent):
    stop = threading.Event()
    # An hour-long consume timeout: a loop that ends within stop_loop's deadline was interrupted.
    thread = threading.Thread(target=agent.run, args=(stop,), kwargs={"wait": 3600}, daemon=True)
    thread.start()
    stop_loop(stop, queue, thread)
    assert agent.handled == 0


# -- registry and pool ------------------------------------------------------------------------


def test_registry_maps_each_agent_type_to_its_class():
    expected = {
        AgentType.LINUX: LinuxAgent,
        AgentType.MACOS: MacAgent,
        AgentType.WINDOWS: WindowsAgent,
    }
    assert dict(AGENTS) == expected
    for agent_type, cls in AGENTS.items():
        assert cls.agent_type is agent_type
        assert issubclass(cls, BaseAgent)


@pytest.mark.parametrize(
    ("os", "user", "hostname"),
    [
        (OS.LINUX, "noah", "dev-machine"),
        (OS.MACOS, "dana", "mbp-lab-07"),
        (OS.WINDOWS, "LAB\\builder", "WIN-BUILD-01"),
    ],
)
def test_each_os_agent_scans_its_default_table(queue, bus, lab, clk, os, user, hostname):
    agent = AGENTS[os.agent_type](queue, bus, lab, clock=clk)
    target = host_spec(f"{os.value}-1", os, user=user)

    discovered = agent.handle(task(Action.DISCOVER, target, "d"))
    scanned = agent.handle(task(Action.SCAN, target, "s"))

    assert DiscoverData.model_validate(discovered.data).hostname == hostname
    assert scanned.status is ResultStatus.SUCCESS
    assert any(f.killable for f in ScanData.model_validate(scanned.data).findings)
    # and another OS's agent refuses the same host
    other = next(cls for t, cls in AGENTS.items() if t is not os.agent_type)
    refused = other(queue, bus, lab, clock=clk).handle(task(Action.SCAN, target, "x"))
    assert refused.error_code == "WRONG_AGENT"


class _HourLongConsumeQueue(InMemoryTaskQueue):
    """consume() waits an hour whatever timeout it is given: only interrupt() ends it early."""

    def consume(self, agent_type: AgentType, timeout: float) -> Task | None:
        return super().consume(agent_type, timeout=3600)


def test_pool_start_and_stop_return_promptly(bus, lab, clk, spec):
    queue = _HourLongConsumeQueue()
    agents = [cls(queue, bus, lab, clock=clk) for cls in AGENTS.values()]
    pool = AgentPool(agents, threads_per_agent=2)

    assert pool.start() is pool
    queue.publish(task(Action.DISCOVER, spec, "p1"))
    [result] = read_results(bus, "m1", 1)
    assert result.status is ResultStatus.SUCCESS

    # Every agent thread is blocked in an hour-long consume: ending within a (generous, so
    # never flaky under load) deadline proves stop() interrupted them, no stopwatch needed.
    assert pool.stop(timeout=60) is True
    assert sum(a.handled for a in agents) == 1


class _ConsumeAfterInterruptQueue(InMemoryTaskQueue):
    """Every consume starts only once interrupt() has been called, then waits an hour: the
    interrupt always comes just *before* the consume, between the loop's stop check and it."""

    def __init__(self) -> None:
        super().__init__()
        self.consuming = threading.Event()
        self.interrupted = threading.Event()

    def consume(self, agent_type: AgentType, timeout: float) -> Task | None:
        self.consuming.set()
        assert self.interrupted.wait(60), "never interrupted"
        return super().consume(agent_type, timeout=3600)

    def interrupt(self) -> None:
        super().interrupt()
        self.interrupted.set()


def test_one_interrupt_stops_a_loop_that_was_between_its_stop_check_and_its_consume(bus, lab, clk):
    queue = _ConsumeAfterInterruptQueue()
    agent = LinuxAgent(queue, bus, lab, clock=clk)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    assert queue.consuming.wait(60)  # past its stop check, held before the consume proper

    # Ending at all (the consume waits an hour) proves the one interrupt was not missed.
    stop_loop(stop, queue, thread)
    assert agent.handled == 0


def test_pool_stop_ends_threads_that_start_consuming_only_after_its_interrupt(bus, lab, clk):
    queue = _ConsumeAfterInterruptQueue()
    agents = [cls(queue, bus, lab, clock=clk) for cls in AGENTS.values()]
    pool = AgentPool(agents, threads_per_agent=2).start()
    assert queue.consuming.wait(60)

    assert pool.stop(timeout=60) is True  # every consume began after the one interrupt


def test_pool_stop_with_nothing_started_is_true():
    assert AgentPool([]).start().stop(timeout=1) is True
