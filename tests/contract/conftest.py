"""Fixtures of the port contract suite (reaper_engine/ports.py).

Every test in tests/contract runs once per adapter. An adapter joins the suite by adding one
``AdapterFactory`` to ``ADAPTERS`` below: it builds a fresh TaskQueue, EventBus and
MissionStore, and knows how to write a raw (possibly malformed) payload where a foreign
writer could, so that dead-lettering is tested the same way everywhere.

Three families run today: ``memory`` (infra/memory), ``fakeredis`` (the Redis adapters on a
``fakeredis.FakeServer``) and ``redis`` (the same on a real redis-server, marked
``pytest.mark.redis``; the ``redis_server`` fixture starts it).

The Redis families (``fakeredis``, ``redis``) share one server between the three ports of a
test through ``_RedisBackend``, which ``per_test`` opens fresh for every test (a new
FakeServer; FLUSHDB on the session's real redis-server). On RQ the raw text of
``inject_task`` is the argument of a real job, where a foreign writer would put it; see
``_inject_rq_task`` for the one payload shape that is sealed first.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
import redis

from infra.memory import InMemoryEventBus, InMemoryMissionStore, InMemoryTaskQueue
from infra.redis.bus import EVENT_FIELD, RedisStreamEventBus
from infra.redis.connection import connect
from infra.redis.keys import RedisKeys
from infra.redis.queue import JOB_FUNCTION, RqTaskQueue
from infra.redis.store import RedisMissionStore
from reaper_engine.models import AgentType
from reaper_engine.ports import EventBus, MissionStore, TaskQueue
from reaper_engine.signing import TaskSigner
from tests.factories import clock

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
    # Set up (and tear down) what the ports of one test share, e.g. a fresh Redis.
    per_test: Callable[[pytest.FixtureRequest], AbstractContextManager[None]] | None = None


MEMORY = AdapterFactory(
    name="memory",
    task_queue=InMemoryTaskQueue,
    event_bus=InMemoryEventBus,
    mission_store=InMemoryMissionStore,
    inject_task=lambda queue, agent_type, payload: queue.push_raw(agent_type, payload),
    inject_event=lambda bus, mission_id, payload: bus.push_raw(mission_id, payload),
)

# -- Redis -----------------------------------------------------------------------------------

SIGNER = TaskSigner(b"contract-test-secret-0123456789")
PREFIX = "reaper-contract"


class _RedisBackend:
    """The Redis client the three ports of the current test share."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None

    def use(self, client: redis.Redis) -> AbstractContextManager[None]:
        @contextlib.contextmanager
        def session() -> Iterator[None]:
            self.client = client
            try:
                yield
            finally:
                self.client = None
                client.close()

        return session()

    def need(self) -> redis.Redis:
        assert self.client is not None, "no Redis for this test: per_test did not run"
        return self.client

    def task_queue(self) -> TaskQueue:
        # The factories' clock: tasks made by tests.factories are fresh, not long expired.
        return RqTaskQueue(self.need(), SIGNER, clock(), prefix=PREFIX)

    def event_bus(self) -> EventBus:
        return RedisStreamEventBus(self.need(), prefix=PREFIX)

    def mission_store(self) -> MissionStore:
        return RedisMissionStore(self.need(), prefix=PREFIX)

    def inject_event(self, _bus: Any, mission_id: str, payload: str) -> None:
        self.need().xadd(RedisKeys(PREFIX).events(mission_id), {EVENT_FIELD: payload})


