"""The reap path end to end over a fake host: what may and may not receive a signal."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.os_agents import LinuxAgent
from agents.transports.base import SignalDelivery
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.errors import HostUnreachableError
from reaper_engine.models import (
    Action,
    KillOutcome,
    Priority,
    ProcessIdentity,
    ProcessInfo,
    ProcessState,
    ReapData,
    ReapParams,
    ResultStatus,
)
from reaper_engine.rules import Rule, RuleAction, RuleConditions
from reaper_engine.safety import SafetyPolicy, SafetySettings
from reaper_engine.signals import Signal
from tests.factories import clock, host_spec, make_task, proc
from tests.fakes import ME, FakeTransport, ListSink, Opens


def everything(scope: str = "process") -> Rule:
    return Rule(
        name="everything",
        priority=Priority.CRITICAL,
        conditions=RuleConditions(age_seconds=0),
        action=RuleAction(signal=Signal.SIGTERM, scope=scope),
    )


def reap(
    transport: FakeTransport,
    approved: list[ProcessInfo],
    *,
    scope: str = "process",
    max_kills: int | None = None,
    sink: ListSink | None = None,
):
    c = clock()
    agent = LinuxAgent(
        InMemoryTaskQueue(),
        InMemoryEventBus(),
        Opens(transport),
        rules=(everything(scope),),
        clock=c,
        audit=sink or ListSink(),
    )
    params = ReapParams(
        approved=tuple(
            ProcessIdentity(host_id="fake1", pid=p.pid, create_time=p.create_time) for p in approved
        ),
        max_kills=max_kills,
    )
    task = make_task(
        Action.REAP, host=host_spec("fake1"), now=c.now(), params=params.model_dump(mode="json")
    )
    return agent.handle(task)


class Exploding(FakeTransport):
    """The connection drops at the second signal."""

    def send_signal(self, pid: int, create_time: float, signal: Signal) -> SignalDelivery:
        if len(self.sent) >= 1:
            raise HostUnreachableError("connection reset")
        return super().send_signal(pid, create_time, signal)


def test_an_error_mid_reap_keeps_the_kills_already_made_and_audits_every_one():
    transport = Exploding()
    first, second = transport.add(proc(5000)), transport.add(proc(5001))
    sink = ListSink()
    result = reap(transport, [first, second], sink=sink)
    assert result.status is ResultStatus.PARTIAL
    kills = ReapData.model_validate(result.data).kills
    assert [(k.identity.pid, k.outcome) for k in kills] == [
        (5000, KillOutcome.TERMINATED),
        (5001, KillOutcome.FAILED),
    ]
    assert "connection reset" in kills[1].detail
    assert [r.pid for r in sink.records] == [5000, 5001]


def test_the_budget_caps_processes_signalled_across_approvals():
    transport = FakeTransport()
    procs = [transport.add(proc(5000 + i)) for i in range(5)]
    result = reap(transport, procs, max_kills=2)
    assert len(transport.sent) == 2
    kills = ReapData.model_validate(result.data).kills
    assert sum(1 for k in kills if k.outcome.uses_budget) == 2


def test_bad_params_are_refused_with_a_code():
    c = clock()
    agent = LinuxAgent(
        InMemoryTaskQueue(),
        InMemoryEventBus(),
        Opens(FakeTransport()),
        clock=c,
    )
    task = make_task(
        Action.REAP, host=host_spec("fake1"), now=c.now(), params={"approved": "everything"}
    )
    result = agent.handle(task)
    assert (result.status, result.error_code) == (ResultStatus.ERROR, "BAD_PARAMS")


# -- the property ----------------------------------------------------------------------------

NAMES = ["test_loop", "vim", "code", "worker", "sshd", "node"]
USERS = [("noah", 1000), ("alice", 1001), ("root", 0)]


@st.composite
def tables(draw: st.DrawFn) -> list[ProcessInfo]:
    n = draw(st.integers(2, 12))
    pids = draw(st.lists(st.integers(1, 9000), min_size=n, max_size=n, unique=True))
    out = []
    for i, pid in enumerate(pids):
        parent = draw(st.sampled_from([1, *pids[:i]])) if i else 1
        user, uid = draw(st.sampled_from(USERS))
        name = draw(st.sampled_from(NAMES))
        out.append(
            proc(
                pid,
                ppid=parent,
                pgid=draw(st.sampled_from([pids[0], pid])),
                user=user,
                uid=uid,
                cmd=f"/usr/bin/{name} --x",
                name=name,
                status=draw(st.sampled_from([ProcessState.SLEEPING, ProcessState.ZOMBIE])),
                is_kernel_thread=draw(st.booleans()) and draw(st.booleans()),
            )
        )
    return out


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(table=tables(), data=st.data())
def test_no_protected_process_or_anything_below_one_is_ever_signalled(table, data):
    transport = FakeTransport()
    for p in table:
        transport.add(p)
    scope = data.draw(st.sampled_from(["process", "group", "tree"]))
    approved = data.draw(st.lists(st.sampled_from(table), max_size=len(table), unique=True))
    policy = SafetyPolicy(SafetySettings(), ME)
    protected = {p.pid for p in table if policy.protection_for(p) is not None}
    by_pid = {p.pid: p for p in table}

    result = reap(transport, approved, scope=scope)
    assert result.status is not ResultStatus.ERROR, result.summary

    sent = {pid for pid, _ in transport.sent}
    assert not sent & protected
    approved_pids = {p.pid for p in approved}
    for pid in sent:
        if scope == "tree" and pid not in approved_pids:
            # Walk up to an approved leader: no protected process on the way.
            node = by_pid[pid].ppid
            while node not in approved_pids:
                assert node not in protected
                node = by_pid[node].ppid
        elif scope == "process":
            assert pid in approved_pids
