"""A worker's result is published however long the bus is away, unless the agent is stopped."""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from agents.os_agents import LinuxAgent
from agents.simulation import SimulatedLab
from agents.transports.router import TransportRouter
from infra.memory import InMemoryEventBus, InMemoryTaskQueue
from reaper_engine.models import Action, ResultStatus, TransportKind
from tests.factories import clock, make_task


class FlakyBus(InMemoryEventBus):
    """Fails its first ``failures`` publishes, as a bus whose Redis is restarting would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def publish(self, event):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("Redis is restarting")
        super().publish(event)


class NoWaitStop(threading.Event):
    """A stop event whose waits return at once (recording how long they were asked to be),
    so the test needs no real backoff; ``stop_after`` waits, it reports a stop."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self.stop_after is not None and len(self.waits) >= self.stop_after


def agent_on(bus: InMemoryEventBus) -> LinuxAgent:
    the_clock = clock()
    lab = SimulatedLab(clock=the_clock)
    return LinuxAgent(
        InMemoryTaskQueue(), bus, TransportRouter({TransportKind.SIMULATED: lab}), clock=the_clock
    )


def published(bus: InMemoryEventBus) -> list[str]:
    return [d.event.task_id for d in bus.read("m1", timeout=0)]


def test_a_result_is_published_after_many_failures_with_a_capped_backoff():
    bus = FlakyBus(failures=12)  # the old limit was 3 tries (about 16 s on Redis)
    agent = agent_on(bus)
    stop = NoWaitStop()
    with capture_logs() as logs:
        result = agent.run_one(make_task(Action.SCAN), stop)
    assert result.status is ResultStatus.SUCCESS
    assert published(bus) == ["t1"]
    assert bus.calls == 13
    assert len(stop.waits) == 12
    assert stop.waits[:3] == [0.1, 0.2, 0.4]  # backing off ...
    assert max(stop.waits) == stop.waits[-1] == 5.0  # ... up to a few seconds, no more
    events = [e["event"] for e in logs]
    assert events.count("result_publish_failed") == 12
    assert "result_lost" not in events
    assert agent.handled == 1


def test_a_stopped_agent_gives_up_and_says_the_result_is_lost():
    bus = FlakyBus(failures=1000)
    agent = agent_on(bus)
    with capture_logs() as logs:
        agent.publish(agent.handle(make_task(Action.SCAN)), NoWaitStop(stop_after=4))
    assert published(bus) == []
    assert bus.calls == 4
    lost = [e for e in logs if e["event"] == "result_lost"]
    assert [(e["task_id"], e["attempts"]) for e in lost] == [("t1", 4)]


def test_an_event_the_bus_refuses_outright_is_not_retried():
    class RefusingBus(InMemoryEventBus):
        calls = 0

        def publish(self, event):
            self.calls += 1
            raise ValueError("mission id 'dead' is reserved")

    bus = RefusingBus()
    agent = agent_on(bus)
    with capture_logs() as logs:
        agent.publish(agent.handle(make_task(Action.SCAN)), NoWaitStop())
    assert bus.calls == 1
    assert "result_lost" in [e["event"] for e in logs]


def test_before_publish_runs_between_the_work_and_the_publish():
    order: list[str] = []

    class RecordingBus(InMemoryEventBus):
        def publish(self, event):
            order.append("publish")
            super().publish(event)

    agent = agent_on(RecordingBus())
    agent.run_one(make_task(Action.SCAN), before_publish=lambda: order.append("disarm"))
    assert order == ["disarm", "publish"]