def _inject_rq_task(queue: Any, agent_type: AgentType, payload: str) -> None:
    """Enqueue a real RQ job whose one argument is ``payload``, as a foreign writer could.

    On RQ the wire format is a signed envelope, not a bare Task. So a payload that is a task
    *document* (a JSON object with ``schema_version``, e.g. from a newer engine) is sealed
    first, as that engine would seal it, to reach the Task checks behind the envelope; any
    other payload (garbage, wrong shapes) is the job argument exactly as given.
    """
    argument = payload
    with contextlib.suppress(ValueError):
        doc = json.loads(payload)
        if isinstance(doc, dict) and "schema_version" in doc:
            argument = json.dumps({"v": 1, "task": payload, "sig": _seal_text(payload)})
    queue.rq_queue(agent_type).enqueue_call(
        JOB_FUNCTION, args=[argument], job_id=f"raw-{uuid.uuid4().hex}"
    )


def _seal_text(text: str) -> str:
    return "hmac-sha256:" + SIGNER._mac(text)


def _fakeredis_per_test(backend: _RedisBackend) -> Callable[[Any], AbstractContextManager[None]]:
    def per_test(_request: pytest.FixtureRequest) -> AbstractContextManager[None]:
        return backend.use(fakeredis.FakeRedis(server=fakeredis.FakeServer()))

    return per_test


def _redis_per_test(backend: _RedisBackend) -> Callable[[Any], AbstractContextManager[None]]:
    def per_test(request: pytest.FixtureRequest) -> AbstractContextManager[None]:
        server = request.getfixturevalue("redis_server")
        client = connect(server.url)
        client.flushdb()
        return backend.use(client)

    return per_test


def _redis_family(name: str, marks: tuple[pytest.MarkDecorator, ...] = ()) -> AdapterFactory:
    backend = _RedisBackend()
    per_test = _redis_per_test(backend) if name == "redis" else _fakeredis_per_test(backend)
    return AdapterFactory(
        name=name,
        task_queue=backend.task_queue,
        event_bus=backend.event_bus,
        mission_store=backend.mission_store,
        inject_task=_inject_rq_task,
        inject_event=backend.inject_event,
        marks=marks,
        per_test=per_test,
    )


ADAPTERS: list[AdapterFactory] = [
    MEMORY,
    _redis_family("fakeredis"),
    _redis_family("redis", marks=(pytest.mark.redis,)),
]

_PARAMS = [pytest.param(a, id=a.name, marks=a.marks) for a in ADAPTERS]


@pytest.fixture(params=_PARAMS)
def adapter(request: pytest.FixtureRequest) -> Iterator[AdapterFactory]:
    factory: AdapterFactory = request.param
    with factory.per_test(request) if factory.per_test else contextlib.nullcontext():
        yield factory


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

# A released call must return well within this (its own timeout is 10 s).
PROMPT = 2.0


def between_calls(
    call: Callable[[float], Any], between: threading.Event, go: threading.Event
) -> Callable[[], tuple[Any, float]]:
    """A loop's thread around ``call(timeout)`` (a consume or a read): it has called once,
    then, between two calls, lets the test interrupt (``between``), and calls again once
    told to (``go``) with a 10 s timeout. Returns that call's result and how long it took."""

    def run() -> tuple[Any, float]:
        call(0)
        between.set()
        assert go.wait(PROMPT), "the test never let the loop go on"
        began = time.monotonic()
        got = call(10)
        return got, time.monotonic() - began

    return run


class Background:
    """Run ``fn`` on a daemon thread; ``done`` is set when it returns (result in ``value``).

    ``elapsed`` is how long ``fn`` ran; ``finished_at`` the ``time.monotonic()`` it returned
    at, to time a wake-up from the moment its cause happened.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self.finished_at: float | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.started.set()
        began = time.monotonic()
        try:
            self.value = self.fn()
        except BaseException as err:  # noqa: BLE001 - re-raised by result()
            self.error = err
        finally:
            self.finished_at = time.monotonic()
            self.elapsed = self.finished_at - began
            self.done.set()

    def since(self, moment: float) -> float:
        """Seconds from ``moment`` (a ``time.monotonic()``) to the return of ``fn``."""
        assert self.finished_at is not None, "the call has not returned"
        return self.finished_at - moment

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
