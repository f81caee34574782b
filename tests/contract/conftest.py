"""Fixtures of the port contract suite (reaper_engine/ports.py).

Every test in tests/contract runs once per adapter. An adapter joins the suite by adding one
``AdapterFactory`` to ``ADAPTERS`` below: it builds a fresh TaskQueue, EventBus and
MissionStore, and knows how to write a raw (possibly malformed) payload where a foreign
writer could, so that dead-lettering is tested the same way everywhere.

Redis adapters plug in here: add e.g. ``AdapterFactory("fakeredis", ...)`` built on a
``fakeredis.FakeRedis()`` shared by the three ports of one test, whose ``inject_task`` does
an RPUSH/LPUSH of the raw text on the agent type's queue key and whose ``inject_event`` does
an XADD of the raw text on the mission's stream; and a ``redis`` one marked
``pytest.mark.redis`` for a real server. Nothing else in the suite needs to change.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from reaper_engine.models import AgentType
from reaper_engine.ports import EventBus, MissionStore, TaskQueue

InjectTask = Callable[[AgentType, str], None]
InjectEvent = Callable[[str, str], None]


@dataclass(frozen=True)
class AdapterFactory:
    """How to build one adapter family and write raw payloads into it."""

    name: str
    task_queue: Callable[[], TaskQueue]
    event_bus: Callable[[], EventBus]
    mission_store: Callable[[], MissionStore]
    # (port instance, agent type / mission id, raw payload) -> None
    inject_task: Callable[[Any, AgentType, str], None]
    inject_event: Callable[[Any, str, str], None]
    marks: tuple[pytest.MarkDecorator, ...] = ()


MEMORY = AdapterFactory(
    name="memory",
    task_queue=InMemoryTaskQueue,
    event_bus=InMemoryEventBus,
    mission_store=InMemoryMissionStore,
    inject_task=lambda queue, agent_type, payload: queue.push_raw(agent_type, payload),
    inject_event=lambda bus, mission_id, payload: bus.push_raw(mission_id, payload),
)

ADAPTERS: list[AdapterFactory] = [
    MEMORY,
    # Redis adapters plug in here, e.g.:
    # AdapterFactory(name="fakeredis", task_queue=..., event_bus=..., mission_store=...,
    #                inject_task=..., inject_event=...),
    # AdapterFactory(name="redis", ..., marks=(pytest.mark.redis,)),
]

_PARAMS = [pytest.param(a, id=a.name, marks=a.marks) for a in ADAPTERS]


@pytest.fixture(params=_PARAMS)
def adapter(request: pytest.FixtureRequest) -> AdapterFactory:
    return request.param


@pytest.fixture
def task_queue(adapter: AdapterFactory) -> Iterator[TaskQueue]:
    queue = adapter.task_queue()
    yield queue
    queue.interrupt()  # release any consumer thread a failing test left behind


@pytest.fixture
def event_bus(adapter: AdapterFactory) -> Iterator[EventBus]:
    bus = adapter.event_bus()
    yield bus
    bus.interrupt()


@pytest.fixture
def mission_store(adapter: AdapterFactory) -> MissionStore:
    return adapter.mission_store()


@pytest.fixture
def inject_raw_task(adapter: AdapterFactory, task_queue: TaskQueue) -> InjectTask:
    """``inject_raw_task(agent_type, payload)``: queue raw text as a foreign writer could."""
    return lambda agent_type, payload: adapter.inject_task(task_queue, agent_type, payload)


@pytest.fixture
def inject_raw_event(adapter: AdapterFactory, event_bus: EventBus) -> InjectEvent:
    """``inject_raw_event(mission_id, payload)``: append raw text to a mission's stream."""
    return lambda mission_id, payload: adapter.inject_event(event_bus, mission_id, payload)


# -- helpers shared by the contract tests ---------------------------------------------------


class Background:
    """Run ``fn`` on a daemon thread; ``done`` is set when it returns (result in ``value``)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.started.set()
        began = time.monotonic()
        try:
            self.value = self.fn()
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self.error = err
        finally:
            self.elapsed = time.monotonic() - began
            self.done.set()

    def start(self) -> Background:
        self.thread.start()
        assert self.started.wait(5), "background thread did not start"
        return self

    def result(self, deadline: float) -> Any:
        assert self.done.wait(deadline), f"background call still blocked after {deadline}s"
        self.thread.join(deadline)
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def background() -> Iterator[Callable[[Callable[[], Any]], Background]]:
    """``background(fn)`` starts ``fn`` on a thread; threads are joined briefly at teardown."""
    started: list[Background] = []

    def start(fn: Callable[[], Any]) -> Background:
        bg = Background(fn).start()
        started.append(bg)
        return bg

    yield start
    for bg in started:
        bg.thread.join(1)
